"""Point-in-time training sets: Feast features as of each cutoff, and the label after it.

A row (customer, cutoff) gets the features of the snapshot as of the cutoff (computed only from
events before cutoff 00:00 UTC) through Feast ``get_historical_features`` with the model's
FeatureService, and the label: did the customer place an order (a non-return product line)
with ``cutoff <= event_time < cutoff + label_days``. A label is usable only once it has matured:
``cutoff + label_days <= as_of`` (the training date) and validated data reaches that far.
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import DataError
from propensity.core.settings import Settings
from propensity.core.storage import list_partitions, read_partition
from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS, zone_store
from propensity.features.spec import ENTITY_KEY, FEATURE_SERVICE, MODEL_FEATURES, TIMESTAMP
from propensity.features.store import feature_store

log = logging.getLogger(__name__)

LABEL = "label"


class TrainingSetError(DataError, ValueError):
    """The requested rows cannot make a correct training set (immature labels, bad input)."""


def _cutoffs(rows: pd.DataFrame) -> pd.Series:
    """Cutoffs as midnight UTC timestamps; rejects times of day (a snapshot is per date)."""
    cut = pd.to_datetime(rows["cutoff"], utc=True)
    if cut.isna().any():
        raise TrainingSetError(f"{int(cut.isna().sum())} row(s) have no cutoff")
    off = cut != cut.dt.normalize()
    if off.any():
        raise TrainingSetError(f"cutoffs must be dates (midnight UTC); e.g. {cut[off].iloc[0]}")
    return cut.astype("datetime64[ns, UTC]")


def build_training_set(
    settings: Settings, rows: pd.DataFrame, *, as_of: dt.date | None = None
) -> pd.DataFrame:
    """``rows[customer_id, cutoff]`` -> the same rows, in order, with MODEL_FEATURES, country and label.

    Features are NaN where the customer has no snapshot at the cutoff (not active then).
    Raises :class:`TrainingSetError` when a label has not matured by ``as_of`` or the
    validated events do not yet reach ``cutoff + label_days``.
    """
    missing = {"customer_id", "cutoff"} - set(rows.columns)
    if missing:
        raise TrainingSetError(f"training rows lack column(s) {sorted(missing)}; got {list(rows.columns)}")
    if rows["customer_id"].isna().any():
        raise TrainingSetError("training rows contain a null customer_id")
    horizon = dt.timedelta(days=settings.features.label_days)
    entity = pd.DataFrame(
        {
            ENTITY_KEY: rows["customer_id"].astype(str).reset_index(drop=True),
            TIMESTAMP: _cutoffs(rows).reset_index(drop=True),
        }
    )
    if entity.empty:
        raise TrainingSetError("no training rows given")
    last_cutoff = entity[TIMESTAMP].max().date()
    if as_of is not None and last_cutoff + horizon > as_of:
        raise TrainingSetError(
            f"label of cutoff {last_cutoff} matures on {last_cutoff + horizon}, after the training date {as_of}"
        )

    labels = _labels(settings, entity, horizon)
    store = feature_store(settings, apply=True)
    feats = store.get_historical_features(
        entity_df=entity.drop_duplicates(), features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    feats[TIMESTAMP] = pd.to_datetime(feats[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    # Merge back onto the requested rows: keeps their order, and the rows the file offline
    # store drops when a customer has no snapshot within the TTL come back with NaN features.
    columns = [ENTITY_KEY, TIMESTAMP, *MODEL_FEATURES, "country"]
    out = entity.merge(feats[columns], on=[ENTITY_KEY, TIMESTAMP], how="left", validate="many_to_one")
    for name in MODEL_FEATURES:
        out[name] = out[name].astype("float64")
    out.insert(1, "cutoff", out.pop(TIMESTAMP).dt.date)
    out[LABEL] = labels
    log.info(
        "training set: %d rows, %d cutoffs, %.1f%% positive, %d without features",
        len(out),
        out["cutoff"].nunique(),
        100 * out[LABEL].mean(),
        int(out[MODEL_FEATURES[0]].isna().sum()),
    )
    return out


def _labels(settings: Settings, entity: pd.DataFrame, horizon: dt.timedelta) -> pd.Series:
    """1 when the customer ordered in ``[cutoff, cutoff + horizon)``, else 0, per entity row."""
    store = zone_store(settings)
    first = entity[TIMESTAMP].min().date()
    end = entity[TIMESTAMP].max().date() + horizon  # exclusive
    available = [d for d in list_partitions(store, *VALIDATED_EVENTS)]
    if not available or max(available) < end - dt.timedelta(days=1):
        reached = max(available).isoformat() if available else "nothing"
        raise TrainingSetError(
            f"labels need validated events up to {end - dt.timedelta(days=1)}; "
            f"{store.uri_of(*VALIDATED_EVENTS)} reaches {reached}"
        )
    cols = ["customer_id", "event_time", "is_return", "line_kind"]
    tables = [read_partition(store, *VALIDATED_EVENTS, d).select(cols) for d in available if first <= d < end]
    events = pa.concat_tables(tables) if tables else pa.table({c: [] for c in cols})
    buys = events.filter(
        pc.and_(
            pc.and_(pc.is_valid(events["customer_id"]), pc.equal(events["line_kind"], "product")),
            pc.invert(events["is_return"]),
        )
    )
    purchases = pd.DataFrame(
        {
            ENTITY_KEY: buys["customer_id"].to_pandas(),
            "next_order": pd.to_datetime(buys["event_time"].to_pandas(), utc=True).astype(
                "datetime64[ns, UTC]"
            ),
        }
    ).sort_values("next_order", kind="mergesort")
    probe = entity.reset_index(names="_row").sort_values(TIMESTAMP, kind="mergesort")
    # The first order at or after the cutoff (event_time >= cutoff is inside the label window).
    joined = (
        pd.merge_asof(
            probe, purchases, left_on=TIMESTAMP, right_on="next_order", by=ENTITY_KEY, direction="forward"
        )
        .set_index("_row")
        .sort_index()
    )
    hit = joined["next_order"].notna() & (joined["next_order"] < joined[TIMESTAMP] + pd.Timedelta(horizon))
    return hit.astype("int64").set_axis(entity.index)


def training_rows(settings: Settings, cutoffs: list[dt.date]) -> pd.DataFrame:
    """Every customer in the stored snapshot of each cutoff, as ``rows[customer_id, cutoff]``."""
    store = zone_store(settings)
    frames = []
    for cutoff in sorted(set(cutoffs)):
        ids = read_partition(store, *SNAPSHOTS, cutoff).column(ENTITY_KEY).to_pylist()
        frames.append(pd.DataFrame({"customer_id": ids, "cutoff": cutoff}))
    if not frames:
        raise TrainingSetError("no cutoffs given")
    return pd.concat(frames, ignore_index=True)
