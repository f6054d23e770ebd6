"""The bad-input catalogue: corrupted landing deliveries through collect + validate.

Each kind ends in one of three outcomes, and in every one nothing is lost: collect refuses the
file with a clear message (the raw partition stays as it was), rows are quarantined with their
reason (raw = validated + quarantined + duplicates), or the batch fails with the failed checks
and observed values (nothing published). The source's column names come from the configured
mapping, never from this file.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import random
import shutil

import pytest

from propensity.core.storage import partition_exists, read_partition
from propensity.core.zones import QUARANTINED_EVENTS, RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.ingest.collect import collect
from propensity.ingest.sources import SourceError
from propensity.ingest.validate import (
    PublishRefused,
    ValidationFailed,
    collect_and_validate,
    publish,
    read_summary,
    validate,
)

pytestmark = pytest.mark.integration

DAY = "2011-03-01"  # a Tuesday; London is on UTC in March, so local times are UTC times
N = 40


def interval(day: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def line(day: str, i: int, **over) -> dict:
    """One ordinary sale line, keyed by canonical field name."""
    rng = random.Random(f"{day}/{i}")
    row = {
        "order_id": f"{day.replace('-', '')[2:]}{i // 4:02d}",
        "item_id": f"2{rng.randint(1000, 1999)}",
        "quantity": str(rng.randint(1, 12)),
        "event_time": (dt.datetime.fromisoformat(day) + dt.timedelta(hours=8, seconds=89 * i)).strftime(
            "%Y-%m-%d %H:%M:%S"
        ),
        "unit_price": f"{rng.uniform(0.4, 9.0):.2f}",
        "customer_id": "" if i % 5 == 0 else str(12000 + rng.randint(0, 30)),
        "country": rng.choice(["United Kingdom", "United Kingdom", "France"]),
    }
    row.update(over)
    return row


FIELDS = ("order_id", "item_id", "quantity", "event_time", "unit_price", "customer_id", "country")


def csv_text(
    settings, rows: list[dict], *, extra: dict[str, str] | None = None, sep: str = ",", drop=()
) -> str:
    """The rows as the source would send them, under the configured source column names."""
    mapping = settings.source.mapping.mapped()
    fields = [f for f in FIELDS if f not in drop]
    lines = [sep.join([mapping[f] for f in fields] + list(extra or {}))]
    lines += [sep.join([r[f] for f in fields] + list((extra or {}).values())) for r in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    return root


@pytest.fixture
def lsettings(make_settings, landing):
    return make_settings(
        source={"kind": "landing", "path": str(landing)},
        validation={"data_docs": False, "min_history": 2},
    )


def deliver(landing, day: str, name: str, content: str | bytes, *, replace: bool = True) -> None:
    folder = landing / f"date={day}"
    if replace and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)


def good_day(settings, landing, day: str, n: int = N) -> dict:
    deliver(landing, day, "orders.csv", csv_text(settings, [line(day, i) for i in range(n)]))
    collect(settings, *interval(day))
    return validate(settings, *interval(day))


def digest(settings, zone: str, day: str) -> str | None:
    store = zone_store(settings)
    parts = (zone, "events", f"date={day}", "part-0.parquet")
    return hashlib.sha256(store.read_bytes(*parts)).hexdigest() if store.exists(*parts) else None


def assert_nothing_lost(settings, day: str, summary: dict) -> None:
    """Every raw line is validated, quarantined or a counted copy; the counts reconcile."""
    store, d = zone_store(settings), dt.date.fromisoformat(day)
    raw = read_partition(store, *RAW_EVENTS, d).to_pandas()
    quarantine = read_partition(store, *QUARANTINED_EVENTS, d).to_pandas()
    c = summary["counts"]
    assert c["raw"] == len(raw) == c["validated"] + c["quarantined"] + c["duplicates_removed"]
    assert len(quarantine) == c["quarantined"]
    seen = {tuple(x) for x in quarantine[["_source_file", "_source_row"]].itertuples(index=False)}
    if summary["status"] == "passed":
        validated = read_partition(store, *VALIDATED_EVENTS, d).to_pandas()
        assert len(validated) == c["validated"]
        seen |= {tuple(x) for x in validated[["_source_file", "_source_row"]].itertuples(index=False)}
        assert len(seen) == c["validated"] + c["quarantined"]
    else:
        assert not partition_exists(store, *VALIDATED_EVENTS, d)
    every = {tuple(x) for x in raw[["_source_file", "_source_row"]].itertuples(index=False)}
    assert seen <= every and len(every - seen) in (c["duplicates_removed"], c["raw"] - c["quarantined"])


# -- collect refuses the file: a clear message, the earlier partition untouched -------------


def _truncated_gzip(text: str) -> bytes:
    data = gzip.compress(text.encode())
    return data[: len(data) // 2]


REJECTED = {
    "empty file": ("orders.csv", lambda s, rows: b"", "file is empty"),
    "truncated gzip": ("orders.csv.gz", lambda s, rows: _truncated_gzip(csv_text(s, rows)), "truncated"),
    "wrong delimiter": ("orders.csv", lambda s, rows: csv_text(s, rows, sep=";"), "';'-delimited"),
    "missing column": (
        "orders.csv",
        lambda s, rows: csv_text(s, rows, drop=("quantity",)),
        "missing mapped column",
    ),
    "non-UTF-8 bytes": (
        "orders.csv",
        lambda s, rows: csv_text(s, rows).encode().replace(b"France", b"Fran\xe7e"),
        "not valid utf-8",
    ),
}


@pytest.mark.parametrize("kind", sorted(REJECTED))
def test_collect_refuses_unreadable_deliveries_and_keeps_the_day_as_it_was(kind, lsettings, landing):
    before = good_day(lsettings, landing, DAY)
    raw_before, validated_before = digest(lsettings, "raw", DAY), digest(lsettings, "validated", DAY)
    name, make, message = REJECTED[kind]
    deliver(landing, DAY, name, make(lsettings, [line(DAY, i) for i in range(N)]))

    with pytest.raises(SourceError, match=message) as refused:
        collect(lsettings, *interval(DAY))

    assert name in str(refused.value)  # the message names the file
    assert digest(lsettings, "raw", DAY) == raw_before
    assert digest(lsettings, "validated", DAY) == validated_before
    assert read_summary(zone_store(lsettings), dt.date(2011, 3, 1)) == before


def test_header_only_fails_the_trading_day_as_a_broken_export(lsettings, landing):
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, []))
    assert collect(lsettings, *interval(DAY)).rows == 0
    raw_before = digest(lsettings, "raw", DAY)
    with pytest.raises(ValidationFailed, match=r"row_count_in_band: observed 0, expected \{'min_value': 1\}"):
        validate(lsettings, *interval(DAY))
    assert digest(lsettings, "raw", DAY) == raw_before
    assert_nothing_lost(lsettings, DAY, read_summary(zone_store(lsettings), dt.date(2011, 3, 1)))


def test_an_extra_unknown_column_is_allowed_and_reported(lsettings, landing):
    rows = [line(DAY, i) for i in range(N)]
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, rows, extra={"loyalty_tier": "gold"}))
    result = collect(lsettings, *interval(DAY))
    assert result.unmapped_columns == ["loyalty_tier"]
    summary = validate(lsettings, *interval(DAY))
    assert summary["status"] == "passed" and summary["counts"]["validated"] == N
    assert_nothing_lost(lsettings, DAY, summary)


# -- rows quarantined with their reason ----------------------------------------------------

QUARANTINED = {
    "wrong type in a numeric column": (
        {"quantity": "twelve"},
        ["quantity_present", "amount_present", "values_parse"],
    ),
    "decimal comma in a price": (
        {"unit_price": '"2,50"'},
        ["unit_price_present", "amount_present", "values_parse"],
    ),
    # The return flag comes from the order id's prefix: without an id it is unknown too.
    "null order id": ({"order_id": ""}, ["order_id_present", "is_return_present"]),
    "null item id": ({"item_id": ""}, ["item_id_present"]),
    "negative price outside a return": ({"unit_price": "-11062.06"}, ["unit_price_not_negative"]),
    "negative quantity outside a return": (
        {"quantity": "-24", "unit_price": "0"},
        ["sale_quantity_positive"],
    ),
    "timestamp before the day": ({"event_time": "2011-02-28 23:59:59"}, ["event_time_not_before_day"]),
    "timestamp in the future": ({"event_time": "2031-03-01 10:00:00"}, ["event_time_not_after_day"]),
    "absurd outlier quantity": ({"quantity": "80995", "unit_price": "2.08"}, ["quantity_within_limit"]),
    "return adding items": ({"order_id": "C99999", "quantity": "3"}, ["return_quantity_negative"]),
}


@pytest.mark.parametrize("kind", sorted(QUARANTINED))
def test_bad_lines_are_quarantined_with_their_reason(kind, lsettings, landing):
    change, reasons = QUARANTINED[kind]
    rows = [line(DAY, i) for i in range(N)]
    rows[7] = line(DAY, 7, **change)
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, rows))
    collect(lsettings, *interval(DAY))
    raw_before = digest(lsettings, "raw", DAY)

    summary = validate(lsettings, *interval(DAY))

    quarantine = read_partition(zone_store(lsettings), *QUARANTINED_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert summary["status"] == "passed"
    assert list(quarantine["_source_row"]) == [8]
    assert list(quarantine["quarantine_reasons"][0]) == reasons
    assert summary["reasons"] == dict.fromkeys(sorted(reasons), 1)
    assert digest(lsettings, "raw", DAY) == raw_before
    assert_nothing_lost(lsettings, DAY, summary)


def test_guest_lines_are_kept_not_quarantined(lsettings, landing):
    summary = good_day(lsettings, landing, DAY)
    validated = read_partition(zone_store(lsettings), *VALIDATED_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert summary["counts"]["quarantined"] == 0
    assert validated["customer_id"].isna().sum() == N // 5 == summary["counts"]["guest_rows_validated"]


def test_exact_duplicate_lines_are_removed_and_counted(lsettings, landing):
    rows = [line(DAY, i) for i in range(N)]
    rows += [rows[3], rows[3], rows[20]]
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, rows))
    collect(lsettings, *interval(DAY))
    summary = validate(lsettings, *interval(DAY))
    assert summary["status"] == "passed"
    assert summary["counts"]["duplicates_removed"] == 3 and summary["counts"]["validated"] == N
    assert_nothing_lost(lsettings, DAY, summary)


def test_too_many_bad_lines_fail_the_batch(lsettings, landing):
    rows = [line(DAY, i, unit_price="-1") if i % 3 == 0 else line(DAY, i) for i in range(N)]
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, rows))
    collect(lsettings, *interval(DAY))
    with pytest.raises(
        ValidationFailed, match=r"quarantine_share: observed 0.35, expected \{'max_value': 0.1\}"
    ):
        validate(lsettings, *interval(DAY))
    assert_nothing_lost(lsettings, DAY, read_summary(zone_store(lsettings), dt.date(2011, 3, 1)))


# -- the batch fails: failed checks with observed values, nothing published ------------------


def test_a_file_delivered_twice_fails_then_the_fixed_delivery_publishes(lsettings, landing):
    text = csv_text(lsettings, [line(DAY, i) for i in range(N)])
    deliver(landing, DAY, "orders.csv", text)
    deliver(landing, DAY, "orders-resent.csv", text, replace=False)
    collect(lsettings, *interval(DAY))
    with pytest.raises(
        ValidationFailed, match=r"duplicate_share: observed 0.5, expected \{'max_value': 0.25\}"
    ):
        validate(lsettings, *interval(DAY))
    summary = read_summary(zone_store(lsettings), dt.date(2011, 3, 1))
    assert summary["counts"]["duplicates_removed"] == N
    assert_nothing_lost(lsettings, DAY, summary)
    with pytest.raises(PublishRefused):
        publish(lsettings, *interval(DAY))

    (landing / f"date={DAY}" / "orders-resent.csv").unlink()
    collect(lsettings, *interval(DAY))
    assert validate(lsettings, *interval(DAY))["status"] == "passed"
    assert publish(lsettings, *interval(DAY))["rows"] == N


@pytest.mark.parametrize(("kind", "rows", "band"), [("spike", 401, [4, 400]), ("collapse", 3, [4, 400])])
def test_volume_far_from_the_weekday_norm_fails_the_batch(kind, rows, band, lsettings, landing):
    for day in ("2011-02-15", "2011-02-22"):  # the two Tuesdays before
        assert good_day(lsettings, landing, day)["status"] == "passed"
    deliver(landing, DAY, "orders.csv", csv_text(lsettings, [line(DAY, i) for i in range(rows)]))
    collect(lsettings, *interval(DAY))
    with pytest.raises(ValidationFailed) as failed:
        validate(lsettings, *interval(DAY))
    (failure,) = failed.value.summary["failed"]
    assert failure["check"] == "row_count_in_band" and failure["observed"] == rows
    assert [failure["expected"]["min_value"], failure["expected"]["max_value"]] == band
    assert f"row_count_in_band: observed {rows}" in str(failed.value)
    assert_nothing_lost(lsettings, DAY, failed.value.summary)


def test_a_corrupted_day_stops_only_itself(lsettings, landing):
    days = ["2011-02-28", "2011-03-01", "2011-03-02"]
    for day in days:
        deliver(landing, day, "orders.csv", csv_text(lsettings, [line(day, i) for i in range(N)]))
    deliver(landing, days[1], "orders.csv.gz", _truncated_gzip(csv_text(lsettings, [line(DAY, 1)])))
    report = collect_and_validate(lsettings, dt.date(2011, 2, 28), dt.date(2011, 3, 2))
    assert list(report["failed_days"]) == ["2011-03-01"]
    assert "truncated" in report["failed_days"]["2011-03-01"]
    assert publish(lsettings, *interval(days[0]))["rows"] == N
    assert publish(lsettings, *interval(days[2]))["rows"] == N
    with pytest.raises(PublishRefused):
        publish(lsettings, *interval(days[1]))
