"""Which snapshot dates a features DAG run computes: from asset events, or from the interval."""

from __future__ import annotations

import datetime as dt

import pytest

from propensity.features import run_dates


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
