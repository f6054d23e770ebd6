"""The whole loop on a second retailer, by configuration alone: bootstrap, training, gate, deploy,
batch, API and drift on the synthetic retailer (tests/fixtures/synthetic_retailer.py).

Nothing but configuration changes from the Online Retail demo: the retailer's YAML overlay
(`PROPENSITY_CONFIG_OVERLAY=tests/fixtures/synthetic_retailer.yaml`: other column names, a US
timezone and holidays, no order ids, amounts instead of unit prices, Parquet) and where its file
is. Every stage runs as Airflow runs it (`airflow dags test`, recorded in a temporary metadata DB),
then the API (`propensity serve`) answers. The retailer's ids are integers with leading zeros
("000123"): the same customer in the predictions table and at the API, never "123".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from e2e_airflow import AIRFLOW, ROOT, TRAINING_OVERRIDES, free_port, pipeline_env, run, stop_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "e2e-synthetic-key"


def xcom(env: dict[str, str], dag_id: str, task_id: str):
    """The latest return value of a task, read from the run's Airflow DB (JSON in Airflow 3)."""
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///").split("?")[0]
    with closing(sqlite3.connect(db)) as con:
        row = con.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id),
        ).fetchone()
    if row is None:
        return None
    value = row[0]
    value = json.loads(value) if isinstance(value, (str, bytes)) else value
    return json.loads(value) if isinstance(value, str) else value


def states(env: dict[str, str], dag_id: str) -> dict[str, str]:
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///").split("?")[0]
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr ON ti.dag_id = dr.dag_id "
            "AND ti.run_id = dr.run_id WHERE dr.dag_id = ? ORDER BY dr.id",
            (dag_id,),
        ).fetchall()
    return dict(rows)  # the latest run's state per task (later rows win)


def dags_test(env: dict[str, str], dag_id: str, day: dt.date, conf: dict | None = None, timeout=900):
    cmd = [AIRFLOW, "dags", "test", dag_id, day.isoformat()]
    if conf is not None:
        cmd += ["-c", json.dumps(conf)]
    return run(cmd, env, timeout=timeout)


@pytest.fixture(scope="module")
def loop(tmp_path_factory, synthetic_retailer) -> dict:
    """The retailer generated, then bootstrap -> training -> batch through `airflow dags test`."""
    home = tmp_path_factory.mktemp("synthetic-loop")
    # 13 months, 1,200 members: the fixture's shape (holidays, promotion, drift) made shorter; long
    # enough for every key segment of the gate (a tenure of 270 days and more at evaluation).
    spec = dataclasses.replace(synthetic_retailer.RetailerSpec(), customers=1200, days=400, drift_days=60)
    path = synthetic_retailer.write(synthetic_retailer.generate(spec), home / "retailer.parquet")
    env = {k: v for k, v in pipeline_env(home).items() if k not in TRAINING_OVERRIDES}
    env |= {
        "PROPENSITY_CONFIG_OVERLAY": str(ROOT / "tests" / "fixtures" / "synthetic_retailer.yaml"),
        "PROPENSITY_SOURCE__PATH": str(path),
        "PROPENSITY_VALIDATION__DATA_DOCS": "false",
        "PROPENSITY_TRAINING__BOOTSTRAP_SAMPLES": "100",
        # ~60 customers abroad per evaluation cutoff at this size: the segment is judged from 50 rows.
        "PROPENSITY_TRAINING__SEGMENT_MIN_SIZE": "50",
        "PROPENSITY_API_KEYS": API_KEY,
        "PROPENSITY_SERVING__PORT": str(free_port()),
    }
    run([AIRFLOW, "db", "migrate"], env, timeout=300)

    last_day = spec.end - dt.timedelta(days=1)
    drift_from = spec.end - dt.timedelta(days=spec.drift_days)
    training_as_of = drift_from - dt.timedelta(days=1)
    # Bootstrap's days come from the data (first_day/last_day empty): only the drift window is said.
    dags_test(env, "bootstrap", last_day, {"daily_snapshots_from": drift_from.isoformat()})
    dags_test(
        env, "training", training_as_of, {"training_end_date": training_as_of.isoformat(), "reason": "e2e"}
    )
    scored_for = spec.end  # the snapshot as of the day after the last one
    dags_test(env, "batch_inference", scored_for, {"day": scored_for.isoformat()})
    return {
        "env": env,
        "home": home,
        "spec": spec,
        "table": pq.read_table(path),
        "training_as_of": training_as_of,
        "drift_from": drift_from,
        "scored_for": scored_for,
    }


def test_bootstrap_covers_the_data_by_itself(loop):
    spec, env = loop["spec"], loop["env"]
    ingest = xcom(env, "bootstrap", "ingest_history")
    assert ingest["failed_days"] == {}
    assert ingest["days"] == spec.days
    # Closed on Thanksgiving and Christmas Day (US holidays from the overlay's calendar) only.
    assert len(ingest["closed_empty_days"]) == len(spec.closures())
    counts = ingest["counts"]
    assert counts["raw"] == loop["table"].num_rows
    # No order ids: identical lines are two purchases, none removed (source.duplicates: auto).
    assert counts["duplicates_removed"] == 0
    assert counts["raw"] == counts["validated"] + counts["quarantined"]
    feats = xcom(env, "bootstrap", "history_features")
    assert feats["last"] == spec.end.isoformat()


def test_training_gates_and_deploys_the_first_champion(loop):
    env = loop["env"]
    got = states(env, "training")
    for task_id in ("build_training_set", "train_model", "gate_model", "promote_model", "deploy_champion"):
        assert got.get(task_id) == "success", (task_id, got)
    built = xcom(env, "training", "build_training_set")
    assert built["as_of"] == loop["training_as_of"].isoformat() and built["rows"] > 3000
    gate = xcom(env, "training", "gate_model")
    assert gate["passed"], gate
    deployed = xcom(env, "training", "deploy_champion")
    assert deployed["deployed"] and str(deployed["champion"]) == "1", deployed


def test_batch_scores_every_customer_under_its_own_id(loop):
    env = loop["env"]
    assert states(env, "batch_inference").get("score_customers") == "success"
    db = Path(env["PROPENSITY_BATCH__DB_URL"].removeprefix("sqlite:///"))
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT customer_id, score FROM predictions WHERE scored_for_date = ?",
            (loop["scored_for"].isoformat(),),
        ).fetchall()
    members = set(loop["table"].column("member_id").drop_null().to_pylist())
    ids = [cid for cid, _ in rows]
    assert len(ids) > 300 and set(ids) <= members  # "000123", never "123"
    assert all(cid.startswith("0") for cid in ids)
    loop["batch_scores"] = dict(rows)


def test_the_api_answers_leading_zero_ids_as_the_batch_scored_them(loop):
    env = loop["env"]
    if "batch_scores" not in loop:
        pytest.skip("the batch test did not run")
    port = env["PROPENSITY_SERVING__PORT"]
    server = subprocess.Popen(
        [sys.executable, "-m", "propensity.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError("the API never became ready")
        headers = {"X-API-Key": API_KEY}
        some = sorted(loop["batch_scores"])[:20]
        for cid in some:
            r = httpx.post(f"{url}/predict", json={"customer_id": cid}, headers=headers, timeout=10)
            assert r.status_code == 200, (cid, r.text)
            body = r.json()
            answer = body["predictions"][0] if "predictions" in body else body
            assert answer["customer_id"] == cid
            # Same features (the snapshot the batch scored is the one online), same model.
            assert answer["score"] == pytest.approx(loop["batch_scores"][cid], abs=1e-5)
        stripped = some[0].lstrip("0")
        assert stripped not in loop["batch_scores"]
        r = httpx.post(f"{url}/predict", json={"customer_id": stripped}, headers=headers, timeout=10)
        assert r.status_code == 404, r.text  # "123" is not customer "000123"
    finally:
        stop_group(server, grace=30)


def test_drift_flags_the_promotion_and_asks_for_training(loop):
    env, spec = loop["env"], loop["spec"]
    day = spec.end - dt.timedelta(days=1)
    dags_test(env, "drift", day)
    verdict = xcom(env, "drift", "decide")
    assert verdict["drift"], verdict
    assert states(env, "drift").get("trigger_training") == "success"
