"""Which snapshot dates a features DAG run computes: from asset events, or from the interval."""

from __future__ import annotations

import datetime as dt

import pytest

from propensity.features.job import run_dates


def test_asset_events_give_the_day_after_each_validated_day():
    assert run_dates(["2011-03-05", "2011-03-04", "2011-03-05"], None) == [
        dt.date(2011, 3, 5),
        dt.date(2011, 3, 6),
    ]


def test_time_runs_and_backfills_use_the_interval_end():
    end = dt.datetime(2011, 3, 6, tzinfo=dt.UTC)
    assert run_dates([], end) == [dt.date(2011, 3, 6)]
    # The same instant in another zone is the same snapshot.
    paris = dt.timezone(dt.timedelta(hours=1))
    assert run_dates([], dt.datetime(2011, 3, 6, 1, tzinfo=paris)) == [dt.date(2011, 3, 6)]


def test_a_run_without_dates_is_refused():
    with pytest.raises(ValueError, match="data interval"):
        run_dates([], None)
    with pytest.raises(ValueError, match="not a UTC midnight"):
        run_dates([], dt.datetime(2011, 3, 6, 6, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def features_timetable():
    """The features DAG's timetable as the scheduler sees it: serialized and read back."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    dags = Path(__file__).resolve().parents[3] / "dags" / "features.py"
    dag = DagBag(dag_folder=str(dags), safe_mode=False).dags["features"]
    return DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable


def test_manual_and_scheduled_runs_of_a_date_compute_the_same_snapshot(features_timetable):
    """`airflow dags test features 2011-03-02` and the scheduled run for 2011-03-02 agree."""
    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction

    day = pendulum.datetime(2011, 3, 2, tz="UTC")
    manual = features_timetable.infer_manual_data_interval(run_after=day)
    scheduled = features_timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(day.subtract(days=1), day),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert manual == scheduled.data_interval == DataInterval(day, day.add(days=1))
    assert scheduled.logical_date == day
    # A run for D covers day D and computes the snapshot as of D + 1: after D's events.
    assert run_dates([], manual.end) == [dt.date(2011, 3, 3)]
    # A manual run later in the day still owns that day, not the one that ended before it.
    assert features_timetable.infer_manual_data_interval(run_after=day.add(hours=15)) == manual
