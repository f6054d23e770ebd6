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

import copy
import datetime as dt
import functools
import hashlib
import io
import logging
import math
import os
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.core.schema import EVENT_COLUMNS, QUARANTINE_SCHEMA, RAW_SCHEMA, VALIDATED_SCHEMA
from propensity.core.settings import Settings
from propensity.core.storage import PART_FILE, Store, partition_parts, write_partition
from propensity.core.templates import render
from propensity.core.timeutil import day_of_interval
from propensity.core.zones import QUARANTINED_EVENTS, RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.ingest.calendar import closed_reason
from propensity.ingest.expectations import (
    NON_PRODUCT,
    PRODUCT,
    ROW_ID,
    SUITE_NAME,
    Bands,
    Check,
    build_checks,
    quiet_great_expectations,
)

log = logging.getLogger(__name__)

VALIDATED_ZONE, QUARANTINE_ZONE = "validated", "quarantine"
REPORTS = ("reports", "validation")
DOCS = ("reports", "data_docs")
SUMMARY_FILE = "summary.json"
DUPLICATE_KEY = [*EVENT_COLUMNS, "_parse_errors"]

# Nullable pandas dtypes: an int column with a null stays Int64 instead of turning float.
# Strings stay Arrow-backed: null checks, row filters and duplicate detection on them run in
# Arrow instead of over Python objects (GE's suite on a 1M-line day: ~40% less CPU). GE's type
# expectation compares with pandas' default string dtype, so run_suite sets that default to match.
STRING_STORAGE = "pyarrow"
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(STRING_STORAGE),
}


class ValidationFailed(RuntimeError):
    """The day's batch is not trustworthy; the message lists the failed checks and observed values."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class PublishRefused(RuntimeError):
    """The day has no passed validation matching its current raw partition."""


@dataclass
class CheckResult:
    name: str
    level: str
    why: str
    success: bool
    observed: Any = None
    expected: dict[str, Any] = field(default_factory=dict)
    unexpected_count: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    error: str | None = None


# -- entry points --------------------------------------------------------------------------


def validate(settings: Settings, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Validate the raw partition of the day ``[start, end)``; returns the summary.

    Raises :class:`ValidationFailed` (after writing the summary, quarantine and Data Docs) when the
    batch gate fails.
    """
    day = day_of_interval(start, end)
    start, end = _utc_bounds(day)
    store = zone_store(settings)
    raw_parts = (*partition_parts(*RAW_EVENTS, day), PART_FILE)
    if not store.exists(*raw_parts):
        raise FileNotFoundError(f"no raw partition {store.uri_of(*raw_parts)}: run collect for {day} first")
    raw_bytes = store.read_bytes(*raw_parts)
    raw = pq.read_table(io.BytesIO(raw_bytes))
    frame = events_frame(raw, settings)

    history = load_history(store, day, settings)
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
    summary_uri = store.write_json(summary, *REPORTS, f"date={day.isoformat()}", SUMMARY_FILE)
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
    parts = (*REPORTS, f"date={day.isoformat()}", SUMMARY_FILE)
    return store.read_json(*parts) if store.exists(*parts) else None


def load_history(store: Store, day: dt.date, settings: Settings) -> list[dict[str, Any]]:
    """Summaries of the days before ``day`` inside the longest learning window, oldest first."""
    v = settings.validation
    window = max(7 * v.volume_history_weeks, v.amount_history_days, v.country_history_days)
    first = day - dt.timedelta(days=window)
    out = []
    for name in store.list_dir(*REPORTS):
        if not name.startswith("date="):
            continue
        d = dt.date.fromisoformat(name[len("date=") :])
        if first <= d < day and store.exists(*REPORTS, name, SUMMARY_FILE):
            out.append(store.read_json(*REPORTS, name, SUMMARY_FILE))
    return sorted(out, key=lambda s: s["day"])


def learn_bands(settings: Settings, day: dt.date, history: list[dict[str, Any]], rows: int) -> Bands:
    """Row-count, median and country expectations for ``day`` from the calendar and passed history."""
    v = settings.validation
    start, end = _utc_bounds(day)
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


# -- running Great Expectations ------------------------------------------------------------


def run_suite(
    frame: Any,
    checks: list[Check],
    *,
    run_name: str = SUITE_NAME,
    run_time: dt.datetime | None = None,
    docs_dir: str | None = None,
    engine: str = "pandas",
) -> dict[str, CheckResult]:
    """Run the checks on a pandas (or Spark) DataFrame holding the ``_row`` column.

    With ``docs_dir``, Data Docs for the run are rendered there by a Checkpoint action. The
    frame comes from :func:`events_frame` (its strings stored as ``STRING_STORAGE``).
    """
    quiet_great_expectations()
    with pd.option_context("mode.string_storage", STRING_STORAGE):
        validation = _validate(frame, checks, run_name, run_time, docs_dir, engine)

    by_name = {c.name: c for c in checks}
    out: dict[str, CheckResult] = {}
    for r in validation.results:
        check = by_name[r.expectation_config.meta["check"]]
        res = r.result or {}
        error = None
        if r.exception_info and r.exception_info.get("raised_exception"):
            error = str(r.exception_info.get("exception_message"))
        rows = _row_ids(res.get("unexpected_index_list") or [])
        out[check.name] = CheckResult(
            name=check.name,
            level=check.level,
            why=check.why,
            success=bool(r.success),
            observed=_plain(res.get("observed_value")),
            expected=_expected(r.expectation_config.kwargs),
            unexpected_count=int(res.get("unexpected_count") or 0),
            rows=rows,
            error=error,
        )
    missing = set(by_name) - set(out)
    if missing:
        raise RuntimeError(f"Great Expectations returned no result for {sorted(missing)}")
    return out


def _validate(
    frame: Any,
    checks: list[Check],
    run_name: str,
    run_time: dt.datetime | None,
    docs_dir: str | None,
    engine: str,
) -> Any:
    """GE's suite validation result for ``frame`` (through a checkpoint when Data Docs are wanted)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    # Copies: an expectation belongs to one suite, and the same checks may be run again.
    expectations = [copy.copy(c.expectation) for c in checks]
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [ROW_ID],
        "return_unexpected_index_query": False,
        # Which rows, not which values: the values are in the rows, and GE's value lists and
        # counts cost more than the checks themselves on a large day.
        "exclude_unexpected_values": True,
    }
    if docs_dir:
        # Data Docs need the suite, the definition and a checkpoint in a context of their own
        # (the site's folder is this run's): a fresh ephemeral context, isolated from other runs.
        context, batch = _ephemeral_batch_definition(engine)
        suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite)
        )
        run_id = RunIdentifier(run_name=run_name, run_time=run_time) if run_time else None
        site = "zone"
        context.add_data_docs_site(
            site,
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=SUITE_NAME,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[site])],
                result_format=result_format,
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        (validation,) = outcome.run_results.values()
    else:
        # Without a report nothing needs storing: the suite runs on the batch definition of the
        # process's cached context (context, datasource and asset cost ~0.3 s to build per run)
        # through the validator ValidationDefinition.run uses, which loads the frame once
        # (Batch.validate loads it twice, fingerprinting all of it each time).
        from great_expectations.validator.v1_validator import Validator

        _, batch = _cached_batch_definition(engine)
        validator = Validator(batch, result_format=result_format, batch_parameters={"dataframe": frame})
        validation = validator.validate_expectation_suite(
            gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)
        )
    return validation


def _ephemeral_batch_definition(engine: str) -> tuple[Any, Any]:
    """A new ephemeral GE context holding one dataframe asset; its whole-dataframe batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = (
        context.data_sources.add_spark("events")
        if engine == "spark"
        else context.data_sources.add_pandas("events")
    )
    return context, source.add_dataframe_asset("events").add_batch_definition_whole_dataframe("day")


@functools.cache
def _cached_batch_definition(engine: str) -> tuple[Any, Any]:
    """One context per engine and process, reused by every run that writes no Data Docs."""
    return _ephemeral_batch_definition(engine)


# -- the verdict ---------------------------------------------------------------------------


@dataclass
class Outcome:
    duplicates: np.ndarray  # bool per raw row: a copy of an earlier line, removed
    quarantined: np.ndarray  # bool per raw row
    validated: np.ndarray  # bool per raw row
    reasons: list[list[str]]  # per quarantined row (in raw order), the failed checks
    reasons_histogram: Counter
    quarantine_share: float
    duplicate_share: float
    gate_failures: list[dict[str, Any]]
    warnings: list[dict[str, Any]]


def decide(
    frame: pd.DataFrame, checks: list[Check], results: dict[str, CheckResult], settings: Settings
) -> Outcome:
    """Rows -> validated / quarantined / duplicate; the batch gate's failures and the warnings."""
    v = settings.validation
    n = len(frame)
    duplicates = np.zeros(n, dtype=bool)
    dedup = results.get("no_exact_duplicates")
    if dedup is not None and len(dedup.rows):
        # GE names every member of a group of copies; the first of each group is the line itself.
        members = frame.iloc[np.sort(dedup.rows)]
        repeats = members.duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy()
        duplicates[members[ROW_ID].to_numpy()[repeats]] = True

    row_checks = [c for c in checks if c.level == "row"]
    failed_by = np.zeros((len(row_checks), n), dtype=bool)
    for i, check in enumerate(row_checks):
        failed_by[i, results[check.name].rows] = True
    failed_by[:, duplicates] = False
    quarantined = failed_by.any(axis=0)
    validated = ~quarantined & ~duplicates
    names = [c.name for c in row_checks]
    q_idx = np.flatnonzero(quarantined)
    reasons = [[names[i] for i in np.flatnonzero(failed_by[:, j])] for j in q_idx]
    histogram = Counter(name for rs in reasons for name in rs)

    kept = n - int(duplicates.sum())
    quarantine_share = float(quarantined.sum()) / kept if kept else 0.0
    duplicate_share = float(duplicates.sum()) / n if n else 0.0

    gate: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for check in checks:
        r = results[check.name]
        if r.error:
            # A check that could not run proves nothing: the day cannot pass on it.
            gate.append(_failure(r, f"check could not run: {r.error}"))
        elif check.level == "batch" and not r.success:
            gate.append(_failure(r, r.observed))
        elif check.level == "info" and not r.success:
            column = check.expectation.column  # info checks are column checks
            values = frame[column].iloc[np.sort(r.rows)].dropna().astype(str).unique().tolist()
            warnings.append(
                {"check": r.name, "why": r.why, "observed": sorted(values), "rows": r.unexpected_count}
            )
    if quarantine_share > v.max_quarantine_share:
        gate.append(
            {
                "check": "quarantine_share",
                "why": "when this many lines are bad the rest of the day is suspect too",
                "observed": round(quarantine_share, 6),
                "expected": {"max_value": v.max_quarantine_share},
                "top_reasons": dict(histogram.most_common(5)),
            }
        )
    if duplicate_share > v.max_duplicate_share:
        gate.append(
            {
                "check": "duplicate_share",
                "why": "this many exact copies means a file delivered twice or a replayed export",
                "observed": round(duplicate_share, 6),
                "expected": {"max_value": v.max_duplicate_share},
            }
        )
    return Outcome(
        duplicates,
        quarantined,
        validated,
        reasons,
        histogram,
        quarantine_share,
        duplicate_share,
        gate,
        warnings,
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
            elif rel.startswith("static/") and not store.exists(*DOCS, rel):
                with open(os.path.join(docs_dir, rel), "rb") as fh:
                    store.write_bytes(fh.read(), *DOCS, rel)
    if len(pages) != 1:
        log.warning("expected one Data Docs validation page, found %s", pages)
        return None
    with open(os.path.join(docs_dir, pages[0]), "rb") as fh:
        uri = store.write_bytes(fh.read(), *DOCS, pages[0])
    _write_docs_index(store)
    return uri


def _write_docs_index(store: Store) -> None:
    """An index of every validated day's page (GE's own index only knows the current run)."""
    base = (*DOCS, "validations", SUITE_NAME)
    pages = []
    for run in sorted(store.list_dir(*base), reverse=True):
        for run_time in store.list_dir(*base, run):
            for page in store.list_dir(*base, run, run_time):
                pages.append((run, "/".join(["validations", SUITE_NAME, run, run_time, page])))
    doc = render("data_docs_index.html.j2", pages=pages)
    store.write_bytes(doc.encode(), *DOCS, "index.html")


# -- small helpers -------------------------------------------------------------------------


def _row_ids(index_list: list[dict[str, Any]]) -> np.ndarray:
    """GE's unexpected_index_list: one dict of id lists (values excluded) or one dict per row."""
    if index_list and isinstance(index_list[0].get(ROW_ID), list):
        return np.asarray(index_list[0][ROW_ID], dtype=np.int64)
    return np.fromiter((i[ROW_ID] for i in index_list), dtype=np.int64, count=len(index_list))


def _utc_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _failure(r: CheckResult, observed: Any) -> dict[str, Any]:
    return {"check": r.name, "why": r.why, "observed": observed, "expected": r.expected}


def _expected(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("min_value", "max_value", "strict_max", "column_set", "type_list", "value_set", "mostly")
    return {k: _plain(kwargs[k]) for k in keys if kwargs.get(k) is not None}


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars, timestamps and containers as plain values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.datetime | pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
    day = first
    while day <= last:
        start, end = _utc_bounds(day)
        try:
            collect(settings, start, end)
            summary = validate(settings, start, end)
        except SourceError as exc:
            failed[day.isoformat()] = f"collect: {exc}"
            day += dt.timedelta(days=1)
            continue
        except ValidationFailed as exc:
            summary = exc.summary
            failed[day.isoformat()] = str(exc)
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
