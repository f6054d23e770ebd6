"""The ingest DAG run by Airflow itself (`airflow dags test`), as the README shows."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from airflow_cli import AIRFLOW, cli_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    """AIRFLOW_HOME stays the repo (its airflow.cfg, dags/, plugins/); DB and zones are temporary."""
    tmp = tmp_path_factory.mktemp("airflow")
    env = cli_env(
        tmp,
        {
            "PROPENSITY_ZONE_ROOT": str(tmp / "zones"),
            "PROPENSITY_CACHE_DIR": str(tmp / "cache"),
        },
    )
    return env


def dags_test(env: dict[str, str], dag_id: str, day: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, day], env=env, capture_output=True, text=True, timeout=300
    )


def test_airflow_dags_test_ingest_writes_the_day_and_reruns_identically(airflow_env, real_data):
    first = dags_test(airflow_env, "ingest", "2011-03-01")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    part = Path(airflow_env["PROPENSITY_ZONE_ROOT"]) / "raw/events/date=2011-03-01/part-0.parquet"
    table = pq.read_table(part)
    times = table.column("event_time").to_pylist()
    assert table.num_rows == 1361  # the real file's lines on 1 March 2011 (UK time = UTC in winter)
    assert min(times) >= dt.datetime(2011, 3, 1, tzinfo=dt.UTC)
    assert max(times) < dt.datetime(2011, 3, 2, tzinfo=dt.UTC)
    digest = hashlib.sha256(part.read_bytes()).hexdigest()

    second = dags_test(airflow_env, "ingest", "2011-03-01")
    assert second.returncode == 0, second.stdout[-3000:]
    assert hashlib.sha256(part.read_bytes()).hexdigest() == digest
