"""Collect stage: one day of source transactions -> ``raw/events/date=D/`` in canonical form.

A function of the data interval alone: the same interval always writes the same rows,
replacing the partition atomically, so re-runs and backfills never duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.core.settings import Settings, SourceSettings
from propensity.core.storage import Store, atomic_write_file, open_store, write_partition
from propensity.core.timeutil import day_of_interval, utc
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest import sources
from propensity.ingest.sources import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectResult:
    day: str
    rows: int
    uri: str
    source_files: list[str]
    unmapped_columns: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def _source_store(path: str, settings: Settings) -> tuple[Store, str]:
    """(store of the file's folder, file name) for a local path or s3:// URI."""
    folder, name = path.rsplit("/", 1) if "/" in path else (".", path)
    return open_store(folder, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region), name


def collect(settings: Settings, start: dt.datetime, end: dt.datetime) -> CollectResult:
    """Collect the events of ``[start, end)`` (one UTC day) into the raw zone."""
    day = day_of_interval(start, end)
    source = settings.source
    if source.kind == "export":
        frame, files, extra = _replay_export(settings, utc(start), utc(end))
    else:
        frame, files, extra = _read_landing(settings, day)
    # A total order on the rows makes the partition's content identical on every re-run.
    frame = frame.sort_values(
        ["event_time", "_source_file", "_source_row"], kind="mergesort", ignore_index=True
    )
    uri = write_partition(zone_store(settings), *RAW_EVENTS, day, sources.to_table(frame))
    result = CollectResult(day.isoformat(), len(frame), uri, files, extra)
    log.info("collected %d rows for %s from %s -> %s", len(frame), day, ", ".join(files), uri)
    if extra:
        log.warning("source sends columns the mapping does not use (kept out of the raw zone): %s", extra)
    return result


# -- export replay ------------------------------------------------------------------------


def _replay_export(
    settings: Settings, start: dt.datetime, end: dt.datetime
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows of one day from a historical export, through a parsed cache of the whole file."""
    table, extra = _export_cache(settings)
    ts = table.column("event_time")
    mask = pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type)))
    # A line whose time could not be read belongs to the day the cache assigned it (see below).
    day = table.column(_ASSIGNED_DAY)
    mask = pc.or_kleene(mask, pc.equal(day, pa.scalar(start.date(), day.type)))
    frame = table.filter(mask).drop_columns([_ASSIGNED_DAY]).to_pandas()
    if not len(frame):
        first, last = _span(table)
        if not first <= start.date() <= last:
            # Not a quiet day of the export: a day it does not cover (a date typo, another file).
            raise SourceError(
                f"{settings.source.path}: the export covers {first} .. {last} (UTC); "
                f"it has nothing for {start.date()}"
            )
        frame = sources.empty_frame()
    return frame, [settings.source.path], extra


def _span(table: pa.Table) -> tuple[dt.date, dt.date]:
    times = pc.min_max(table.column("event_time"))
    if not times["min"].is_valid:
        raise SourceError("the export has no line with a readable event time")
    return times["min"].as_py().date(), times["max"].as_py().date()


def source_span(settings: Settings) -> tuple[dt.date, dt.date]:
    """The first and last UTC day with events in the source: what bootstrap and the demo cover.

    An export: its earliest and latest readable event time. A landing zone: its first and last
    ``date=`` folder.
    """
    if settings.source.kind == "export":
        return _span(_export_cache(settings)[0])
    store = open_store(
        settings.source.path, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    days = sorted(dt.date.fromisoformat(n[len("date=") :]) for n in store.list_dir() if n.startswith("date="))
    if not days:
        raise SourceError(f"{settings.source.path}: no date=YYYY-MM-DD folder in the landing zone")
    return days[0], days[-1]


_MEMO: dict[tuple, tuple[pa.Table, list[str]]] = {}


def _export_cache(settings: Settings) -> tuple[pa.Table, list[str]]:
    """The export parsed once into canonical Parquet, keyed by the file's hash and the mapping.

    Parsing 0.5 M CSV lines takes seconds; a daily run then only filters the cached table.
    A changed file or mapping gets a new key, so a stale cache is never read.
    """
    source = settings.source
    store, name = _source_store(source.path, settings)
    if not store.exists(name):
        raise SourceError(f"{source.path}: source file does not exist")
    info = store.fs.get_file_info(store.path(name))
    # One process replaying many days (bootstrap, backfill) reads and hashes the export once.
    memo_key = (source.path, info.size, info.mtime_ns, _mapping_fingerprint(source), settings.cache_dir)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    data = store.read_bytes(name)
    key = hashlib.sha256(data + _mapping_fingerprint(source).encode() + _CACHE_FORMAT).hexdigest()[:20]
    cache = os.path.join(settings.cache_dir, f"{source.name}-{key}.parquet")
    meta = cache + ".json"
    if os.path.exists(cache) and os.path.exists(meta):
        with open(meta) as fh:
            extra = json.load(fh)["unmapped_columns"]
        _MEMO.clear()
        _MEMO[memo_key] = (pq.read_table(cache), extra)
        return _MEMO[memo_key]
    log.info("parsing export %s once into the cache %s", source.path, cache)
    raw = sources.read_source_bytes(data, source.path, source)
    extra = sources.unmapped_columns(raw, source)
    frame = sources.to_canonical(raw, source.path, source)
    days = assign_days(frame, raw[source.mapping.event_time], source)
    table = sources.to_table(frame).append_column(_ASSIGNED_DAY, pa.array(days, pa.date32()))
    table = table.sort_by([("event_time", "ascending"), ("_source_row", "ascending")])
    os.makedirs(settings.cache_dir, exist_ok=True)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_file(cache, buf.getvalue())
    atomic_write_file(meta, json.dumps({"source": source.path, "unmapped_columns": extra}).encode())
    return table, extra


_ASSIGNED_DAY = "_assigned_day"  # cache-only: the day of a line whose time could not be read
_CACHE_FORMAT = b"cache-v2"  # part of the cache key: a cache of an older layout is never read


def assign_days(frame: pd.DataFrame, raw_times: pd.Series, source: SourceSettings) -> list[dt.date | None]:
    """For each row without a readable event time, the day it is collected (and quarantined) on.

    One bad line must not block any day but its own, and must not be lost. Its day is its date when
    the date part of the value still reads (``YYYY-03-01 25:61`` -> 1 March), else the day of the
    line before it in the file (exports list a day's lines together), else of the line after it.
    Every other row: ``None`` (its event time decides). The row's ``_parse_errors`` says which.
    """
    missing = frame["event_time"].isna().to_numpy()
    out: list[dt.date | None] = [None] * len(frame)
    if not missing.any():
        return out
    dates = _date_parts(raw_times.reset_index(drop=True), source)
    known = pd.Series(frame["event_time"].dt.date.where(~missing), dtype="object")
    before, after = known.ffill(), known.bfill()
    notes = frame["_parse_errors"].astype("string").copy()
    for i in np.flatnonzero(missing):
        if dates[i] is not None:
            out[i], why = dates[i], "collected on the day of its date"
        elif before[i] is not None and not pd.isna(before[i]):
            out[i], why = before[i], "collected on the day of the line before it"
        elif after[i] is not None and not pd.isna(after[i]):
            out[i], why = after[i], "collected on the day of the line after it"
        else:
            raise SourceError(f"{source.path}: no line has a readable {source.mapping.event_time!r}")
        notes.iloc[i] = f"{notes.iloc[i]} ({why}, {out[i].isoformat()})"
    frame["_parse_errors"] = notes
    return out


def _date_parts(raw: pd.Series, source: SourceSettings) -> list[dt.date | None]:
    """The date part of each timestamp text, where it reads on its own (else None)."""
    import re

    fmt = source.timestamp_format
    text = raw.astype("string").str.strip()
    if fmt:
        date_fmt = re.split(r"(?=%[HIMSpfzZ])|T", fmt)[0].rstrip(" T")
        head = text.str.split(r"[ T]", n=1, regex=True).str[0]
        parsed = pd.to_datetime(head, format=date_fmt, errors="coerce")
    else:
        parsed = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    # A local date's day is taken at its noon, so a time zone never moves it to the day before.
    noon = parsed + pd.Timedelta(hours=12)
    local = noon.dt.tz_localize(source.timezone, nonexistent="shift_forward", ambiguous="NaT")
    days = local.dt.tz_convert("UTC").dt.date
    return [None if pd.isna(d) else d for d in days]


def _mapping_fingerprint(source: SourceSettings) -> str:
    # Only what changes the parsed rows: the non-product list and the calendar are validation's concern.
    return source.model_dump_json(
        exclude={"path", "download_url", "calendar", "name", "guest_rows", "non_product_items"}
    )


# -- landing zone -------------------------------------------------------------------------

LANDING_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt", ".txt.gz")


def _read_landing(settings: Settings, day: dt.date) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every file delivered for ``day`` under ``<path>/date=YYYY-MM-DD/``."""
    source = settings.source
    store = open_store(source.path, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region)
    folder = f"date={day.isoformat()}"
    names = [
        n for n in store.list_dir(folder) if n.lower().endswith(LANDING_SUFFIXES) and not n.startswith(".")
    ]
    if not names:
        raise SourceError(
            f"{store.uri_of(folder)}: no delivery for {day} (no .csv/.parquet files in the folder)"
        )
    frames, extra = [], set()
    for name in names:
        label = store.uri_of(folder, name)
        raw = sources.read_source_bytes(store.read_bytes(folder, name), label, source)
        extra.update(sources.unmapped_columns(raw, source))
        frames.append(sources.to_canonical(raw, label, source))
    return sources.concat(frames), [store.uri_of(folder, n) for n in names], sorted(extra)
