"""Calibration over stored snapshots: stable days stay quiet, a shifted day alarms (drift venv CLI)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import numpy as np
import pyarrow as pa

from propensity.core.storage import open_store, write_partition
from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS


def _calibrate_cli(tmp_path, *args: str) -> dict:
    """``propensity drift-calibrate ARGS`` in the drift venv over ``tmp_path/zones``: its JSON."""
    # PYTHONFAULTHANDLER: a native crash prints every thread's Python stack to stderr (shown below).
    env = {**os.environ, "PROPENSITY_ZONE_ROOT": str(tmp_path / "zones"), "PYTHONFAULTHANDLER": "1"}
    python = os.environ.get("PROPENSITY_DRIFT_PYTHON", ".venv-drift/bin/python")
    proc = subprocess.run(
        [python, "-m", "propensity.cli", "drift-calibrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"drift-calibrate exited {proc.returncode}:\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout)


def test_calibrate_cli_over_snapshots(tmp_path) -> None:
    store = open_store(str(tmp_path / "zones"))
    rng = np.random.default_rng(0)
    days = [dt.date(2011, 6, 1), dt.date(2011, 6, 8), dt.date(2011, 6, 15), dt.date(2011, 11, 1)]
    for day in days:
        n, scale = 4_000, (1.8 if day.month == 11 else 1.0)  # the November snapshot is shifted
        table = pa.table(
            {
                "customer_id": [str(k) for k in range(n)],
                "recency_days": rng.gamma(2.0, 20.0, n) * scale,
                "orders_90d": rng.poisson(2.0, n),
                "country": ["uk"] * n,  # not a model feature: ignored
            }
        )
        write_partition(store, *SNAPSHOTS, day, table)
    result = _calibrate_cli(tmp_path, "2011-06-01", "2011-06-08", "2011-06-15", "2011-11-30")
    assert result["reference_dates"] == ["2011-06-01", "2011-06-08"]
    assert [(c["day"], c["alarm"]) for c in result["checks"]] == [("2011-06-15", False), ("2011-11-01", True)]
    assert result["checks"][1]["drifted_features"] == ["recency_days"]
    assert result["first_alarm"] == "2011-11-01" and result["alarm_rate"] == 0.5


def test_shift_start_is_read_from_activity() -> None:
    from propensity.monitoring.calibration import first_day_above_band, trailing_active_customers

    d = dt.date(2011, 10, 1)
    customer_days = {d + dt.timedelta(days=k): {f"c{k % 10}"} for k in range(20)}
    # days 0..19 each bring one of ten customers: a trailing week holds seven distinct ones
    assert trailing_active_customers(customer_days, d + dt.timedelta(days=10)) == 7
    assert trailing_active_customers(customer_days, d + dt.timedelta(days=2)) == 3  # days before d: none
    counts = {d + dt.timedelta(days=k): v for k, v in enumerate([5, 7, 6, 7, 6, 7, 8, 9])}
    start, band = first_day_above_band(counts, d, d + dt.timedelta(days=4))
    assert band == {"min": 5, "max": 7}
    assert start == d + dt.timedelta(days=6)  # day 5 equals the band's max: not above it


def test_calibrate_cli_against_a_model_reference_with_a_stable_period(tmp_path) -> None:
    from propensity.monitoring.window import write_reference

    store = open_store(str(tmp_path / "zones"))
    rng = np.random.default_rng(1)
    n = 3_000
    write_reference(
        store,
        "purchase_propensity",
        1,
        pa.table({"recency_days": rng.gamma(2.0, 20.0, n), "score": rng.random(n)}),
        eval_auc=0.7,
        feature_columns=["recency_days"],
    )
    start = dt.date(2011, 10, 1)
    for k in range(30):  # 20 stable days with 5 customers a day, then 40 a day from day 20
        day = start + dt.timedelta(days=k)
        busy = k >= 20
        customers = [f"{day.isoformat()}-{j}" for j in range(40 if busy else 5)]
        write_partition(store, *VALIDATED_EVENTS, day, pa.table({"customer_id": customers}))
        scale = 2.0 if k >= 24 else 1.0  # features move four days after activity does
        features = {
            "customer_id": [str(j) for j in range(n)],
            "recency_days": rng.gamma(2.0, 20.0, n) * scale,
        }
        write_partition(store, *SNAPSHOTS, day, pa.table(features))
    args = ["2011-10-01", "2011-10-01", "2011-10-07", "2011-10-30", "--reference-version", "1"]
    result = _calibrate_cli(tmp_path, *args, "--stable", "2011-10-07", "2011-10-20")
    assert result["reference"] == "model version 1"
    assert result["stable"]["checks"] == 14 and result["stable"]["false_alarms"] == 0
    assert result["shift"]["stable_band"] == {"min": 35, "max": 35}
    assert result["shift"]["start"] == "2011-10-21"  # the first busy day lifts the trailing week
    assert result["shift"]["first_alarm"] == "2011-10-25" and result["shift"]["delay_days"] == 4
