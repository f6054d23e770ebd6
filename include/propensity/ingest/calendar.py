"""The source's trading calendar: on which days the business is closed, and why.

A day without a single line is a broken export unless the business was closed. Closed days
come from configuration (``source.calendar``): weekdays it never trades, the public holidays
of its country and subdivision (the maintained ``holidays`` library), days relative to
Easter, and configured closures (single days and inclusive ranges).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import holidays
from dateutil.easter import easter

from propensity.core.settings import TradingCalendar

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@lru_cache(maxsize=64)
def _public_holidays(country: str, subdivision: str | None, year: int) -> dict[dt.date, str]:
    try:
        table = holidays.country_holidays(country, subdiv=subdivision, years=year)
    except NotImplementedError as exc:
        raise ValueError(
            f"source.calendar: no public holidays known for country={country!r} subdivision={subdivision!r}"
        ) from exc
    return dict(table.items())


def closed_reason(calendar: TradingCalendar, day: dt.date) -> str | None:
    """Why the business was closed on ``day`` (``None``: a trading day)."""
    if day in calendar.closures:
        return "configured closure"
    for first, last in calendar.closure_ranges:
        if first <= day <= last:
            return f"configured closure {first.isoformat()}..{last.isoformat()}"
    if day.weekday() in calendar.closed_weekdays:
        return f"never trades on {_WEEKDAYS[day.weekday()]}s"
    if calendar.country:
        name = _public_holidays(calendar.country, calendar.subdivision, day.year).get(day)
        if name:
            return f"public holiday: {name}"
    offset = (day - easter(day.year)).days
    if offset in calendar.easter_offsets:
        return "Easter Sunday" if offset == 0 else f"Easter Sunday {offset:+d} days"
    return None


def is_trading_day(calendar: TradingCalendar, day: dt.date) -> bool:
    return closed_reason(calendar, day) is None
