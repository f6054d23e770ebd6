"""The validation verdict: which rows are validated, quarantined (with every failed check) or exact
copies, and which batch checks stop the day. Pure: results in, an :class:`Outcome` out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from propensity.core.schema import EVENT_COLUMNS
from propensity.core.settings import Settings
from propensity.ingest.expectations import ROW_ID, Check
from propensity.ingest.ge_runner import CheckResult

DUPLICATE_KEY = [*EVENT_COLUMNS, "_parse_errors"]


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
    shares = (
        ("quarantine_share", quarantine_share, v.max_quarantine_share,
         "when this many lines are bad the rest of the day is suspect too"),
        ("duplicate_share", duplicate_share, v.max_duplicate_share,
         "this many exact copies means a file delivered twice or a replayed export"),
    )  # fmt: skip
    for name, share, limit, why in shares:
        if share > limit:
            failure = {
                "check": name,
                "why": why,
                "observed": round(share, 6),
                "expected": {"max_value": limit},
            }
            if name == "quarantine_share":
                failure["top_reasons"] = dict(histogram.most_common(5))
            gate.append(failure)
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


def _failure(r: CheckResult, observed: Any) -> dict[str, Any]:
    return {"check": r.name, "why": r.why, "observed": observed, "expected": r.expected}
