"""Feast for the current settings profile: definitions from ``feature_repo/``, stores from settings.

The Feast objects are defined once, in ``feature_repo/`` (what ``feast apply`` reads); this
module loads them for a given :class:`Settings` (offline Parquet in the zone root, SQLite or
Redis online store, a file registry), materializes snapshots and answers online lookups.
Materialization runs on the batch engine of :mod:`propensity.features.feast_redis` (Feast's local engine,
with the write into Redis serialized from Arrow; byte for byte what Feast's own write produces).

Training, serving and batch scoring all use :data:`FEATURE_SERVICE` and
:data:`propensity.features.job.MODEL_FEATURES`, in that order, so they can never disagree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from propensity.core.settings import Settings, get_settings, project_home, resolve_path
from propensity.core.timeutil import utc_midnight
from propensity.core.zones import SNAPSHOTS
from propensity.features.feast_compat import write_paths
from propensity.features.spec import ENTITY_KEY, FEATURE_SERVICE, FEATURE_VIEW, MODEL_FEATURES

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

log = logging.getLogger(__name__)

REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
# Feast's batch engine: its local engine with the online write into Redis done from Arrow
# (propensity.features.feast_redis; any other online store falls back to Feast's own write). "stock" is
# Feast's local engine unchanged, kept to compare against.
BATCH_ENGINE = "propensity.features.feast_redis.ArrowRedisEngine"
Engine = Literal["fast", "stock"]

_active: ContextVar[Settings | None] = ContextVar("feast_repo_settings", default=None)


def feature_repo_dir() -> Path:
    return project_home() / "feature_repo"


def active_settings() -> Settings:
    """The settings the ``feature_repo/`` modules are being loaded for (the CLI: the environment's)."""
    return _active.get() or get_settings()


@dataclass(frozen=True)
class SourceLocation:
    path: str
    s3_endpoint_override: str | None


def offline_source_location(settings: Settings) -> SourceLocation:
    """Where the offline snapshots live: a folder of ``date=D/part-0.parquet`` partitions."""
    path = "/".join([settings.zone_root.rstrip("/"), *SNAPSHOTS])
    endpoint = settings.s3_endpoint_url if path.startswith("s3://") else None
    return SourceLocation(path, endpoint)


def repo_config(settings: Settings, *, engine: Engine = "fast", serving: bool = False) -> RepoConfig:
    """Feast's configuration for this profile (what ``feature_store.yaml`` holds for the CLI).

    ``serving=True``: the online store's client gives up within ``serving.feature_timeout_s`` and
    never retries (redis-py's default retries three times with seconds of backoff: a down store
    would hold every request far past the SLA). Materialization keeps the plain connection."""
    from feast import RepoConfig

    return RepoConfig(**_config_dict(settings, engine=engine, serving=serving), repo_path=feature_repo_dir())


def serving_connection(connection: str, timeout_s: float) -> str:
    """A Redis connection string with bounded timeouts and no retries, unless it sets its own."""
    given = {part.split("=", 1)[0] for part in connection.split(",") if "=" in part}
    extra = {
        "socket_timeout": f"{timeout_s:g}",
        "socket_connect_timeout": f"{timeout_s:g}",
        "retry": "null",  # redis-py: no retry object and no retry_on_error: fail at once
    }
    return ",".join([connection, *(f"{k}={v}" for k, v in extra.items() if k not in given)])


def _config_dict(settings: Settings, *, engine: Engine = "fast", serving: bool = False) -> dict[str, Any]:
    cfg = settings.features
    online: dict[str, Any]
    if cfg.online_store == "redis":
        connection = cfg.redis_connection
        if serving:
            connection = serving_connection(connection, settings.serving.feature_timeout_s)
        online = {"type": "redis", "connection_string": connection}
    else:
        # Feast's SQLite store, except that a row never overwrites a newer one (as in Redis).
        online = {
            "type": "propensity.features.sqlite_store.NewerOnlySqliteOnlineStore",
            "path": resolve_path(cfg.sqlite_path),
        }
    return {
        "project": cfg.feast_project,
        "provider": "local",
        "registry": {"path": resolve_path(cfg.registry), "cache_ttl_seconds": 60},
        "online_store": online,
        "offline_store": {"type": "file"},
        "batch_engine": {"type": BATCH_ENGINE} if engine == "fast" else "local",
        "entity_key_serialization_version": 3,
    }


def render_yaml(settings: Settings) -> str:
    """``feature_store.yaml`` for this profile, for ``feast -f <file> apply|ui``."""
    import yaml

    return yaml.safe_dump(_config_dict(settings), sort_keys=False)


@contextlib.contextmanager
def _repo_modules(settings: Settings) -> Iterator[dict[str, Any]]:
    """Import the ``feature_repo/`` modules afresh for ``settings``, then forget them.

    The repo uses flat imports (``from entities import customer``), as ``feast apply`` run in
    the folder expects, so the folder is on ``sys.path`` only while loading.
    """
    folder = str(feature_repo_dir())
    token = _active.set(settings)
    saved = {name: sys.modules.pop(name) for name in REPO_MODULES if name in sys.modules}
    sys.path.insert(0, folder)
    try:
        yield {name: importlib.import_module(name) for name in REPO_MODULES}
    finally:
        sys.path.remove(folder)
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        _active.reset(token)


def definitions(settings: Settings) -> list[Any]:
    """The entity, source, feature view and feature service of ``feature_repo/`` for ``settings``."""
    with _repo_modules(settings) as mods:
        objects = [
            mods["entities"].customer,
            mods["data_sources"].customer_features_source,
            mods["feature_views"].customer_features,
            mods["feature_services"].propensity_v1,
        ]
    if objects[-1].name != FEATURE_SERVICE:
        raise RuntimeError(
            f"feature_repo defines service {objects[-1].name!r}, code expects {FEATURE_SERVICE!r}"
        )
    return objects


def feature_store(
    settings: Settings, *, apply: bool = False, engine: Engine = "fast", serving: bool = False
) -> FeatureStore:
    """A FeatureStore for ``settings``; ``apply=True`` registers the definitions first (idempotent).

    ``engine="stock"``: Feast's own materialization, for comparisons.
    """
    from feast import FeatureStore

    if settings.features.online_store == "sqlite":
        os.makedirs(os.path.dirname(resolve_path(settings.features.sqlite_path)), exist_ok=True)
    registry = resolve_path(settings.features.registry)
    if "://" not in registry:
        os.makedirs(os.path.dirname(registry), exist_ok=True)
    if offline_source_location(settings).path.startswith("s3://"):
        from propensity.features.s3_fsspec import register_s3_fsspec

        register_s3_fsspec()  # Feast reads S3 sources through fsspec: pyarrow's S3, no s3fs
    store = FeatureStore(config=repo_config(settings, engine=engine, serving=serving))
    if apply:
        store.apply(definitions(settings))
    return store


def materialize(
    settings: Settings, start: dt.datetime, end: dt.datetime, *, engine: Engine = "fast"
) -> dict[str, Any]:
    """Load the snapshots with ``start <= event_timestamp <= end`` into the online store.

    For the snapshot as of D: ``start = end = D 00:00 UTC``. Re-running writes the same values.
    ``write_path`` in the result says how the rows were written: ``arrow-redis`` (the fast path)
    or ``feast`` (Feast's own conversion and write).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("materialize needs timezone-aware start and end")
    if end < start:
        raise ValueError(f"materialize: end {end} is before start {start}")
    store = feature_store(settings, apply=True, engine=engine)
    store.materialize(start_date=start, end_date=end, feature_views=[FEATURE_VIEW])
    path = write_paths(store).get(FEATURE_VIEW, "feast")
    log.info(
        "materialized %s [%s, %s] into %s (%s write)",
        FEATURE_VIEW,
        start,
        end,
        settings.features.online_store,
        path,
    )
    return {
        "feature_view": FEATURE_VIEW,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "write_path": path,
    }


def materialize_dates(
    settings: Settings, as_of_dates: Sequence[dt.date], *, engine: Engine = "fast"
) -> dict[str, Any]:
    """Materialize the snapshots of these dates (the latest per customer wins online)."""
    dates = sorted(set(as_of_dates))
    if not dates:
        raise ValueError("materialize_dates needs at least one date")
    result = materialize(settings, utc_midnight(dates[0]), utc_midnight(dates[-1]), engine=engine)
    result["marker"] = write_online_marker(settings, dates[-1])
    return result


MARKER_CUSTOMERS = 8  # customers of the snapshot a readiness probe looks up


def write_online_marker(settings: Settings, as_of: dt.date) -> dict[str, Any]:
    """Record which snapshot the online store now holds, and a few of its customers.

    The API's readiness probe looks these customers up: none found means the store lost its
    contents (a Redis restarted empty), which it answers with 503 and this cause instead of a
    404 "unknown customer" for everyone.
    """
    from propensity.core.storage import read_partition
    from propensity.core.zones import ONLINE_MARKERS, SNAPSHOTS, zone_store

    store = zone_store(settings)
    try:
        snapshot = read_partition(store, *SNAPSHOTS, as_of)
    except FileNotFoundError:  # no snapshot for the date: nothing loaded, nothing to probe
        snapshot = None
    # The snapshot's LAST customers: writers go through a snapshot in order, so while an emptied
    # store is being refilled these are still missing and the API keeps answering 503, not 404s
    # for the customers not written yet.
    ids = [] if snapshot is None else snapshot.column(ENTITY_KEY)[-MARKER_CUSTOMERS:].to_pylist()
    marker = {"as_of": as_of.isoformat(), "customers": ids, "online_store": settings.features.online_store}
    store.write_json(marker, *ONLINE_MARKERS, f"{settings.features.feast_project}.json")
    return marker


def read_online_marker(settings: Settings) -> dict[str, Any] | None:
    """The last materialization's marker (None before the first one)."""
    from propensity.core.zones import ONLINE_MARKERS, zone_store

    store = zone_store(settings)
    name = f"{settings.features.feast_project}.json"
    return store.read_json(*ONLINE_MARKERS, name) if store.exists(*ONLINE_MARKERS, name) else None


# -- online lookups -----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerFeatures:
    """A customer's online features: ``values`` by name, ``as_of`` the snapshot's timestamp."""

    customer_id: str
    values: dict[str, Any]
    as_of: dt.datetime | None

    def vector(self) -> list[float]:
        """The model input in :data:`MODEL_FEATURES` order; a missing value is NaN."""
        return [math.nan if self.values.get(n) is None else float(self.values[n]) for n in MODEL_FEATURES]


@dataclass(frozen=True)
class NoFeatures:
    """The online store has nothing for this customer (unknown, or never active)."""

    customer_id: str
    reason: str = "no features in the online store"


def online_features(
    settings: Settings, customer_ids: Sequence[str], *, store: FeatureStore | None = None
) -> list[CustomerFeatures | NoFeatures]:
    """Online features of each customer, in order; unknown customers get :class:`NoFeatures`.

    Pass a long-lived ``store`` (from :func:`feature_store`) on hot paths: building one reads
    the registry.
    """
    ids = [str(c) for c in customer_ids]
    if not ids:
        return []
    store = store or feature_store(settings)
    response = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"customer_id": c} for c in ids],
    )
    values = response.to_dict()
    # Per feature: one status and one timestamp per requested row (Feast's response proto).
    results = dict(zip(response.proto.metadata.feature_names.val, response.proto.results, strict=True))
    names = [*MODEL_FEATURES, "country"]
    out: list[CustomerFeatures | NoFeatures] = []
    for i, cid in enumerate(ids):
        # A materialized value carries its snapshot's timestamp; an unknown key a zero one (Redis
        # even marks it PRESENT, so the status alone cannot tell).
        found = [results[n] for n in names if results[n].event_timestamps[i].seconds > 0]
        if not found:
            out.append(NoFeatures(cid))
            continue
        seconds = max(r.event_timestamps[i].seconds for r in found)
        as_of = dt.datetime.fromtimestamp(seconds, dt.UTC)
        out.append(CustomerFeatures(cid, {n: values[n][i] for n in names}, as_of))
    return out
