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


class _Accessor:
    """inlet_events[asset] as the Task SDK gives it: ``.after(iso)`` -> the events after that time."""

    def __init__(self, events: list[Ev], calls: list[str]) -> None:
        self.events, self.calls = events, calls

    def after(self, iso: str) -> list[Ev]:
        self.calls.append(iso)
        return [e for e in self.events if e.timestamp > dt.datetime.fromisoformat(iso)]


def test_run_values_reads_the_inlets_after_the_newest_given_event_and_keeps_given_and_left_apart():
    from propensity.core.assets import customer_features, run_values, validated_events

    calls: list[str] = []
    published = [at(10, day="2011-11-01"), at(19, day="2011-11-02"), at(33, day="2011-11-03")]
    outputs = [at(40, days=["2011-11-02"])]  # a later run took 11-02 again, not 11-03
    inlets = {
        validated_events: _Accessor(published, calls),
        customer_features: _Accessor(outputs, calls),
    }
    given = {validated_events: published[:2]}
    days, left = run_values(
        given, inlets, validated_events, "day", done_asset=customer_features, done_key="days"
    )
    assert (days, left) == (["2011-11-01", "2011-11-02"], ["2011-11-03"])
    assert set(calls) == {published[1].timestamp.isoformat()}
    # A scheduled or manual run (no events) reads nothing more.
    assert run_values(None, inlets, validated_events, "day") == ([], [])
    # The older producer's key, when the events carry no "dates".
    as_of, _ = run_values(
        {customer_features: [at(5, as_of="2011-11-04")]},
        inlets,
        customer_features,
        "dates",
        fallback_key="as_of",
    )
    assert as_of == ["2011-11-04"]
