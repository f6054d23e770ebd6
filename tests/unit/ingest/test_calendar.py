"""The trading calendar explains closed days; ordinary days are open."""

from __future__ import annotations

import datetime as dt

import pytest

from propensity.core.settings import TradingCalendar
from propensity.ingest.calendar import closed_reason, is_trading_day


@pytest.fixture
def retailer(settings) -> TradingCalendar:
    return settings.source.calendar  # the committed calendar of the demo's retailer


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        ("2011-03-05", "never trades on Saturdays"),
        ("2010-12-24", "configured closure 2010-12-24..2011-01-03"),
        ("2011-01-03", "configured closure 2010-12-24..2011-01-03"),
        ("2011-04-22", "public holiday: Good Friday"),
        ("2011-04-24", "Easter Sunday"),
        ("2011-04-25", "public holiday: Easter Monday"),
        ("2011-04-29", "public holiday: Wedding of William and Catherine"),
        ("2011-05-02", "public holiday: May Day"),
        ("2011-05-30", "public holiday: Spring Bank Holiday"),
        ("2011-08-29", "public holiday: Late Summer Bank Holiday"),
        ("2011-12-26", "public holiday: Boxing Day"),
    ],
)
def test_closed_days_carry_their_reason(retailer, day, reason):
    assert closed_reason(retailer, dt.date.fromisoformat(day)) == reason


@pytest.mark.parametrize("day", ["2010-12-01", "2011-01-04", "2011-03-06", "2011-04-26", "2011-12-09"])
def test_ordinary_days_are_trading_days(retailer, day):
    assert is_trading_day(retailer, dt.date.fromisoformat(day))


def test_configured_single_closures_and_other_countries():
    cal = TradingCalendar(country="DE", subdivision="BY", closed_weekdays=[6], closures=[dt.date(2011, 6, 1)])
    assert closed_reason(cal, dt.date(2011, 6, 1)) == "configured closure"
    assert closed_reason(cal, dt.date(2011, 6, 23)) == "public holiday: Corpus Christi"
    assert closed_reason(cal, dt.date(2011, 6, 5)) == "never trades on Sundays"
    assert closed_reason(cal, dt.date(2011, 4, 29)) is None  # the royal wedding is England's


def test_an_unknown_country_is_a_clear_error():
    with pytest.raises(ValueError, match="no public holidays known for country='XX'"):
        closed_reason(TradingCalendar(country="XX"), dt.date(2011, 1, 4))
