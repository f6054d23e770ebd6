"""fail_fast: errors a retry cannot fix fail the task at once; transient ones keep their retries."""

from __future__ import annotations

import pytest
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException

from propensity.core.dags import START_DATE, default_args, fail_fast
from propensity.core.errors import DataError
from propensity.features.job import FeatureInputPending
from propensity.ingest.sources import SourceError
from propensity.ingest.validate import ValidationFailed
from propensity.training.dataset import TrainingSetError


def build(error: BaseException):
    @dag(schedule=None, start_date=START_DATE, catchup=False, default_args=default_args())
    def probe() -> None:
        @task
        def work(data_interval_start=None) -> str:
            raise error

        @task.branch
        def choose() -> str:
            raise error

        choose() >> work()

    return fail_fast(probe())


@pytest.mark.parametrize(
    "error",
    [
        SourceError("x.csv: missing column 'sold_at'"),
        ValidationFailed("row_count_in_band: observed 0", {}),
        TrainingSetError("no feature snapshot for cutoff 1999-01-04"),
        DataError("no validated events"),
    ],
)
def test_deterministic_errors_fail_at_once_naming_the_cause(error):
    for name, t in build(error).task_dict.items():
        with pytest.raises(AirflowFailException, match="not retried") as failed:
            t.python_callable()
        assert str(error) in str(failed.value) and failed.value.__cause__ is error, name


@pytest.mark.parametrize(
    "error", [ConnectionError("redis down"), OSError("s3 timeout"), FeatureInputPending("today not yet")]
)
def test_transient_errors_are_raised_as_they_are_for_the_retries(error):
    t = build(error).task_dict["work"]
    with pytest.raises(type(error)) as raised:
        t.python_callable()
    assert raised.value is error
    assert t.retries == 2 and t.retry_exponential_backoff


def test_settings_that_do_not_validate_fail_at_once(tmp_path):
    from propensity.core.settings import committed_settings

    def load():
        committed_settings(zone_root=str(tmp_path), source={"duplicates": "sometimes"})

    @dag(schedule=None, start_date=START_DATE, catchup=False)
    def probe() -> None:
        task(load, task_id="load")()

    t = fail_fast(probe()).task_dict["load"]
    with pytest.raises(AirflowFailException, match="duplicates"):
        t.python_callable()


def test_every_dag_starts_early_and_wraps_its_tasks():
    from airflow.dag_processing.dagbag import DagBag

    from propensity.core.settings import project_home

    bag = DagBag(dag_folder=str(project_home() / "dags"), safe_mode=False)
    assert not bag.import_errors and len(bag.dags) == 6
    for dag_id, d in bag.dags.items():
        assert d.start_date == START_DATE and not d.catchup, dag_id
        for t in d.tasks:
            fn = getattr(t, "python_callable", None)
            if fn is not None and t.task_type != "_PythonExternalDecoratedOperator":
                assert getattr(fn, "__propensity_fail_fast__", False), (dag_id, t.task_id)
            assert t.retry_exponential_backoff, (dag_id, t.task_id)


def test_a_tasks_return_value_is_strict_json_for_the_api_server():
    import json

    import numpy as np

    # What train_model returned when BG/NBD did not converge: NaN, which Airflow's API server
    # refuses ("Out of range float values are not JSON compliant"), failing the task after its work.
    returned = {
        "eval_auc": 0.61,
        "baselines": {"recency": 0.54, "bgnbd": float("nan"), "rfm_xgb": np.float64(0.75)},
        "metrics": [np.float32("inf"), np.float32(0.5), np.int64(3)],
        "lineage": ("2011-01-24", None),
    }

    @dag(schedule=None, start_date=START_DATE, catchup=False)
    def probe() -> None:
        @task
        def train() -> dict:
            return returned

        train()

    got = fail_fast(probe()).task_dict["train"].python_callable()
    assert got == {
        "eval_auc": 0.61,
        "baselines": {"recency": 0.54, "bgnbd": None, "rfm_xgb": 0.75},
        "metrics": [None, 0.5, 3],
        "lineage": ("2011-01-24", None),
    }
    json.dumps(got, allow_nan=False, default=int)  # strict JSON: raises on any NaN left

    from collections import namedtuple

    from propensity.core.dags import xcom_safe

    pair = namedtuple("pair", "auc rows")
    assert xcom_safe([pair(float("nan"), 3)]) == [pair(None, 3)]
