"""Validate stage: one collected day -> validated rows, quarantined rows, and a batch verdict.

Great Expectations runs the suite of :mod:`propensity.ingest.expectations` on the day's raw partition.
Row-level failures send those rows to ``quarantine/events/date=D/`` with the name of every check
they failed; exact copies of an earlier line are removed and counted; the remaining rows go to
``validated/events/date=D/`` with their ``line_kind``. The counts reconcile exactly:
``raw = validated + quarantined + duplicates_removed``. Raw data is only ever read.

The batch gate fails the day when a batch-level expectation fails or too many rows were
quarantined or duplicated: then nothing is written to ``validated/`` (a stale partition of the day
is removed) and :class:`ValidationFailed` says which checks failed and what was observed.

Every run writes a JSON summary (``reports/validation/date=D/summary.json``, written last, so its
presence means the day's outputs are complete) and Great Expectations Data Docs
(``reports/data_docs/``). Bands learned from history read only the summaries of days before D,
so a backfill of D reaches the verdict the scheduled run did, given the same history.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import statistics
import tempfile
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.core.errors import DataError
from propensity.core.schema import EVENT_COLUMNS, QUARANTINE_SCHEMA, RAW_SCHEMA, VALIDATED_SCHEMA
from propensity.core.settings import Settings
from propensity.core.storage import PART_FILE, Store, partition_parts, write_partition
from propensity.core.templates import render
from propensity.core.timeutil import day_of_interval, utc_day_bounds
from propensity.core.zones import (
    DATA_DOCS,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
    VALIDATED_EVENTS,
    VALIDATION_REPORTS,
    zone_store,
)
from propensity.ingest.calendar import closed_reason
from propensity.ingest.expectations import (
    NON_PRODUCT,
    PRODUCT,
    ROW_ID,
    SUITE_NAME,
    Bands,
    build_checks,
)
from propensity.ingest.ge_runner import STRING_STORAGE, CheckResult, run_suite
from propensity.ingest.verdict import Outcome, decide

log = logging.getLogger(__name__)

VALIDATED_ZONE, QUARANTINE_ZONE = "validated", "quarantine"
SUMMARY_FILE = "summary.json"
DUPLICATE_KEY = [*EVENT_COLUMNS, "_parse_errors"]

# Nullable pandas dtypes: an int column with a null stays Int64 instead of turning float.
# Strings stay Arrow-backed: null checks, row filters and duplicate detection on them run in
# Arrow instead of over Python objects (GE's suite on a 1M-line day: ~40% less CPU). GE's type
# expectation compares with pandas' default string dtype, so run_suite sets that default to match.
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(STRING_STORAGE),
}


class ValidationFailed(DataError, RuntimeError):
    """The day's batch is not trustworthy; the message lists the failed checks and observed values."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class PublishRefused(DataError, RuntimeError):
    """The day has no passed validation matching its current raw partition."""


# -- entry points --------------------------------------------------------------------------


def validate(
    settings: Settings, start: dt.datetime, end: dt.datetime, *, history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Validate the raw partition of the day ``[start, end)``; returns the summary.

    ``history``: the summaries :func:`load_history` would read for the day, when the caller holds
    them already (:func:`collect_and_validate`, day after day); None reads them from the zone.
    Raises :class:`ValidationFailed` (after writing the summary, quarantine and Data Docs) when the
    batch gate fails.
    """
    day = day_of_interval(start, end)
    start, end = utc_day_bounds(day)
    store = zone_store(settings)
    raw_parts = (*partition_parts(*RAW_EVENTS, day), PART_FILE)
    if not store.exists(*raw_parts):
        raise FileNotFoundError(f"no raw partition {store.uri_of(*raw_parts)}: run collect for {day} first")
    raw_bytes = store.read_bytes(*raw_parts)
    raw = pq.read_table(io.BytesIO(raw_bytes))
    frame = events_frame(raw, settings)

    history = load_history(store, day, settings) if history is None else history
    bands = learn_bands(settings, day, history, rows=len(frame))
    checks = build_checks(settings, bands)
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as docs_dir:
        results = run_suite(
            frame,
            checks,
            run_name=f"{SUITE_NAME}-{day.isoformat()}",
            run_time=start,
            docs_dir=docs_dir if settings.validation.data_docs else None,
        )
        docs_uri = _publish_docs(store, docs_dir, day) if settings.validation.data_docs else None

    outcome = decide(frame, checks, results, settings)
    passed = not outcome.gate_failures
    quarantine_uri = write_partition(
        store, *QUARANTINED_EVENTS, day, _quarantine_table(raw, outcome.quarantined, outcome.reasons)
    )
    validated_uri = None
    if passed:
        validated = raw.take(pa.array(np.flatnonzero(outcome.validated)))
        kinds = frame["line_kind"].to_numpy()[outcome.validated]
        table = validated.append_column("line_kind", pa.array(kinds, pa.string())).cast(VALIDATED_SCHEMA)
        validated_uri = write_partition(store, *VALIDATED_EVENTS, day, table)
    else:
        # A stale partition from an earlier run must not outlive a verdict against today's raw data.
        store.delete_dir(*partition_parts(*VALIDATED_EVENTS, day))

    summary = _summary(
        day, bands, frame, results, outcome, passed, raw_bytes, store, quarantine_uri, validated_uri, docs_uri
    )
    summary_uri = store.write_json(summary, *VALIDATION_REPORTS, f"date={day.isoformat()}", SUMMARY_FILE)
    counts = summary["counts"]
    log.info(
        "validated %s: %s | raw %d = validated %d + quarantined %d + duplicates removed %d | summary %s",
        day,
        summary["status"].upper(),
        counts["raw"],
        counts["validated"],
        counts["quarantined"],
        counts["duplicates_removed"],
        summary_uri,
    )
    if outcome.reasons_histogram:
        log.info("quarantine reasons: %s", dict(outcome.reasons_histogram))
    if docs_uri:
        log.info("Data Docs: %s", _link(docs_uri))
    for warning in summary["warnings"]:
        log.warning("%s: %s", warning["check"], warning["observed"])
    if not passed:
        raise ValidationFailed(failure_message(summary), summary)
    return summary


def publish(settings: Settings, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Confirm the day is publishable: a passed summary for the current raw partition, and its
    validated partition. Returns what the Asset event announces."""
    day = day_of_interval(start, end)
    store = zone_store(settings)
    summary = read_summary(store, day)
    if summary is None:
        raise PublishRefused(f"{day}: no validation summary; run validate first")
    raw_parts = (*partition_parts(*RAW_EVENTS, day), PART_FILE)
    current = hashlib.sha256(store.read_bytes(*raw_parts)).hexdigest()
    if current != summary["raw"]["sha256"]:
        raise PublishRefused(f"{day}: raw partition changed since it was validated; validate again")
    if summary["status"] != "passed":
        raise PublishRefused(f"{day}: validation failed, nothing to publish: {failure_message(summary)}")
    parts = (*partition_parts(*VALIDATED_EVENTS, day), PART_FILE)
    if not store.exists(*parts):
        raise PublishRefused(f"{day}: validated partition {store.uri_of(*parts)} is missing")
    return {"day": day.isoformat(), "uri": store.uri_of(*parts), "rows": summary["counts"]["validated"]}


def failure_message(summary: dict[str, Any]) -> str:
    """One paragraph for on-call: which checks failed, observed vs expected, where to look."""
    lines = [f"validation of {summary['day']} failed {len(summary['failed'])} batch check(s):"]
    for f in summary["failed"]:
        lines.append(f"  - {f['check']}: observed {_short(f['observed'])}, expected {_short(f['expected'])}")
        lines.append(f"    why: {f['why']}")
    c = summary["counts"]
    lines.append(
        f"counts: raw {c['raw']}, would-be validated {c['validated']}, quarantined {c['quarantined']}, "
        f"duplicates removed {c['duplicates_removed']}; nothing published"
    )
    if summary["outputs"].get("data_docs"):
        lines.append(f"Data Docs: {_link(summary['outputs']['data_docs'])}")
    return "\n".join(lines)


# -- the frame GE sees ---------------------------------------------------------------------


def events_frame(raw: pa.Table, settings: Settings) -> pd.DataFrame:
    """The raw table as pandas (nullable dtypes) plus ``line_kind`` and the row id."""
    if raw.schema.names != RAW_SCHEMA.names:
        # Still validated: the schema expectation reports exactly what differs.
        log.warning(
            "raw partition columns %s differ from the canonical %s", raw.schema.names, RAW_SCHEMA.names
        )
    frame = raw.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for column in ("quantity", "_source_row"):
        # GE compares numpy int64/float64 columns vectorized but nullable Int64 value by value
        # (~20x slower). An integer column with nulls is shown to GE as float64 (null -> NaN):
        # exact for counts, and raw stays int64 (collect nulls any fractional quantity).
        if column in frame:
            has_null = bool(frame[column].isna().any())
            frame[column] = frame[column].astype(np.float64 if has_null else np.int64)
    items = frame["item_id"] if "item_id" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    non_product = items.isin(settings.source.non_product_items).fillna(False).to_numpy(dtype=bool)
    frame["line_kind"] = pd.Categorical(
        np.where(non_product, NON_PRODUCT, PRODUCT), categories=[PRODUCT, NON_PRODUCT]
    )
    # Lineage and parse notes repeat a handful of values (one file name, mostly null): as
    # categories, every row filter GE makes of the whole frame (one per expectation) copies small
    # integer codes instead of Python string objects, ~30% of GE's time on a large day. None of
    # them has a type expectation; their values are unchanged.
    for column in ("_source_file", "_parse_errors"):
        if column in frame:
            frame[column] = frame[column].astype("category")
    frame[ROW_ID] = np.arange(len(frame), dtype=np.int64)
    # The row id is also the index's name: GE then lists failing rows straight from the index
    # instead of looking the id column up row by row.
    frame.index = pd.RangeIndex(len(frame), name=ROW_ID)
    return frame


# -- history -> bands ----------------------------------------------------------------------


def read_summary(store: Store, day: dt.date) -> dict[str, Any] | None:
    parts = (*VALIDATION_REPORTS, f"date={day.isoformat()}", SUMMARY_FILE)
    return store.read_json(*parts) if store.exists(*parts) else None


def history_window_days(settings: Settings) -> int:
    """The longest learning window of the bands: how many days before a day its history reaches."""
    v = settings.validation
    return max(7 * v.volume_history_weeks, v.amount_history_days, v.country_history_days)


def load_history(store: Store, day: dt.date, settings: Settings) -> list[dict[str, Any]]:
    """Summaries of the days before ``day`` inside the longest learning window, oldest first."""
    first = day - dt.timedelta(days=history_window_days(settings))
    out = []
    for name in store.list_dir(*VALIDATION_REPORTS):
        if not name.startswith("date="):
            continue
        d = dt.date.fromisoformat(name[len("date=") :])
        if first <= d < day and store.exists(*VALIDATION_REPORTS, name, SUMMARY_FILE):
            out.append(store.read_json(*VALIDATION_REPORTS, name, SUMMARY_FILE))
    return sorted(out, key=lambda s: s["day"])


def learn_bands(settings: Settings, day: dt.date, history: list[dict[str, Any]], rows: int) -> Bands:
    """Row-count, median and country expectations for ``day`` from the calendar and passed history."""
    v = settings.validation
    start, end = utc_day_bounds(day)
    closed = closed_reason(settings.source.calendar, day)
    # Only days that passed and traded teach what is normal: a failed spike must not widen the band.
    good = [s for s in history if s["status"] == "passed" and not s["closed"]]

    week_floor = (day - dt.timedelta(weeks=v.volume_history_weeks)).isoformat()
    same_weekday = [
        s["metrics"]["rows"]
        for s in good
        if s["day"] >= week_floor and dt.date.fromisoformat(s["day"]).weekday() == day.weekday()
    ]
    usual = statistics.median(same_weekday) if len(same_weekday) >= v.min_history else None
    if closed:
        min_rows, max_rows = 0, None
    elif usual is None:
        min_rows, max_rows = 1, None  # at least: an empty trading day is a broken export
    else:
        min_rows = max(1, math.floor(usual / v.volume_factor))
        max_rows = math.ceil(usual * v.volume_factor)

    amount_floor = (day - dt.timedelta(days=v.amount_history_days)).isoformat()
    medians = [
        s["metrics"]["sale_amount_median"]
        for s in good
        if s["day"] >= amount_floor and s["metrics"].get("sale_amount_median") is not None
    ]
    amount_band = None
    if len(medians) >= v.min_history:
        m = statistics.median(medians)
        amount_band = (round(m / v.amount_median_factor, 6), round(m * v.amount_median_factor, 6))

    country_floor = (day - dt.timedelta(days=v.country_history_days)).isoformat()
    seen = {c for s in good if s["day"] >= country_floor for c in s["metrics"].get("countries", [])}
    return Bands(
        start=start,
        end=end,
        closed=closed,
        min_rows=min_rows,
        max_rows=max_rows,
        usual_rows=usual,
        amount_median=amount_band,
        known_countries=sorted(seen) or None,
        distributions=rows >= v.min_rows_for_distribution,
    )


# -- outputs -------------------------------------------------------------------------------


def _quarantine_table(raw: pa.Table, quarantined: np.ndarray, reasons: list[list[str]]) -> pa.Table:
    rows = raw.take(pa.array(np.flatnonzero(quarantined), pa.int64()))
    table = rows.append_column("quarantine_reasons", pa.array(reasons, pa.list_(pa.string())))
    return table.cast(QUARANTINE_SCHEMA)


def _summary(
    day: dt.date,
    bands: Bands,
    frame: pd.DataFrame,
    results: dict[str, CheckResult],
    outcome: Outcome,
    passed: bool,
    raw_bytes: bytes,
    store: Store,
    quarantine_uri: str,
    validated_uri: str | None,
    docs_uri: str | None,
) -> dict[str, Any]:
    sales = frame[(frame["line_kind"] == PRODUCT).fillna(False) & (frame["is_return"] == False).fillna(False)]  # noqa: E712
    median = sales["amount"].median()
    kept = frame.loc[outcome.validated]
    customers = int(frame["customer_id"].notna().sum())
    return {
        "day": day.isoformat(),
        "status": "passed" if passed else "failed",
        "closed": bands.closed,
        "counts": {
            "raw": len(frame),
            "validated": int(outcome.validated.sum()),
            "quarantined": int(outcome.quarantined.sum()),
            "duplicates_removed": int(outcome.duplicates.sum()),
            "guest_rows_validated": int(kept["customer_id"].isna().sum()),
            "non_product_validated": int((kept["line_kind"] == NON_PRODUCT).sum()),
        },
        "quarantine_share": round(outcome.quarantine_share, 6),
        "duplicate_share": round(outcome.duplicate_share, 6),
        "reasons": dict(sorted(outcome.reasons_histogram.items())),
        "failed": outcome.gate_failures,
        "warnings": outcome.warnings,
        # What history-learned bands read on later days (rows as Great Expectations counted them).
        "metrics": {
            "rows": len(frame),
            "sale_amount_median": None if pd.isna(median) else round(float(median), 6),
            "customer_share": round(customers / len(frame), 6) if len(frame) else None,
            "countries": sorted(kept["country"].dropna().unique().tolist()),
        },
        "bands": {
            "rows": [bands.min_rows, bands.max_rows],
            "usual_rows": bands.usual_rows,
            "sale_amount_median": list(bands.amount_median) if bands.amount_median else None,
        },
        "checks": [
            {
                "check": r.name,
                "level": r.level,
                "success": r.success and not r.error,
                "observed": r.observed if r.level in ("batch",) else None,
                "unexpected": r.unexpected_count,
            }
            for r in results.values()
        ],
        "raw": {
            "uri": store.uri_of(*partition_parts(*RAW_EVENTS, day), PART_FILE),
            "sha256": hashlib.sha256(raw_bytes).hexdigest(),
        },
        "outputs": {"validated": validated_uri, "quarantine": quarantine_uri, "data_docs": docs_uri},
    }


def _publish_docs(store: Store, docs_dir: str, day: dt.date) -> str | None:
    """Copy the run's Data Docs page into the zone; shared static files once; refresh the index."""
    pages = []
    for folder, _, files in os.walk(docs_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), docs_dir).replace(os.sep, "/")
            if rel.startswith("validations/") and rel.endswith(".html"):
                pages.append(rel)
            elif rel.startswith("static/") and not store.exists(*DATA_DOCS, rel):
                with open(os.path.join(docs_dir, rel), "rb") as fh:
                    store.write_bytes(fh.read(), *DATA_DOCS, rel)
    if len(pages) != 1:
        log.warning("expected one Data Docs validation page, found %s", pages)
        return None
    with open(os.path.join(docs_dir, pages[0]), "rb") as fh:
        uri = store.write_bytes(fh.read(), *DATA_DOCS, pages[0])
    _write_docs_index(store)
    return uri


def _write_docs_index(store: Store) -> None:
    """An index of every validated day's page (GE's own index only knows the current run)."""
    base = (*DATA_DOCS, "validations", SUITE_NAME)
    pages = []
    for run in sorted(store.list_dir(*base), reverse=True):
        for run_time in store.list_dir(*base, run):
            for page in store.list_dir(*base, run, run_time):
                pages.append((run, "/".join(["validations", SUITE_NAME, run, run_time, page])))
    doc = render("data_docs_index.html.j2", pages=pages)
    store.write_bytes(doc.encode(), *DATA_DOCS, "index.html")


# -- small helpers -------------------------------------------------------------------------


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _link(uri: str) -> str:
    return uri if "://" in uri else "file://" + uri


def row_counts_match(summary: dict[str, Any]) -> bool:
    """raw = validated + quarantined + duplicates removed (what every summary guarantees)."""
    c = summary["counts"]
    return c["raw"] == c["validated"] + c["quarantined"] + c["duplicates_removed"]


__all__ = [
    "PublishRefused",
    "ValidationFailed",
    "failure_message",
    "publish",
    "read_summary",
    "validate",
]


# -- many days -----------------------------------------------------------------------------


def collect_and_validate(settings: Settings, first: dt.date, last: dt.date) -> dict[str, Any]:
    """Collect and validate every day of ``[first, last]`` in order (the demo's year, a backfill).

    A failed day is reported and the loop goes on: one bad day stops only itself.
    """
    from propensity.ingest.collect import collect
    from propensity.ingest.sources import SourceError

    totals: Counter = Counter()
    reasons: Counter = Counter()
    failed: dict[str, str] = {}
    closed_empty: dict[str, str] = {}
    # The bands' history, read from the zone once, then carried day to day as each summary is written
    # (JSON round trip: what load_history would read back), without its ~100 requests a day on S3.
    window = dt.timedelta(days=history_window_days(settings))
    history = load_history(zone_store(settings), first, settings)
    day = first
    while day <= last:
        start, end = utc_day_bounds(day)
        history = [s for s in history if s["day"] >= (day - window).isoformat()]
        try:
            collect(settings, start, end)
            summary = validate(settings, start, end, history=history)
        except SourceError as exc:
            failed[day.isoformat()] = f"collect: {exc}"
            # An earlier run's summary of the day, if any, is history as load_history would read it.
            if (earlier := read_summary(zone_store(settings), day)) is not None:
                history.append(earlier)
            day += dt.timedelta(days=1)
            continue
        except ValidationFailed as exc:
            summary = exc.summary
            failed[day.isoformat()] = str(exc)
        history.append(json.loads(json.dumps(summary, sort_keys=True, default=str)))
        totals.update(summary["counts"])
        reasons.update(summary["reasons"])
        if summary["closed"] and not summary["counts"]["raw"]:
            closed_empty[day.isoformat()] = summary["closed"]
        day += dt.timedelta(days=1)
    return {
        "days": (last - first).days + 1,
        "failed_days": failed,
        "closed_empty_days": closed_empty,
        "counts": dict(totals),
        "reasons": dict(reasons.most_common()),
    }
