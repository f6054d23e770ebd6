"""Airflow Assets, defined once and imported by producer and consumer DAGs, and the events a run
must take beyond the ones Airflow gave it.

An event on ``validated_events`` carries ``extra={"day": "YYYY-MM-DD"}``: the day whose
partition was published. An event on ``customer_features`` carries
``extra={"as_of": "YYYY-MM-DD", "dates": [...], "days": [...]}``: the newest snapshot date
materialized, every snapshot date of that run, and the validated days they were computed from.

**Events Airflow consumes for no run** (measured on the native cluster, Airflow 3.3): an
asset-triggered run consumes the events up to the moment its queue record was *created*, and it
is only created when the consumer has room (``max_active_runs``). An event that arrives while the
record waits is merged into it (one record per asset and consumer) and falls after the window of
the run that record makes: no run takes it until another event comes. The last day of an on-call
backfill was never featurized or scored. :func:`left_behind` names those events' values: every
event published after the newest one the run consumed that no later output already covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from airflow.sdk import Asset

validated_events = Asset("propensity://zones/validated/events", group="propensity")
customer_features = Asset("propensity://offline/customer_features", group="propensity")


class Event(Protocol):
    timestamp: Any  # datetime
    extra: dict | None


def values(events: Iterable[Event], key: str) -> list[str]:
    """``extra[key]`` of every event (a list value contributes each item), first seen first."""
    out: list[str] = []
    for event in events:
        value = (event.extra or {}).get(key)
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            if item not in out:
                out.append(str(item))
    return out


def left_behind(
    consumed: Sequence[Event],
    later: Iterable[Event],
    key: str,
    done: Iterable[Event] = (),
    done_key: str = "",
) -> list[str]:
    """``extra[key]`` of the ``later`` events (published after the newest of ``consumed``) that no
    ``done`` event (an output published after it, ``extra[done_key]`` listing the value) covers.

    ``later`` and ``done`` come from ``inlet_events[asset].after(newest consumed)``; an event the
    next run consumes too is done twice, with the same result (every output is a function of its
    date), never left out.
    """
    if not consumed:
        return []
    newest = max(e.timestamp for e in consumed)
    outputs = [(e.timestamp, set(values([e], done_key))) for e in done] if done_key else []
    out: list[str] = []
    for event in later:
        if event.timestamp <= newest:
            continue
        for value in values([event], key):
            covered = any(ts > event.timestamp and value in vals for ts, vals in outputs)
            if not covered and value not in out:
                out.append(value)
    return out


def newest_timestamp(events: Sequence[Event]) -> str | None:
    """The ISO timestamp ``inlet_events[...].after()`` takes: the newest of ``events``."""
    return max(e.timestamp for e in events).isoformat() if events else None


def run_values(
    triggering_asset_events: Any,
    inlet_events: Any,
    asset: Asset,
    key: str,
    *,
    fallback_key: str | None = None,
    done_asset: Asset | None = None,
    done_key: str = "",
) -> tuple[list[str], list[str]]:
    """What an asset-triggered task works on: ``extra[key]`` of the events Airflow gave it (else
    ``extra[fallback_key]``), and apart, those of the events it was not given (:func:`left_behind`:
    ``asset`` and ``done_asset`` must be inlets of the task). A run without events gets ([], [])."""
    consumed = [event for events in (triggering_asset_events or {}).values() for event in events]
    given = values(consumed, key) or (values(consumed, fallback_key) if fallback_key else [])
    if not consumed:
        return given, []
    after = newest_timestamp(consumed)
    done = inlet_events[done_asset].after(after) if done_asset is not None else ()
    later = inlet_events[asset].after(after)
    left = [v for v in left_behind(consumed, later, key, done=done, done_key=done_key) if v not in given]
    return given, left
