"""Calibration over stored snapshots: stable days stay quiet, a shifted day alarms (drift venv CLI)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import numpy as np
import pyarrow as pa

from propensity.storage import open_store, write_partition


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
        write_partition(store, "offline", "customer_features", day, table)
    env = {**os.environ, "PROPENSITY_ZONE_ROOT": str(tmp_path / "zones")}
    python = os.environ.get("PROPENSITY_DRIFT_PYTHON", ".venv-drift/bin/python")
    args = ["2011-06-01", "2011-06-08", "2011-06-15", "2011-11-30"]
    proc = subprocess.run(
        [python, "-m", "propensity.drift", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["reference_dates"] == ["2011-06-01", "2011-06-08"]
    assert [(c["day"], c["alarm"]) for c in result["checks"]] == [("2011-06-15", False), ("2011-11-01", True)]
    assert result["checks"][1]["drifted_features"] == ["recency_days"]
    assert result["first_alarm"] == "2011-11-01" and result["alarm_rate"] == 0.5
