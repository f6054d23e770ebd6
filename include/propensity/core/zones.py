"""Zone and dataset names: where every stage's output lives under the zone root, named once.

A dataset is a ``(zone, name)`` pair; a day's partition of it is
``<zone_root>/<zone>/<name>/date=YYYY-MM-DD/part-0.parquet`` (:mod:`propensity.core.storage`).
Pass a dataset as ``*RAW_EVENTS`` to the storage functions, which take zone and name apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from propensity.core.settings import Settings
    from propensity.core.storage import Store


class Dataset(NamedTuple):
    zone: str
    name: str

    def uri(self, store: Store) -> str:
        return store.uri_of(self.zone, self.name)


RAW_EVENTS = Dataset("raw", "events")  # collect: canonical events of one day, as the source sent them
VALIDATED_EVENTS = Dataset("validated", "events")  # validate: the rows that passed, with line_kind
QUARANTINED_EVENTS = Dataset("quarantine", "events")  # validate: bad rows with their reasons
SNAPSHOTS = Dataset("offline", "customer_features")  # features: every active customer as of a date
TRAINING_SETS = Dataset("training_sets", "propensity")  # training: the point-in-time set of a date

# Folders (not day-partitioned datasets) under the zone root.
VALIDATION_REPORTS = ("reports", "validation")  # summary.json per day
DATA_DOCS = ("reports", "data_docs")  # Great Expectations Data Docs
DEMO_REPORTS = ("reports",)
REFERENCE_DIR = "reference"  # drift references: <model>/v<N>/
DRIFT_WINDOW_DIR = "drift/window"  # what one drift check read, staged for the drift venv
ALERTS_DIR = "alerts"
ONLINE_MARKERS = ("online", "markers")  # which snapshot the online store holds (readiness)


def zone_store(settings: Settings) -> Store:
    """The store holding every zone of these settings (a local folder or S3)."""
    from propensity.core.storage import open_store

    return open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
