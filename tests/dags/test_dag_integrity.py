"""Every DAG imports cleanly, touches nothing at parse time, and has the expected shape."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"

# dag_id -> {task_id: downstream task ids}. The graph is part of the contract with on-call.
EXPECTED_GRAPHS: dict[str, dict[str, set[str]]] = {
    "ingest": {
        "collect_events": {"validate_events"},
        "validate_events": {"publish_events"},
        "publish_events": set(),
    },
    "drift": {
        "load_window": {"detect_drift", "write_report"},
        "detect_drift": {"decide", "write_report"},
        "decide": {"write_report", "retrain_needed", "alert_drift"},
        "write_report": {"retrain_needed", "alert_drift"},
        "retrain_needed": {"trigger_training"},
        "trigger_training": set(),
        "alert_drift": set(),
    },
    "bootstrap": {"ingest_history": {"history_features"}, "history_features": set()},
    "features": {"compute_features": {"materialize_features"}, "materialize_features": set()},
    "batch_inference": {"score_customers": set()},
    "training": {
        "choose_path": {"build_training_set", "rollback_champion"},
        "build_training_set": {"train_model"},
        "train_model": {"evaluate_model", "register_challenger", "gate_model"},
        "evaluate_model": {"register_challenger", "gate_model"},
        "register_challenger": {"deploy_shadow", "shadow_test", "gate_model", "promote_model"},
        "deploy_shadow": {"shadow_test"},
        "shadow_test": {"gate_model"},
        "gate_model": {"promote_model"},
        "promote_model": {"deploy_champion"},
        "rollback_champion": {"deploy_champion"},
        "deploy_champion": set(),
    },
}


class ParseTimeSideEffect(AssertionError):
    pass


@pytest.fixture(scope="module")
def dagbag():
    """Parse dags/ while any network connection, DB connection or mkdir raises."""
    import sqlalchemy.engine
    from airflow.dag_processing.dagbag import DagBag

    touched: list[str] = []

    def no_connect(self, address, *a, **k):
        touched.append(f"socket connect to {address}")
        raise ParseTimeSideEffect(f"DAG parse opened a connection to {address}")

    def no_db(self, *a, **k):
        touched.append("sqlalchemy connect")
        raise ParseTimeSideEffect("DAG parse opened a database connection")

    def no_mkdir(path, *a, **k):
        touched.append(f"mkdir {path}")
        raise ParseTimeSideEffect(f"DAG parse created a folder {path}")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", no_connect)
    mp.setattr(sqlalchemy.engine.Engine, "connect", no_db)
    mp.setattr(os, "mkdir", no_mkdir)
    mp.setattr(os, "makedirs", no_mkdir)
    try:
        bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
    finally:
        mp.undo()
    bag.parse_side_effects = touched
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found"


def test_nothing_connects_or_creates_folders_at_parse_time(dagbag):
    assert dagbag.parse_side_effects == []


def test_every_dag_has_tags_docs_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} needs doc_md for on-call"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"


def test_dag_ids_match_their_files(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_GRAPHS))
def test_task_graph(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    graph = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert graph == EXPECTED_GRAPHS[dag_id]


def test_ingest_runs_one_utc_day_per_logical_date(dagbag):
    import pendulum

    dag = dagbag.dags["ingest"]
    manual = dag.timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2011, 3, 1, 15, 30, tz="UTC")
    )
    assert (manual.start, manual.end) == (
        pendulum.datetime(2011, 3, 1, tz="UTC"),
        pendulum.datetime(2011, 3, 2, tz="UTC"),
    )


# Why each DAG runs as many days at once as it does (part of the contract with on-call, as the graph).
EXPECTED_MAX_ACTIVE_RUNS = {
    "ingest": 4,  # days are independent; validation bands read earlier days' summaries only
    "features": 1,  # materializations land in date order
    "batch_inference": 1,  # one swap of a day at a time
    "drift": 1,  # the cooldown of day D reads the triggers of the days before
    "training": 1,  # one champion move at a time
    "bootstrap": 1,
}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_MAX_ACTIVE_RUNS))
def test_max_active_runs(dagbag, dag_id):
    assert dagbag.dags[dag_id].max_active_runs == EXPECTED_MAX_ACTIVE_RUNS[dag_id]
