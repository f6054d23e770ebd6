"""The real Online Retail year: the calendar explains every empty day; a real day validates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pytest

from propensity.core.errors import DataError
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


def test_a_multi_day_run_learns_exactly_the_bands_day_by_day_runs_read_from_the_zone(
    make_settings, real_data
):
    """collect_and_validate carries the bands' history in memory (no re-reads of every summary per
    day): over four real weeks, in two runs (the second reads what the first wrote), every summary is
    the one a run per day, reading its history from the zone, writes."""
    from propensity.ingest.validate import collect_and_validate, read_summary

    root = Path(make_settings().cache_dir).parent
    carried = make_settings(zone_root=str(root / "carried"))
    per_day = make_settings(zone_root=str(root / "per_day"))
    first, mid, last = dt.date(2010, 12, 1), dt.date(2010, 12, 14), dt.date(2010, 12, 28)
    collect_and_validate(carried, first, mid)
    collect_and_validate(carried, mid + dt.timedelta(days=1), last)
    day = first
    while day <= last:
        start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        collect(per_day, start, start + dt.timedelta(days=1))
        try:
            validate(per_day, start, start + dt.timedelta(days=1))
        except DataError:
            pass  # a failed day writes its summary too; compared below
        day += dt.timedelta(days=1)

    compared = 0
    for i in range((last - first).days + 1):
        d = first + dt.timedelta(days=i)
        a = read_summary(zone_store(carried), d)
        b = read_summary(zone_store(per_day), d)
        assert (a is None) == (b is None), d
        if a is None:
            continue
        strip = lambda s, z: json.loads(json.dumps(s).replace(z, "<zone>"))  # noqa: E731
        assert strip(a, carried.zone_root) == strip(b, per_day.zone_root), d
        compared += 1
    assert compared >= 20
    # The bands did learn from history (the comparison covers learned bands, not only empty ones).
    learned = [
        d
        for i in range((last - first).days + 1)
        if (d := first + dt.timedelta(days=i))
        and (s := read_summary(zone_store(carried), d))
        and s["bands"]["usual_rows"] is not None
    ]
    assert len(learned) >= 3, learned
