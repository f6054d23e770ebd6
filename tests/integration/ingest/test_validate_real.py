"""The real Online Retail year: the calendar explains every empty day; a real day validates."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.csv as pacsv
import pytest

from propensity.core.storage import read_partition
from propensity.core.zones import QUARANTINED_EVENTS, zone_store
from propensity.ingest.calendar import closed_reason
from propensity.ingest.collect import collect
from propensity.ingest.validate import validate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_day_without_sales_in_the_real_year_is_a_known_closure(settings, real_data):
    source = settings.source
    column = source.mapping.event_time  # the configured name, not assumed here
    times = pacsv.read_csv(
        real_data,
        convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: "string"}),
    ).column(column)
    local = pd.to_datetime(times.to_pandas(), format=source.timestamp_format)
    utc = local.dt.tz_localize(source.timezone, ambiguous=True, nonexistent="shift_forward").dt.tz_convert(
        "UTC"
    )
    trading = set(utc.dt.date)
    first, last = min(trading), max(trading)
    empty = [
        first + dt.timedelta(days=i)
        for i in range((last - first).days)
        if first + dt.timedelta(days=i) not in trading
    ]

    unexplained = [d for d in empty if closed_reason(source.calendar, d) is None]
    assert unexplained == []
    assert len(empty) == 69  # 51 Saturdays, the 11-day Christmas shutdown, 6 bank holidays, Easter Sunday
    # And the calendar does not declare closed a day the business traded.
    assert [d for d in sorted(trading) if closed_reason(source.calendar, d)] == []


def test_a_real_day_quarantines_the_80995_unit_order_and_its_cancellation(settings, real_data):
    start = dt.datetime(2011, 12, 9, tzinfo=dt.UTC)
    collect(settings, start, start + dt.timedelta(days=1))
    summary = validate(settings, start, start + dt.timedelta(days=1))

    assert summary["status"] == "passed"
    assert summary["counts"]["raw"] == 1632
    assert summary["counts"]["duplicates_removed"] == 7
    assert summary["reasons"] == {"quantity_within_limit": 2}
    quarantine = read_partition(zone_store(settings), *QUARANTINED_EVENTS, dt.date(2011, 12, 9)).to_pandas()
    assert sorted(quarantine["quantity"]) == [-80995, 80995]
    assert summary["counts"]["validated"] == 1632 - 7 - 2
