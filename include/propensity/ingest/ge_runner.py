"""Great Expectations behind one small API: run a suite of :class:`~propensity.ingest.expectations.Check`
on a frame and get one :class:`CheckResult` per check (rows that failed it, observed value, error).

GE's private parts (the V1 ``Validator``, the ``pyspark.sql.connect`` guard) are behind
:mod:`propensity.ingest.ge_compat`; this module reads the result objects' fields, which
``tests/unit/ingest/test_ge_contract.py`` pins with them.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from propensity.ingest.expectations import ROW_ID, SUITE_NAME, Check
from propensity.ingest.ge_compat import quiet_great_expectations, validate_suite

# Strings stay Arrow-backed: null checks, row filters and duplicate detection on them run in
# Arrow instead of over Python objects (GE's suite on a 1M-line day: ~40% less CPU). GE's type
# expectation compares with pandas' default string dtype, so run_suite sets that default to match.
STRING_STORAGE = "pyarrow"
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "return_unexpected_index_query": False,
    # Which rows, not which values: the values are in the rows, and GE's value lists and
    # counts cost more than the checks themselves on a large day.
    "exclude_unexpected_values": True,
}


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
            observed=plain(res.get("observed_value")),
            expected=expected_kwargs(r.expectation_config.kwargs),
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
    result_format = copy.deepcopy(RESULT_FORMAT)  # GE may annotate it
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
        # process's cached context (context, datasource and asset cost ~0.3 s to build per run).
        _, batch = _cached_batch_definition(engine)
        validation = validate_suite(
            batch, frame, gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations), result_format
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


def _row_ids(index_list: list[dict[str, Any]]) -> np.ndarray:
    """GE's unexpected_index_list: one dict of id lists (values excluded) or one dict per row."""
    if index_list and isinstance(index_list[0].get(ROW_ID), list):
        return np.asarray(index_list[0][ROW_ID], dtype=np.int64)
    return np.fromiter((i[ROW_ID] for i in index_list), dtype=np.int64, count=len(index_list))


def expected_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("min_value", "max_value", "strict_max", "column_set", "type_list", "value_set", "mostly")
    return {k: plain(kwargs[k]) for k in keys if kwargs.get(k) is not None}


def plain(value: Any) -> Any:
    """JSON-safe: numpy scalars, timestamps and containers as plain values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.datetime | pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
