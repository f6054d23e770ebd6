"""DAG start dates never gate business dates; a failure a retry cannot fix fails at once.

A small synthetic retailer dated 1998, by configuration alone (its YAML overlay): `airflow dags
test ingest D` for a day of it runs; a day the export does not cover, and a training date with
too little history, fail on their first try with the reason (never "success, nothing ran",
never three tries of the same error).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from airflow_cli import AIRFLOW, ROOT, cli_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = dt.date(1998, 6, 1)


@pytest.fixture(scope="module")
def env(tmp_path_factory, synthetic_retailer) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("dates")
    spec = dataclasses.replace(
        synthetic_retailer.RetailerSpec(), customers=150, start=START, days=60, drift_days=10
    )
    path = synthetic_retailer.write(synthetic_retailer.generate(spec), tmp / "retailer.parquet")
    return cli_env(
        tmp,
        {
            "PROPENSITY_CONFIG_OVERLAY": str(ROOT / "tests" / "fixtures" / "synthetic_retailer.yaml"),
            "PROPENSITY_SOURCE__PATH": str(path),
            "PROPENSITY_ZONE_ROOT": str(tmp / "zones"),
            "PROPENSITY_CACHE_DIR": str(tmp / "cache"),
            "PROPENSITY_VALIDATION__DATA_DOCS": "false",
            "PROPENSITY_TRAINING__MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "PROPENSITY_TRAINING__AUDIT_DB_URL": f"sqlite:///{tmp}/audit.db",
            "PROPENSITY_FEATURES__REGISTRY": str(tmp / "registry.db"),
            "PROPENSITY_FEATURES__SQLITE_PATH": str(tmp / "online.db"),
        },
    )


def dags_test(env: dict[str, str], dag_id: str, day: dt.date, conf: dict | None = None):
    cmd = [AIRFLOW, "dags", "test", dag_id, day.isoformat()]
    if conf:
        cmd += ["-c", json.dumps(conf)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def tries(env: dict[str, str], dag_id: str, day: dt.date) -> tuple[dict[str, tuple[str, int]], int]:
    """({task_id: (state, try_number)} of the run of ``day``, earlier tries Airflow kept of the DAG)."""
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT ti.task_id, ti.state, ti.try_number FROM task_instance ti JOIN dag_run dr "
            "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
            "WHERE dr.dag_id = ? AND date(dr.logical_date) = ?",
            (dag_id, day.isoformat()),
        ).fetchall()
        history = con.execute(
            "SELECT count(*) FROM task_instance_history WHERE dag_id = ?", (dag_id,)
        ).fetchone()[0]
    return {task: (state, n) for task, state, n in rows}, history


def test_a_day_of_1998_runs(env):
    day = START + dt.timedelta(days=20)
    done = dags_test(env, "ingest", day)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got, _ = tries(env, "ingest", day)
    assert {t: s for t, (s, _) in got.items()} == {
        "collect_events": "success",
        "validate_events": "success",
        "publish_events": "success",
    }
    part = Path(env["PROPENSITY_ZONE_ROOT"]) / f"validated/events/date={day}/part-0.parquet"
    assert part.is_file()


def test_a_day_the_export_does_not_cover_fails_on_its_first_try(env):
    day = START - dt.timedelta(days=31)
    done = dags_test(env, "ingest", day)
    output = done.stdout + done.stderr
    assert f"has nothing for {day}" in output and "not retried" in output, output[-4000:]
    got, earlier = tries(env, "ingest", day)
    assert got["collect_events"] == ("failed", 1)
    assert earlier == 0  # no try before the failing one: nothing was retried
    assert "validate_events" not in got or got["validate_events"][0] != "success"


def test_training_before_the_history_fails_loudly_at_once(env):
    day = START + dt.timedelta(days=21)
    done = dags_test(env, "training", day, {"training_end_date": day.isoformat()})
    output = done.stdout + done.stderr
    # With the 1998 day ingested (the first test): too little history; alone: no validated events.
    validated = (Path(env["PROPENSITY_ZONE_ROOT"]) / "validated" / "events").is_dir()
    reason = "matured weekly cutoffs" if validated else "no validated events"
    assert reason in output and "not retried" in output, output[-4000:]
    got, earlier = tries(env, "training", day)
    assert got["build_training_set"] == ("failed", 1)
    assert earlier == 0
    assert all(state != "success" for t, (state, _) in got.items() if t != "choose_path")
