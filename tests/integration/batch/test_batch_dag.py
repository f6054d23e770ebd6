"""The batch_inference DAG run by Airflow itself (`airflow dags test` with the `day` Param)."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
from airflow_cli import AIRFLOW, cli_env
from batch_data import DAY, synthetic_snapshot, train_champion

from propensity.core.settings import committed_settings
from propensity.core.storage import write_partition
from propensity.core.zones import (
    SNAPSHOTS,
    zone_store,
)
from propensity.serving.deploy import deploy_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dag_skips_without_a_champion_then_scores_the_param_day(tmp_path):
    overrides = {
        "zone_root": str(tmp_path / "zones"),
        "serving": {"repository": str(tmp_path / "models")},
        "batch": {"db_url": f"sqlite:///{tmp_path}/predictions.db"},
    }
    env = cli_env(
        tmp_path,
        {
            "PROPENSITY_ZONE_ROOT": overrides["zone_root"],
            "PROPENSITY_SERVING__REPOSITORY": overrides["serving"]["repository"],
            "PROPENSITY_BATCH__DB_URL": overrides["batch"]["db_url"],
            "PROPENSITY_SPARK__MASTER": "local[1]",
        },
    )
    settings = committed_settings(**overrides)
    write_partition(zone_store(settings), *SNAPSHOTS, DAY, synthetic_snapshot(120, DAY))

    def run() -> subprocess.CompletedProcess:
        conf = json.dumps({"day": DAY.isoformat()})
        cmd = [AIRFLOW, "dags", "test", "batch_inference", DAY.isoformat(), "-c", conf]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    skipped = run()
    out = skipped.stdout + skipped.stderr
    assert skipped.returncode == 0, out[-3000:]
    assert "no champion deployed" in out and "skipped" in out.lower(), out[-3000:]
    assert not (tmp_path / "predictions.db").exists()  # nothing written, not even the schema

    deploy_model(settings, train_champion(seed=0), 4, "champion")
    scored = run()
    assert scored.returncode == 0, (scored.stdout + scored.stderr)[-3000:]
    with sqlite3.connect(tmp_path / "predictions.db") as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT customer_id), min(model_version), max(model_version), "
            "min(run_id), min(scored_for_date) FROM predictions"
        ).fetchone()
    assert rows[:4] == (120, 120, "4", "4")
    assert rows[4].startswith("manual__") and rows[5] == "2011-12-01"
