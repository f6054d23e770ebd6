"""Row quarantine, dedup, the batch gate, learned bands and publishing, on raw partitions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow.parquet as pq
import pytest
from validate_helpers import interval, sale, write_raw

from propensity.core.storage import partition_exists, read_partition
from propensity.core.zones import QUARANTINED_EVENTS, RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.ingest.validate import PublishRefused, ValidationFailed, publish, read_summary, validate

DAY = "2011-03-01"  # a Tuesday, a trading day


def raw_digest(settings, day: str) -> str:
    store = zone_store(settings)
    return hashlib.sha256(store.read_bytes(*RAW_EVENTS, f"date={day}", "part-0.parquet")).hexdigest()


def outputs(settings, day: str):
    store, d = zone_store(settings), dt.date.fromisoformat(day)
    validated = (
        read_partition(store, *VALIDATED_EVENTS, d).to_pandas()
        if partition_exists(store, *VALIDATED_EVENTS, d)
        else None
    )
    quarantine = read_partition(store, *QUARANTINED_EVENTS, d).to_pandas()
    return validated, quarantine


def test_bad_rows_are_quarantined_with_every_reason_and_counts_reconcile(vsettings):
    rows = [sale(DAY, i) for i in range(80)]
    rows[1] = sale(DAY, 1, unit_price=-11062.06, amount=-11062.06)  # adjust bad debt
    rows[2] = sale(DAY, 2, quantity=-3, amount=-6.0)  # negative outside a return (stock adjustment)
    rows[3] = sale(DAY, 3, quantity=80995, amount=168469.6)  # the absurd outlier
    rows[4] = sale(DAY, 4, quantity=None, amount=None, _parse_errors="quantity: 'abc' is not a number")
    rows[5] = sale(DAY, 5, order_id=None, item_id=None)
    rows[6] = sale(DAY, 6, quantity=2, is_return=True)  # a return that adds items
    rows[7] = sale(DAY, 7, item_id="POST", unit_price=18.0, amount=36.0, quantity=2)  # fee line: kept
    rows[8] = sale(DAY, 8, quantity=-1, unit_price=2.0, amount=-2.0, is_return=True)  # a proper return
    rows[9] = sale(DAY, 9, quantity=0, amount=0.0)
    rows[10] = sale(
        DAY, 10, item_id="POST", quantity=2, unit_price=2.5e6, amount=5e6
    )  # fee lines are bounded too
    write_raw(vsettings, DAY, rows)
    before = raw_digest(vsettings, DAY)

    summary = validate(vsettings, *interval(DAY))

    validated, quarantine = outputs(vsettings, DAY)
    reasons = {
        int(r): list(q)
        for r, q in zip(quarantine["_source_row"], quarantine["quarantine_reasons"], strict=True)
    }
    assert reasons == {
        2: ["unit_price_not_negative"],
        3: ["sale_quantity_positive"],
        4: ["quantity_within_limit"],
        5: ["quantity_present", "amount_present", "values_parse"],
        6: ["order_id_present", "item_id_present"],
        7: ["return_quantity_negative"],
        10: ["quantity_nonzero", "sale_quantity_positive"],
        11: ["amount_within_limit"],
    }
    assert summary["status"] == "passed"
    assert summary["counts"] == {
        "raw": 80,
        "validated": 72,
        "quarantined": 8,
        "duplicates_removed": 0,
        "guest_rows_validated": summary["counts"]["guest_rows_validated"],
        "non_product_validated": 1,
    }
    assert summary["reasons"]["quantity_present"] == 1 and sum(summary["reasons"].values()) == 12
    # Nothing lost: every raw line is in exactly one of validated / quarantine.
    assert sorted([*validated["_source_row"], *quarantine["_source_row"]]) == list(range(1, 81))
    assert set(validated.loc[validated["item_id"] == "POST", "line_kind"]) == {"non_product"}
    assert set(validated.loc[validated["item_id"] != "POST", "line_kind"]) == {"product"}
    # Guests stay in validated (the feature stage filters them).
    assert validated["customer_id"].isna().sum() == summary["counts"]["guest_rows_validated"] > 0
    assert raw_digest(vsettings, DAY) == before


def test_exact_copies_are_removed_and_counted_keeping_the_first(vsettings):
    rows = [sale(DAY, i) for i in range(35)]
    rows += [dict(rows[3]), dict(rows[3]), dict(rows[10])]
    write_raw(vsettings, DAY, rows)

    summary = validate(vsettings, *interval(DAY))

    validated, quarantine = outputs(vsettings, DAY)
    assert summary["counts"]["duplicates_removed"] == 3
    assert summary["counts"]["raw"] == 38 == summary["counts"]["validated"] + 3
    assert len(quarantine) == 0
    # The first occurrence (raw order) is the one kept.
    assert sorted(validated["_source_row"]) == list(range(1, 36))


NO_ORDER_ID = {"order_id": None, "unit_price": None, "amount": "total", "is_return": None}


@pytest.mark.parametrize(("duplicates", "removed"), [("auto", 0), ("keep", 0), ("drop", 3)])
def test_without_order_ids_identical_lines_are_purchases_unless_told(make_settings, duplicates, removed):
    """source.duplicates: auto keeps identical lines of a source without order ids (two purchases)."""
    mapping = make_settings().source.mapping.model_dump() | NO_ORDER_ID
    settings = make_settings(
        validation={"data_docs": False, "min_history": 2},
        source={"mapping": mapping, "duplicates": duplicates, "return_order_prefix": None},
    )
    assert settings.source.mapping.order_id is None
    rows = [sale(DAY, i) for i in range(35)]
    rows += [dict(rows[3]), dict(rows[3]), dict(rows[10])]
    write_raw(settings, DAY, rows)

    summary = validate(settings, *interval(DAY))

    validated, _ = outputs(settings, DAY)
    assert summary["counts"]["duplicates_removed"] == removed
    assert summary["counts"]["validated"] == len(validated) == 38 - removed
    assert ("no_exact_duplicates" in json.dumps(summary)) is (duplicates == "drop")


def test_keep_keeps_copies_even_with_order_ids(make_settings):
    settings = make_settings(validation={"data_docs": False, "min_history": 2}, source={"duplicates": "keep"})
    rows = [sale(DAY, i) for i in range(35)] + [sale(DAY, 3)]
    write_raw(settings, DAY, rows)
    assert validate(settings, *interval(DAY))["counts"]["validated"] == 36


def test_zero_lines_fail_a_trading_day_but_pass_a_closed_one(vsettings):
    write_raw(vsettings, DAY, [])
    with pytest.raises(ValidationFailed) as failed:
        validate(vsettings, *interval(DAY))
    message = str(failed.value)
    assert "row_count_in_band: observed 0" in message and "'min_value': 1" in message
    assert "broken export" in message
    assert not partition_exists(zone_store(vsettings), *VALIDATED_EVENTS, dt.date(2011, 3, 1))

    saturday, bank_holiday = "2011-03-05", "2011-04-29"
    for day in (saturday, bank_holiday):
        write_raw(vsettings, day, [])
        summary = validate(vsettings, *interval(day))
        assert summary["status"] == "passed" and summary["counts"]["raw"] == 0
    assert read_summary(zone_store(vsettings), dt.date(2011, 4, 29))["closed"] == (
        "public holiday: Wedding of William and Catherine"
    )


def history(settings, days: list[str], n: int = 40) -> None:
    for day in days:
        write_raw(settings, day, [sale(day, i) for i in range(n)])
        assert validate(settings, *interval(day))["status"] == "passed"


def test_volume_band_comes_from_the_same_weekday_before_the_day(vsettings):
    history(vsettings, ["2011-02-15", "2011-02-22", "2011-02-23"])  # two Tuesdays, one Wednesday
    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(401)])
    with pytest.raises(ValidationFailed) as spike:
        validate(vsettings, *interval(DAY))
    assert spike.value.summary["bands"]["rows"] == [4, 400]
    assert spike.value.summary["bands"]["usual_rows"] == 40
    assert [f["check"] for f in spike.value.summary["failed"]] == ["row_count_in_band"]
    assert spike.value.summary["failed"][0]["observed"] == 401

    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(400)])
    assert validate(vsettings, *interval(DAY))["status"] == "passed"


def test_a_backfill_reaches_the_verdict_of_the_scheduled_run(vsettings):
    history(vsettings, ["2011-02-15", "2011-02-22"])
    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(60)])
    first = validate(vsettings, *interval(DAY))
    store = zone_store(vsettings)
    validated_bytes = store.read_bytes(*VALIDATED_EVENTS, f"date={DAY}", "part-0.parquet")

    # Later days (with a much larger volume) must not move the band of an earlier day.
    history(vsettings, ["2011-03-08", "2011-03-15"], n=300)
    again = validate(vsettings, *interval(DAY))

    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert store.read_bytes(*VALIDATED_EVENTS, f"date={DAY}", "part-0.parquet") == validated_bytes


def test_a_failed_batch_removes_a_stale_validated_partition_and_a_fixed_rerun_publishes(vsettings):
    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(40)])
    validate(vsettings, *interval(DAY))
    assert publish(vsettings, *interval(DAY))["rows"] == 40

    # A redelivery where half the lines have negative prices: the day is not trustworthy.
    bad = [sale(DAY, i, unit_price=-1.0) if i % 2 else sale(DAY, i) for i in range(40)]
    write_raw(vsettings, DAY, bad)
    with pytest.raises(ValidationFailed) as failed:
        validate(vsettings, *interval(DAY))
    assert "quarantine_share: observed 0.5, expected {'max_value': 0.1}" in str(failed.value)
    assert not partition_exists(zone_store(vsettings), *VALIDATED_EVENTS, dt.date(2011, 3, 1))
    _, quarantine = outputs(vsettings, DAY)
    assert len(quarantine) == 20  # the bad rows are still kept, with their reason
    with pytest.raises(PublishRefused, match="validation failed"):
        publish(vsettings, *interval(DAY))

    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(41)])
    with pytest.raises(PublishRefused, match="raw partition changed since it was validated"):
        publish(vsettings, *interval(DAY))
    validate(vsettings, *interval(DAY))
    assert publish(vsettings, *interval(DAY)) == {
        "day": DAY,
        "uri": zone_store(vsettings).uri_of(*VALIDATED_EVENTS, f"date={DAY}", "part-0.parquet"),
        "rows": 41,
    }


def test_guest_share_and_sale_median_are_batch_checks(vsettings):
    history(vsettings, ["2011-02-15", "2011-02-16", "2011-02-17"])
    # The customer column lost (all guests) and prices 100x (pence instead of pounds).
    rows = [sale(DAY, i, customer_id=None) for i in range(40)]
    rows = [r | {"unit_price": r["unit_price"] * 100, "amount": r["amount"] * 100} for r in rows]
    write_raw(vsettings, DAY, rows)
    with pytest.raises(ValidationFailed) as failed:
        validate(vsettings, *interval(DAY))
    failures = {f["check"]: f for f in failed.value.summary["failed"]}
    assert set(failures) == {"customer_share_in_band", "sale_amount_median_in_band"}
    assert failures["customer_share_in_band"]["observed"] == 0.0
    assert failures["customer_share_in_band"]["expected"]["min_value"] == pytest.approx(0.05)
    assert (
        failures["sale_amount_median_in_band"]["observed"]
        > failures["sale_amount_median_in_band"]["expected"]["max_value"]
    )


def test_a_new_country_is_reported_not_blocked(vsettings):
    history(vsettings, ["2011-02-15", "2011-02-22"])
    rows = [sale(DAY, i) for i in range(40)]
    rows[0]["country"] = "Brazil"
    write_raw(vsettings, DAY, rows)
    summary = validate(vsettings, *interval(DAY))
    assert summary["status"] == "passed" and summary["counts"]["validated"] == 40
    assert summary["warnings"] == [
        {"check": "country_known", "why": summary["warnings"][0]["why"], "observed": ["Brazil"], "rows": 1}
    ]


def test_sources_without_guests_quarantine_lines_without_a_customer(make_settings):
    settings = make_settings(validation={"data_docs": False}, source={"guest_rows": False})
    rows = [sale(DAY, i, customer_id=None if i in (5, 17) else "c1") for i in range(40)]
    write_raw(settings, DAY, rows)
    summary = validate(settings, *interval(DAY))
    assert summary["reasons"] == {"customer_id_present": 2}
    assert summary["counts"]["validated"] == 38


def test_validated_partition_has_the_published_schema(vsettings):
    from propensity.core.schema import QUARANTINE_SCHEMA, VALIDATED_SCHEMA

    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(39)] + [sale(DAY, 39, unit_price=-1.0)])
    validate(vsettings, *interval(DAY))
    store = zone_store(vsettings)
    validated = pq.read_schema(store.path(*VALIDATED_EVENTS, f"date={DAY}", "part-0.parquet"))
    quarantine = pq.read_schema(store.path(*QUARANTINED_EVENTS, f"date={DAY}", "part-0.parquet"))
    assert validated.remove_metadata() == VALIDATED_SCHEMA
    assert quarantine.remove_metadata() == QUARANTINE_SCHEMA


def test_missing_raw_partition_is_a_clear_error(vsettings):
    with pytest.raises(FileNotFoundError, match=r"raw/events/date=2011-03-01.*run collect"):
        validate(vsettings, *interval(DAY))


def test_validation_runs_where_main_has_no_file(vsettings):
    """`python -c` (and embedded interpreters): pyspark's Spark Connect probe would sys.exit(0)."""
    import subprocess
    import sys

    write_raw(vsettings, DAY, [sale(DAY, i) for i in range(40)])
    code = (
        "import datetime as dt, sys\n"
        "from propensity.core.settings import Settings\n"
        "from propensity.ingest.validate import validate\n"
        "s = Settings(zone_root=sys.argv[1], validation={'data_docs': False})\n"
        "start = dt.datetime(2011, 3, 1, tzinfo=dt.UTC)\n"
        "print('STATUS', validate(s, start, start + dt.timedelta(days=1))['status'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, vsettings.zone_root], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "STATUS passed" in done.stdout, done.stderr[-2000:]
