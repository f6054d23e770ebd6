"""The `drift` DAG's wiring: the external-python detector, the gated trigger (its task graph is
asserted with every DAG's in tests/dags/test_dag_integrity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[3] / "dags"


@pytest.fixture(scope="module")
def drift_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "drift.py"), safe_mode=False)
    assert bag.import_errors == {}
    return bag.dags["drift"]


def test_detector_runs_in_the_drift_venv_and_the_trigger_is_gated(drift_dag) -> None:
    import os

    detect = drift_dag.get_task("detect_drift")
    assert type(detect).__name__ == "_PythonExternalDecoratedOperator"
    assert detect.python == os.environ.get(
        "PROPENSITY_DRIFT_PYTHON", str(Path(__file__).resolve().parents[3] / ".venv-drift" / "bin" / "python")
    )
    assert type(drift_dag.get_task("retrain_needed")).__name__ == "_ShortCircuitDecoratedOperator"
    trigger = drift_dag.get_task("trigger_training")
    assert trigger.trigger_dag_id == "training" and trigger.skip_when_already_exists
    assert drift_dag.max_active_runs == 1
    assert all(t.retries >= 2 for t in drift_dag.tasks)
    assert {"propensity", "drift"} <= set(drift_dag.tags)
