"""`propensity source check` on the real Online Retail export proposes the committed mapping.

What a new user bringing that file would get, checked against config/defaults.yaml and against
what validation of the real year counts (README: 1,336 + 5 + 2 quarantined, 5,270 duplicates).
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from propensity.core.settings import SourceSettings
from propensity.ingest.source_check import check_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_online_retail_gets_the_committed_source_block(real_data, settings):
    report = check_source(str(real_data), settings=settings)
    source = SourceSettings(**yaml.safe_load(report.yaml())["source"])
    committed = settings.source
    assert source.mapping == committed.mapping
    for key in ("format", "delimiter", "encoding", "timezone", "timestamp_format", "return_order_prefix"):
        assert getattr(source, key) == getattr(committed, key), key
    assert source.guest_rows is committed.guest_rows is True
    assert source.calendar.country == committed.calendar.country
    assert source.calendar.subdivision == committed.calendar.subdivision
    assert source.calendar.closed_weekdays == committed.calendar.closed_weekdays
    assert source.calendar.closure_ranges == committed.calendar.closure_ranges
    assert source.calendar.easter_offsets == committed.calendar.easter_offsets
    assert source.calendar.closures == []
    # Every committed fee line is among the item codes it points out.
    assert set(committed.non_product_items) <= set(report.evidence["non_product_candidates"])
    assert report.home_country == "United Kingdom"

    assert (report.first_day, report.last_day) == (dt.date(2010, 12, 1), dt.date(2011, 12, 9))
    assert len(report.zero_days) == 69 and all(why for _, why in report.zero_days)
    c = report.checks
    assert (c["negative_quantity_outside_returns"], c["quantity_over_limit"], c["negative_unit_price"]) == (
        1336,
        5,
        2,
    )
    assert c["identical_lines"] == 5270
    assert any("first possible training date" in line for line in report.first_run)
