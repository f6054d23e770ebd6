"""The ingest DAG under Airflow itself: a good day is published, a bad day stops with an alert.

`airflow dags test` runs collect_events >> validate_events >> publish_events in one process with
a temporary metadata DB; the source is a landing folder with one delivery per day.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from airflow_cli import ROOT, cli_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD, BAD = "2011-03-01", "2011-03-02"


def delivery(env: dict[str, str], day: str, rows: int) -> None:
    """A CSV under the configured source column names (read from the settings, not assumed)."""
    code = (
        "from propensity.core.settings import get_settings; m = get_settings().source.mapping; "
        "print(','.join([m.order_id, m.item_id, m.quantity, m.event_time, m.unit_price, m.customer_id, m.country]))"
    )
    header = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    lines = [header.stdout.strip()]
    lines += [
        f"5{i // 3:05d},2{i % 37:04d},{1 + i % 9},{day} 09:{i % 60:02d}:00,1.25,{13000 + i % 17},France"
        for i in range(rows)
    ]
    folder = Path(env["PROPENSITY_SOURCE__PATH"]) / f"date={day}"
    folder.mkdir(parents=True)
    (folder / "orders.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("airflow-validate")
    env = cli_env(
        tmp,
        {
            "PROPENSITY_ZONE_ROOT": str(tmp / "zones"),
            "PROPENSITY_CACHE_DIR": str(tmp / "cache"),
            "PROPENSITY_SOURCE__KIND": "landing",
            "PROPENSITY_SOURCE__PATH": str(tmp / "landing"),
        },
    )
    return env


# Both days in one process: Airflow's start-up (execution API, DAG sync) is paid once.
RUN_DAYS = """
import sys
import pendulum
from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).get_dag("ingest")
for day in sys.argv[2:]:
    run = dag.test(logical_date=pendulum.parse(day))
    print(f"RUN {day} {run.state}", flush=True)
"""


def run_days(env: dict[str, str], *days: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUN_DAYS, str(ROOT / "dags" / "ingest.py"), *days],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def metadata(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))


def asset_events(env: dict[str, str]) -> list[tuple[str, dict]]:
    with closing(metadata(env)) as db:
        rows = db.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        ).fetchall()
    return [(uri, json.loads(extra)) for uri, extra in rows]


def task_states(env: dict[str, str], day: str) -> dict[str, str]:
    with closing(metadata(env)) as db:
        rows = db.execute(
            "SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run r ON r.run_id = ti.run_id "
            "AND r.dag_id = ti.dag_id WHERE date(r.data_interval_start) = ?",
            (day,),
        ).fetchall()
    return dict(rows)


def test_a_good_day_is_published_and_a_bad_day_stops_with_an_alert(airflow_env):
    zones = Path(airflow_env["PROPENSITY_ZONE_ROOT"])
    delivery(airflow_env, GOOD, 40)
    delivery(airflow_env, BAD, 0)  # header only: an empty trading day, a broken export

    result = run_days(airflow_env, GOOD, BAD)

    log = result.stdout + result.stderr
    assert f"RUN {GOOD} success" in log and f"RUN {BAD} failed" in log, log[-5000:]
    summary = json.loads((zones / f"reports/validation/date={GOOD}/summary.json").read_text())
    assert summary["status"] == "passed" and summary["counts"]["validated"] == 40
    assert (zones / f"validated/events/date={GOOD}/part-0.parquet").is_file()
    assert f"Data Docs: file://{zones}/reports/data_docs/validations/events/events-{GOOD}/" in log
    assert "great_expectations" not in log  # its INFO chatter is silenced under Airflow
    # Only the good day is announced to the features DAG, with its day in the extra.
    assert asset_events(airflow_env) == [("propensity://zones/validated/events", {"day": GOOD})]

    assert "row_count_in_band: observed 0, expected {'min_value': 1}" in log
    assert task_states(airflow_env, BAD) == {
        "collect_events": "success",
        "validate_events": "failed",
        "publish_events": "upstream_failed",
    }
    assert not (zones / f"validated/events/date={BAD}").exists()
    alerts = [json.loads(x) for x in (zones / "alerts/alerts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["details"]["task_id"], a["details"]["day"]) for a in alerts] == [
        ("validation_failed", "validate_events", BAD)
    ]
    assert "row_count_in_band: observed 0" in alerts[0]["details"]["error"]
    assert alerts[0]["details"]["try_number"] == 1  # a deterministic verdict is not retried
