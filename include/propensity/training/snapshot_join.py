"""Point-in-time training sets read straight from the cutoffs' snapshots: time and memory ~ rows.

A snapshot as of D (``offline/customer_features/date=D/``) is already point-in-time correct for
cutoff D: the feature job computed it only from events before D 00:00 UTC and stamped every row
with D 00:00 UTC. So the training set of some cutoffs is, cutoff by cutoff:

* features: that cutoff's snapshot partition, only the needed columns, read with pyarrow. A row
  stamped with anything but the cutoff's midnight is refused: it would not be point-in-time.
* label: did the customer buy (a non-return product line) in ``[cutoff, cutoff + label_days)``?
  Read from the validated partitions of those days, three columns each. Each day is read once,
  when the first window reaches it, and dropped when no later window needs it.

Peak memory is the result plus one snapshot and the buyers of one label window. It does not grow
with the number of snapshots per customer in the offline store. Feast's
``get_historical_features`` on the file offline store
(:func:`propensity.training.dataset.build_training_set`) merges every entity row with every stored
snapshot row of its customer before filtering by time. It stays the reference that the tests
compare this builder with, on a sample.

Two differences from the Feast path, both on purpose:

* a customer absent from the cutoff's snapshot (not active then) gets NaN features, even when an
  earlier snapshot within Feast's TTL holds a row for it (Feast would serve that older row);
* a missing snapshot, or a missing validated day inside a label window, is an error naming it.
  Feast gives NaN features there, and the old label reader a 0 label.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from propensity.core.settings import Settings
from propensity.core.storage import PART_FILE, Store, list_partitions, partition_parts
from propensity.core.zones import SNAPSHOTS, TRAINING_SETS, VALIDATED_EVENTS, zone_store
from propensity.features.spec import ENTITY_KEY, MODEL_FEATURES, TIMESTAMP
from propensity.training.dataset import LABEL, TrainingSetError

log = logging.getLogger(__name__)

TRAINING_ZONE, TRAINING_DATASET = TRAINING_SETS
CUTOFF = "cutoff"
FEATURE_COLUMNS = (*MODEL_FEATURES, "country")
# One row per (customer, cutoff), sorted by cutoff then customer: what training reads.
TRAINING_SCHEMA = pa.schema(
    [
        pa.field(ENTITY_KEY, pa.string()),
        pa.field(CUTOFF, pa.date32()),
        *(pa.field(name, pa.float64()) for name in MODEL_FEATURES),
        pa.field("country", pa.string()),
        pa.field(LABEL, pa.int64()),
    ]
)
_LABEL_COLUMNS = ["customer_id", "is_return", "line_kind"]
_ROW_GROUP = 1_000_000


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


# -- what a set of cutoffs needs -----------------------------------------------------------


def checked_cutoffs(cutoffs: Iterable[dt.date], horizon_days: int, as_of: dt.date | None) -> list[dt.date]:
    """Sorted distinct cutoffs; refuses none, and a label that has not matured by ``as_of``."""
    days = sorted(set(cutoffs))
    if not days:
        raise TrainingSetError("no cutoffs given")
    last = days[-1] + dt.timedelta(days=horizon_days)
    if as_of is not None and last > as_of:
        raise TrainingSetError(
            f"label of cutoff {days[-1]} matures on {last}, after the training date {as_of}"
        )
    return days


def label_days(cutoffs: Sequence[dt.date], horizon_days: int) -> list[dt.date]:
    """Every validated day some label window ``[cutoff, cutoff + horizon)`` covers, in order."""
    days = {c + dt.timedelta(days=i) for c in cutoffs for i in range(horizon_days)}
    return sorted(days)


def require_validated(store: Store, days: Sequence[dt.date]) -> None:
    """Every label day must be validated: a missing day would silently turn buyers into 0 labels."""
    have = set(list_partitions(store, *VALIDATED_EVENTS))
    missing = [d for d in days if d not in have]
    if not missing:
        return
    reached = max(have).isoformat() if have else "nothing"
    shown = ", ".join(d.isoformat() for d in missing[:5])
    raise TrainingSetError(
        f"labels need validated events of {days[0]}..{days[-1]}; {len(missing)} day(s) missing under "
        f"{VALIDATED_EVENTS.uri(store)} (e.g. {shown}; validated data reaches {reached})"
    )


def require_snapshots(store: Store, cutoffs: Sequence[dt.date]) -> None:
    """Every cutoff needs its own snapshot: checked before any row is read."""
    have = set(list_partitions(store, *SNAPSHOTS))
    missing = [c for c in cutoffs if c not in have]
    if missing:
        parts = (*partition_parts(*SNAPSHOTS, missing[0]), PART_FILE)
        raise TrainingSetError(
            f"no feature snapshot for cutoff {missing[0]} ({len(missing)} of {len(cutoffs)} cutoffs "
            f"missing): {store.uri_of(*parts)} is missing; compute the features as of "
            f"{', '.join(d.isoformat() for d in missing[:5])} first"
        )


# -- reading -------------------------------------------------------------------------------


def read_snapshot_features(store: Store, cutoff: dt.date) -> pa.Table:
    """The cutoff's snapshot: ``customer_id`` (sorted, unique) and :data:`FEATURE_COLUMNS`.

    Refuses a missing snapshot, and one holding a row stamped other than the cutoff's midnight
    (a later stamp is a feature from after the cutoff; an earlier one a stale row).
    """
    parts = (*partition_parts(*SNAPSHOTS, cutoff), PART_FILE)
    if not store.exists(*parts):
        raise TrainingSetError(
            f"no feature snapshot for cutoff {cutoff}: {store.uri_of(*parts)} is missing; "
            f"compute the features as of {cutoff} first"
        )
    table = pq.read_table(
        store.path(*parts), filesystem=store.fs, columns=[ENTITY_KEY, TIMESTAMP, *FEATURE_COLUMNS]
    )
    stamps = table.column(TIMESTAMP)
    if table.num_rows:
        expected = pa.scalar(_midnight(cutoff), pa.timestamp("us", tz="UTC")).cast(stamps.type)
        bounds = pc.min_max(stamps)
        if stamps.null_count or bounds["min"] != expected or bounds["max"] != expected:
            raise TrainingSetError(
                f"{store.uri_of(*parts)} holds rows stamped {bounds['min']}..{bounds['max']} "
                f"({stamps.null_count} null), not {expected}: not point-in-time for cutoff {cutoff}"
            )
    table = table.drop_columns([TIMESTAMP])
    ids = table.column(ENTITY_KEY).cast(pa.string())
    if ids.null_count:
        raise TrainingSetError(f"{store.uri_of(*parts)}: {ids.null_count} row(s) without a customer_id")
    if not _strictly_increasing(ids):
        # The feature job writes customers sorted; anything else is sorted here, and must be unique.
        table = table.sort_by([(ENTITY_KEY, "ascending")])
        ids = table.column(ENTITY_KEY).cast(pa.string())
        if not _strictly_increasing(ids):
            raise TrainingSetError(f"{store.uri_of(*parts)}: a customer appears twice in one snapshot")
    return table.set_column(0, ENTITY_KEY, ids)


def _strictly_increasing(ids: pa.ChunkedArray) -> bool:
    if len(ids) < 2:
        return True
    flat = ids.combine_chunks()
    return bool(pc.all(pc.less(flat.slice(0, len(flat) - 1), flat.slice(1))).as_py())


def day_buyers(store: Store, day: dt.date) -> pa.Array:
    """Distinct customers with a non-return product line on ``day`` (its validated partition).

    The validated zone's contract: a day's partition holds exactly the events of that UTC day
    (validation quarantines the others), so the partition is the day.
    """
    path = store.path(*partition_parts(*VALIDATED_EVENTS, day), PART_FILE)
    events = pq.read_table(path, filesystem=store.fs, columns=_LABEL_COLUMNS)
    buys = events.filter(
        pc.and_(
            pc.and_(pc.is_valid(events["customer_id"]), pc.equal(events["line_kind"], "product")),
            pc.invert(events["is_return"]),
        )
    )
    return pc.unique(buys.column("customer_id").cast(pa.string()).combine_chunks())


class WindowBuyers:
    """Buyers of label windows for ascending cutoffs, each validated day read once.

    Holds the days of the current window only: memory ~ one window's distinct daily buyers.
    """

    def __init__(self, store: Store, horizon_days: int) -> None:
        self.store = store
        self.horizon = horizon_days
        self.days: dict[dt.date, pa.Array] = {}
        self.reads = 0

    def buyers(self, cutoff: dt.date) -> pa.Array:
        for day in [d for d in self.days if d < cutoff]:
            del self.days[day]
        arrays = []
        for i in range(self.horizon):
            day = cutoff + dt.timedelta(days=i)
            if day not in self.days:
                self.days[day] = day_buyers(self.store, day)
                self.reads += 1
            arrays.append(self.days[day])
        return pc.unique(pa.chunked_array(arrays, pa.string()).combine_chunks())


def _checked_inputs(
    settings: Settings, cutoffs: Iterable[dt.date], as_of: dt.date | None
) -> tuple[list[dt.date], Store, WindowBuyers]:
    """The cutoffs (checked against label maturity by ``as_of``), with their snapshots and every
    validated day of their label windows there, the zone store and the label-window reader."""
    horizon = settings.features.label_days
    days = checked_cutoffs(cutoffs, horizon, as_of)
    store = zone_store(settings)
    require_snapshots(store, days)
    require_validated(store, label_days(days, horizon))
    return days, store, WindowBuyers(store, horizon)


def _assemble(snapshot: pa.Table, cutoff: dt.date, label: pa.Array | pa.ChunkedArray) -> pa.Table:
    n = snapshot.num_rows
    columns: list[Any] = [snapshot.column(ENTITY_KEY), pa.repeat(pa.scalar(cutoff, pa.date32()), n)]
    columns += [snapshot.column(name).cast(pa.float64()) for name in MODEL_FEATURES]
    columns += [snapshot.column("country").cast(pa.string()), pc.cast(label, pa.int64())]
    return pa.Table.from_arrays(columns, schema=TRAINING_SCHEMA)


# -- the builders --------------------------------------------------------------------------


def iter_training_set(
    settings: Settings, cutoffs: Iterable[dt.date], *, as_of: dt.date | None = None
) -> Iterator[pa.Table]:
    """One table (:data:`TRAINING_SCHEMA`) per cutoff, in cutoff order: every customer of its snapshot.

    Everything the cutoffs need is checked before the first table: label maturity by ``as_of``,
    each cutoff's snapshot, and every validated day of every label window (a snapshot's rows are
    checked as it is read).
    """
    days, store, window = _checked_inputs(settings, cutoffs, as_of)
    for cutoff in days:
        snapshot = read_snapshot_features(store, cutoff)
        label = pc.is_in(snapshot.column(ENTITY_KEY), value_set=window.buyers(cutoff))
        yield _assemble(snapshot, cutoff, label)


def build_training_table(
    settings: Settings, cutoffs: Iterable[dt.date], *, as_of: dt.date | None = None
) -> pa.Table:
    """The whole training set of ``cutoffs`` as one Arrow table (the per-cutoff tables, not copied)."""
    tables = list(iter_training_set(settings, cutoffs, as_of=as_of))
    return pa.concat_tables(tables) if tables else TRAINING_SCHEMA.empty_table()


def write_training_set(
    settings: Settings,
    cutoffs: Iterable[dt.date],
    as_of: dt.date,
    *,
    zone: str = TRAINING_ZONE,
    dataset: str = TRAINING_DATASET,
) -> dict[str, Any]:
    """Stream the training set into ``<zone>/<dataset>/date=<as_of>/`` a cutoff at a time.

    Peak memory is one cutoff's rows; the partition is replaced atomically (a failure leaves the
    previous one, or none). A set without a single row is an error, never an empty success.
    """
    store = zone_store(settings)
    parts = (*partition_parts(zone, dataset, as_of), PART_FILE)
    rows = positives = 0
    per_cutoff: dict[str, int] = {}
    tables = iter_training_set(settings, cutoffs, as_of=as_of)
    first = next(tables)  # every input is checked before anything is opened for writing
    with _atomic_parquet(store, parts) as writer:
        for table in itertools.chain([first], tables):
            writer.write_table(table, row_group_size=_ROW_GROUP)
            rows += table.num_rows
            positives += int(pc.sum(table.column(LABEL)).as_py() or 0)
            per_cutoff[table.column(CUTOFF)[0].as_py().isoformat() if table.num_rows else "?"] = (
                table.num_rows
            )
        if rows == 0:
            raise TrainingSetError(
                f"the snapshots of the cutoffs for {as_of} hold no customer: no training rows"
            )
    log.info(
        "training set as of %s: %d rows over %d cutoffs, %.1f%% positive -> %s",
        as_of,
        rows,
        len(per_cutoff),
        100.0 * positives / rows,
        store.uri_of(*parts),
    )
    return {"uri": store.uri_of(*parts), "rows": rows, "positives": positives, "rows_per_cutoff": per_cutoff}


@contextlib.contextmanager
def _atomic_parquet(store: Store, parts: tuple[str, ...]) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer whose file replaces ``parts`` only when the block completes.

    Locally the file is written beside its destination and renamed in; on S3 it is written to a
    local temporary file and uploaded at the end (an object is visible only once complete).
    """
    dest = store.path(*parts)
    folder = os.path.dirname(dest)
    created = False
    if store.is_local:
        created = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(dest)}")
    else:
        handle, tmp = tempfile.mkstemp(suffix=".parquet")
        os.close(handle)
    writer = pq.ParquetWriter(tmp, TRAINING_SCHEMA, compression="zstd", write_statistics=True)
    done = False
    try:
        yield writer
        writer.close()
        if store.is_local:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        else:
            pafs.copy_files(
                tmp, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs
            )
        done = True
    finally:
        if writer.is_open:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        if created and not done:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if still empty: a partition folder this run made


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The training frame training reads: ``cutoff`` as ``datetime.date`` values, labels int64."""
    frame = table.to_pandas(date_as_object=True)
    frame[CUTOFF] = frame[CUTOFF].astype(object)
    return frame


# -- given entity rows (the drop-in for build_training_set) -------------------------------


def training_set_for_rows(
    settings: Settings, rows: pd.DataFrame, *, as_of: dt.date | None = None
) -> pd.DataFrame:
    """``rows[customer_id, cutoff]`` -> the same rows, in order, with features, country and label.

    The contract of :func:`propensity.training.dataset.build_training_set` (what the Feast path
    returns): features NaN where the customer is not in the cutoff's snapshot. Reads only the
    snapshots of the cutoffs named and their label windows.
    """
    missing = {"customer_id", CUTOFF} - set(rows.columns)
    if missing:
        raise TrainingSetError(f"training rows lack column(s) {sorted(missing)}; got {list(rows.columns)}")
    if rows.empty:
        raise TrainingSetError("no training rows given")
    if rows["customer_id"].isna().any():
        raise TrainingSetError("training rows contain a null customer_id")
    cut = pd.to_datetime(rows[CUTOFF], utc=True)
    if cut.isna().any():
        raise TrainingSetError(f"{int(cut.isna().sum())} row(s) have no cutoff")
    off = cut != cut.dt.normalize()
    if off.any():
        raise TrainingSetError(f"cutoffs must be dates (midnight UTC); e.g. {cut[off].iloc[0]}")
    ids = rows["customer_id"].astype(str).to_numpy(dtype=object)
    dates = np.asarray([d.date() for d in cut], dtype=object)
    days, store, window = _checked_inputs(settings, dates, as_of)

    n = len(rows)
    values = {name: np.full(n, np.nan) for name in MODEL_FEATURES}
    country = np.full(n, None, dtype=object)
    label = np.zeros(n, dtype=np.int64)
    for cutoff in days:
        where = np.flatnonzero(dates == cutoff)
        wanted = pa.array(ids[where], pa.string())
        snapshot = read_snapshot_features(store, cutoff)
        pos = pc.index_in(wanted, value_set=snapshot.column(ENTITY_KEY))
        hit = where[pc.is_valid(pos).to_numpy(zero_copy_only=False)]
        take = pc.drop_null(pos).cast(pa.int64())
        for name in MODEL_FEATURES:
            values[name][hit] = snapshot.column(name).take(take).cast(pa.float64()).to_numpy()
        country[hit] = snapshot.column("country").take(take).to_numpy(zero_copy_only=False)
        label[where] = pc.is_in(wanted, value_set=window.buyers(cutoff)).to_numpy(zero_copy_only=False)
    out = pd.DataFrame({ENTITY_KEY: ids, CUTOFF: dates})
    for name in MODEL_FEATURES:
        out[name] = values[name]
    out["country"] = country
    out[LABEL] = label
    return out
