"""Time helpers: a run owns one UTC calendar day, and snapshots are stamped at UTC midnight."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable


def utc(ts: dt.datetime) -> dt.datetime:
    """``ts`` in UTC; a naive datetime is refused (a data interval bound must carry its zone)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: data interval bounds must carry a timezone")
    return ts.astimezone(dt.UTC)


def utc_midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of ``day``: the instant a snapshot as of ``day`` is stamped with."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def utc_day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """``[day 00:00 UTC, day + 1 00:00 UTC)``."""
    start = utc_midnight(day)
    return start, start + dt.timedelta(days=1)


def day_of_interval(start: dt.datetime, end: dt.datetime) -> dt.date:
    """The calendar day (UTC) a daily data interval covers; rejects anything but one whole day."""
    start_utc, end_utc = utc(start), utc(end)
    if end_utc - start_utc != dt.timedelta(days=1) or start_utc.time() != dt.time(0):
        raise ValueError(f"expected one whole UTC day as the data interval, got [{start_utc}, {end_utc})")
    return start_utc.date()


def plain_date(value: dt.date | dt.datetime | str) -> dt.date:
    """A plain ``datetime.date`` (Spark rejects subclasses such as ``pendulum.Date``)."""
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        value = value.date()
    return dt.date(value.year, value.month, value.day)


def date_range(first: dt.date, last: dt.date, step_days: int = 1) -> list[dt.date]:
    """``first, first + step, ...`` up to ``last`` inclusive."""
    return [first + dt.timedelta(days=i) for i in range(0, (last - first).days + 1, step_days)]


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition"
) -> None:
    """Poll ``condition`` every ``interval_s`` until it holds; TimeoutError naming ``what`` after
    ``timeout_s`` (wall-clock waits for processes and servers, never a data date)."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    poll = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,  # timed out: answer False instead of RetryError
    )
    if not poll(lambda: bool(condition())):
        raise TimeoutError(f"{what} not reached after {timeout_s:g} s")
