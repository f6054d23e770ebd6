"""Calibration of the drift thresholds on stored snapshots (drift venv): false alarms over stable
weeks, and the detection delay of a shift whose start is read from the data itself.

``propensity drift-calibrate`` runs it (see the README's "Drift" section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS
from propensity.monitoring.detectors import data_drift

# Snapshot columns that are not model inputs: keys, timestamps, and the evaluation segment.
NON_FEATURES = ("customer_id", "event_timestamp", "country")


def calibrate(
    settings: Any,
    reference_dates: Sequence[Any],
    check_dates: Sequence[Any],
    *,
    reference_version: int | None = None,
    stable: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Data-drift verdicts of each check date's snapshot against a reference.

    The reference is the pooled snapshots of ``reference_dates``, or with ``reference_version``
    the stored reference of that model version (what the drift DAG compares with). For
    calibration of the thresholds on real data: the alarm rate over stable check dates is the
    false-alarm rate, and the first alarming date of a known shift its detection delay. Verdicts
    are per day without the cooldown (which only spaces triggers out).

    With ``stable`` (first, last day of a period known to be stable) the result also says how many
    stable checks alarmed, and when a shift started by the data itself (:func:`activity_shift_start`),
    with the delay from that start to the first alarm after it.
    """
    import datetime as dt

    import pyarrow as pa

    from propensity.core.storage import open_store, read_partition
    from propensity.monitoring.policy import decide
    from propensity.monitoring.window import model_name, read_reference

    store = open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    policy = settings.drift
    params = policy.model_dump()

    columns: list[str] | None = None  # the model's monitored features, as the drift DAG picks them

    def features_of(table: pa.Table) -> dict[str, np.ndarray]:
        names = columns if columns is not None else [c for c in table.column_names if c not in NON_FEATURES]
        return {
            c: table.column(c).to_numpy(zero_copy_only=False)
            for c in names
            if c in table.column_names and c not in policy.exclude_features
        }

    if reference_version is not None:
        table, meta = read_reference(store, model_name(settings), reference_version)
        columns = list(meta["feature_columns"])
        reference = features_of(table)
    else:
        reference = features_of(
            pa.concat_tables([read_partition(store, *SNAPSHOTS, d) for d in reference_dates])
        )
    rows = []
    for day in check_dates:
        result = data_drift(
            reference,
            features_of(read_partition(store, *SNAPSHOTS, day)),
            categorical=params["categorical_features"],
            numeric_test=params["numeric_test"],
            correction=params["correction"],
            p_val=params["p_val"],
            effect_size=params["effect_size"],
            psi_threshold=params["psi_threshold"],
            wasserstein_threshold=params["wasserstein_threshold"],
            bins=params["psi_bins"],
        )
        verdict = decide({"data": {"snapshot": result}}, policy, day)
        worst = max(result["features"].items(), key=lambda kv: kv[1]["psi"])
        rows.append(
            {
                "day": day.isoformat(),
                "alarm": verdict["trigger"],
                "drifted_features": result["drifted_features"],
                "max_psi": worst[1]["psi"],
                "max_psi_feature": worst[0],
            }
        )
    alarms = [r for r in rows if r["alarm"]]
    out: dict[str, Any] = {
        "reference": f"model version {reference_version}"
        if reference_version is not None
        else "pooled snapshots",
        "reference_dates": [d.isoformat() for d in reference_dates] if reference_version is None else [],
        "checks": rows,
        "alarm_rate": len(alarms) / max(len(rows), 1),
        "first_alarm": alarms[0]["day"] if alarms else None,
    }
    if stable is not None:
        first, last = (d.isoformat() for d in stable)
        in_stable = [r for r in rows if first <= r["day"] <= last]
        start, band = activity_shift_start(store, stable[0], stable[1], max(check_dates))
        after = [r for r in alarms if start is not None and r["day"] >= start.isoformat()]
        out["stable"] = {
            "from": first,
            "to": last,
            "checks": len(in_stable),
            "false_alarms": sum(r["alarm"] for r in in_stable),
            "max_psi": max((r["max_psi"] for r in in_stable), default=None),
        }
        out["shift"] = {
            "definition": "first day after the stable period whose trailing 7-day count of distinct "
            "customers exceeds every such count of the stable period",
            "stable_band": band,
            "start": start.isoformat() if start else None,
            "first_alarm": after[0]["day"] if after else None,
            "delay_days": (dt.date.fromisoformat(after[0]["day"]) - start).days if after else None,
        }
    return out


def trailing_active_customers(customer_days: Mapping[Any, set[str]], day: Any, window_days: int = 7) -> int:
    """Distinct customers with an event in the ``window_days`` days ending on ``day`` (inclusive)."""
    import datetime as dt

    seen: set[str] = set()
    for k in range(window_days):
        seen |= customer_days.get(day - dt.timedelta(days=k), set())
    return len(seen)


def first_day_above_band(
    counts: Mapping[Any, int], stable_from: Any, stable_to: Any
) -> tuple[Any | None, dict[str, int]]:
    """(first day after ``stable_to`` whose count exceeds the stable period's maximum, the band)."""
    stable = [v for d, v in counts.items() if stable_from <= d <= stable_to]
    if not stable:
        raise ValueError(f"no counts in the stable period {stable_from}..{stable_to}")
    band = {"min": min(stable), "max": max(stable)}
    later = sorted(d for d in counts if d > stable_to and counts[d] > band["max"])
    return (later[0] if later else None), band


def activity_shift_start(
    store: Any, stable_from: Any, stable_to: Any, until: Any
) -> tuple[Any, dict[str, int]]:
    """When a shift in activity began, read from the validated events rather than a calendar.

    The trailing 7-day count of distinct customers is computed for each day from ``stable_from``
    to ``until``; the start is the first day after the stable period above its maximum.
    """
    import datetime as dt

    import pyarrow.compute as pc

    from propensity.core.storage import list_partitions, read_partition

    first = stable_from - dt.timedelta(days=6)
    customer_days: dict[Any, set[str]] = {}
    for day in list_partitions(store, *VALIDATED_EVENTS):
        if first <= day <= until:
            ids = read_partition(store, *VALIDATED_EVENTS, day).column("customer_id")
            customer_days[day] = set(pc.drop_null(ids).to_pylist())
    counts = {}
    day = stable_from
    while day <= until:
        counts[day] = trailing_active_customers(customer_days, day)
        day += dt.timedelta(days=1)
    return first_day_above_band(counts, stable_from, stable_to)
