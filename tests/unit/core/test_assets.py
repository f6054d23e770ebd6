"""The events a run must take beyond the ones Airflow gave it (propensity.core.assets)."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from propensity.core.assets import left_behind, newest_timestamp, values

T0 = dt.datetime(2026, 12, 7, 23, 6, tzinfo=dt.UTC)


class Ev(NamedTuple):
    timestamp: dt.datetime
    extra: dict | None


def at(seconds: int, **extra) -> Ev:
    return Ev(T0 + dt.timedelta(seconds=seconds), extra)


def test_values_flattens_lists_keeps_first_order_and_skips_events_without_the_key():
    events = [at(0, dates=["2011-11-03", "2011-11-02"]), at(1, day="x"), at(2, dates="2011-11-02"), at(3)]
    assert values(events, "dates") == ["2011-11-03", "2011-11-02"]
    assert values(events, "day") == ["x"]


def test_the_event_merged_into_a_waiting_queue_record_is_left_behind():
    # What the cluster recorded: the run was created for the 11-02 event (queue record of
    # 23:06:19) only after the previous run finished; the 11-03 event of 23:06:33 went to no run.
    consumed = [at(19, day="2011-11-02")]
    later = [at(19, day="2011-11-02"), at(33, day="2011-11-03")]
    assert left_behind(consumed, later, "day") == ["2011-11-03"]


def test_an_event_a_later_output_covers_is_not_done_again_but_an_older_output_does_not_cover():
    consumed = [at(10, day="2011-11-01")]
    later = [at(20, day="2011-11-02"), at(30, day="2011-11-03"), at(40, day="2011-11-04")]
    done = [
        at(35, days=["2011-11-01", "2011-11-02", "2011-11-03"]),  # after 11-02 and 11-03 were published
        at(25, days=["2011-11-04"]),  # before 11-04 was (re)published: stale
    ]
    assert left_behind(consumed, later, "day", done=done, done_key="days") == ["2011-11-04"]


def test_a_republished_day_is_taken_again():
    consumed = [at(10, day="2011-11-05")]
    later = [at(50, day="2011-06-01")]  # an on-call re-ingest of an old day after this run's events
    assert left_behind(consumed, later, "day") == ["2011-06-01"]


def test_a_run_without_asset_events_takes_nothing_more():
    assert left_behind([], [at(5, day="2011-11-03")], "day") == []
    assert newest_timestamp([]) is None
    assert newest_timestamp([at(3), at(9)]) == (T0 + dt.timedelta(seconds=9)).isoformat()
