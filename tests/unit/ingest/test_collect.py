"""Collection: column mappings, day slicing, idempotence and bad input."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib

import pandas as pd
import pyarrow.parquet as pq
import pytest

from propensity.core.storage import read_partition
from propensity.core.timeutil import day_of_interval
from propensity.core.zones import RAW_EVENTS
from propensity.ingest.collect import collect
from propensity.ingest.sources import SourceError

UTC = dt.UTC


def day(d: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromisoformat(d).replace(tzinfo=UTC)
    return start, start + dt.timedelta(days=1)


def landing(tmp_path, d: str, name: str, content: bytes | str):
    folder = tmp_path / "landing" / f"date={d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return tmp_path / "landing"


# Retailer B: other column names, no country, amounts instead of unit prices, date-only
# timestamps in day/month/year, an explicit return flag, no order id.
RETAILER_B = {
    "kind": "landing",
    "timezone": "America/New_York",
    "timestamp_format": "%d/%m/%Y",
    "return_order_prefix": None,
    "mapping": {
        "customer_id": "member",
        "event_time": "day",
        "quantity": "units",
        "amount": "total",
        "item_id": "sku",
        "is_return": "refund",
        "order_id": None,
        "unit_price": None,
        "country": None,
    },
}

# Retailer C: semicolon-delimited, ISO timestamps with offsets, no item id, no order id,
# returns only recognisable by a negative quantity.
RETAILER_C = {
    "kind": "landing",
    "delimiter": ";",
    "timestamp_format": None,
    "return_order_prefix": None,
    "mapping": {
        "customer_id": "client",
        "event_time": "ts",
        "quantity": "qty",
        "unit_price": "price",
        "country": "land",
        "order_id": None,
        "item_id": None,
    },
}


def test_retailer_b_mapping_derives_what_the_source_lacks(tmp_path, make_settings):
    csv = (
        "member,day,units,total,sku,refund,loyalty_tier\n"
        "m1,01/03/2011,2,10.0,A,no,gold\n"
        "m2,01/03/2011,-1,-4.5,B,yes,\n"
    )
    root = landing(tmp_path, "2011-03-01", "b.csv", csv)
    settings = make_settings(source={**RETAILER_B, "path": str(root)})
    # The day in New York starts at 05:00 UTC, so a date-only timestamp lands on that UTC day.
    result = collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert result.rows == 2
    assert result.unmapped_columns == ["loyalty_tier"]
    assert list(out["customer_id"]) == ["m1", "m2"]
    assert list(out["unit_price"]) == [5.0, 4.5]
    assert list(out["amount"]) == [10.0, -4.5]
    assert list(out["is_return"]) == [False, True]
    assert out["country"].isna().all()
    assert out["event_time"].iloc[0] == pd.Timestamp("2011-03-01 05:00", tz="UTC")
    assert out["order_id"].iloc[0] == "m1@2011-03-01T05:00:00Z"


def test_retailer_c_mapping_semicolons_offsets_and_negative_quantity_returns(tmp_path, make_settings):
    csv = (
        "client;ts;qty;price;land\n"
        "7;2011-03-01T10:00:00+01:00;3;1.5;DE\n"
        "8;2011-03-01T23:30:00-02:00;-2;2.0;BR\n"
    )
    root = landing(tmp_path, "2011-03-01", "c.csv", csv)
    settings = make_settings(source={**RETAILER_C, "path": str(root)})
    collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert list(out["event_time"]) == [
        pd.Timestamp("2011-03-01 09:00", tz="UTC"),
        pd.Timestamp("2011-03-02 01:30", tz="UTC"),
    ]
    assert list(out["amount"]) == [4.5, -4.0]
    assert list(out["is_return"]) == [False, True]
    assert out["item_id"].isna().all()
    assert list(out["country"]) == ["DE", "BR"]


def settings_store(settings):
    from propensity.core.zones import zone_store

    return zone_store(settings)


def test_uk_summer_time_edges_slice_on_utc_day(tmp_path, make_settings):
    # 23:30 BST on 30 June is 22:30 UTC on 30 June; 00:30 BST on 1 July is 23:30 UTC on 30 June.
    csv = (
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,1,2011-06-30 00:30:00,1.0,1,United Kingdom\n"  # 23:30 UTC on 29 June
        "2,A,1,2011-06-30 23:30:00,1.0,1,United Kingdom\n"
        "3,A,1,2011-07-01 00:30:00,1.0,1,United Kingdom\n"
        "4,A,1,2011-07-01 01:30:00,1.0,1,United Kingdom\n"  # 00:30 UTC on 1 July
    )
    path = tmp_path / "export.csv"
    path.write_text(csv)
    settings = make_settings(source={"path": str(path)})
    collect(settings, *day("2011-06-30"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 6, 30)).to_pandas()
    assert list(out["order_id"]) == ["2", "3"]
    assert out["event_time"].max() == pd.Timestamp("2011-06-30 23:30", tz="UTC")


def test_a_day_without_events_writes_an_empty_partition(tmp_path, make_settings):
    path = tmp_path / "export.csv"
    path.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,1,2011-03-01 10:00:00,1.0,1,UK\n2,A,1,2011-03-07 10:00:00,1.0,1,UK\n"
    )
    settings = make_settings(source={"path": str(path)})
    result = collect(settings, *day("2011-03-05"))
    assert result.rows == 0
    table = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 5))
    assert table.num_rows == 0 and "customer_id" in table.column_names


def test_a_day_the_export_does_not_cover_is_an_error_naming_its_span(tmp_path, make_settings):
    """Not a quiet day: a date before or after the file (a typo, another file) fails loudly."""
    path = tmp_path / "export.csv"
    path.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,1,2011-03-01 10:00:00,1.0,1,UK\n2,A,1,2011-03-07 10:00:00,1.0,1,UK\n"
    )
    settings = make_settings(source={"path": str(path)})
    for outside in ("1999-03-05", "2011-03-08"):
        with pytest.raises(SourceError, match=f"covers 2011-03-01 .. 2011-03-07 .*nothing for {outside}"):
            collect(settings, *day(outside))
    assert not (tmp_path / "zones" / "raw" / "events" / "date=1999-03-05").exists()
    from propensity.ingest.collect import source_span

    assert source_span(settings) == (dt.date(2011, 3, 1), dt.date(2011, 3, 7))


def test_unparseable_values_are_kept_and_named_not_dropped(tmp_path, make_settings):
    csv = (
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,abc,2011-03-01 10:00:00,1.0,1,UK\n"
        "2,A,2.5,2011-03-01 11:00:00,x,1,UK\n"
    )
    path = tmp_path / "export.csv"
    path.write_text(csv)
    settings = make_settings(source={"path": str(path)})
    collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert len(out) == 2
    assert out["_parse_errors"].iloc[0] == "quantity (column 'Quantity'): 'abc' is not a number"
    assert out["_parse_errors"].iloc[1] == (
        "quantity (column 'Quantity'): '2.5' is not a whole number; "
        "unit_price (column 'UnitPrice'): 'x' is not a number"
    )
    assert list(out["_source_row"]) == [1, 2]


def test_float_formatted_customer_ids_are_the_same_customer(tmp_path, make_settings):
    path = tmp_path / "export.csv"
    path.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,1,2011-03-01 10:00:00,1.0,17850.0,UK\n2,A,1,2011-03-01 10:00:00,1.0,,UK\n"
    )
    settings = make_settings(source={"path": str(path)})
    collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert out["customer_id"].iloc[0] == "17850"
    assert pd.isna(out["customer_id"].iloc[1])


EXPORT_HEADER = "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def test_a_bad_line_in_an_export_stops_only_its_own_day(tmp_path, make_settings):
    """Unreadable times and non-finite numbers go to their day's quarantine; the next day is clean."""
    path = tmp_path / "export.csv"
    path.write_text(
        EXPORT_HEADER
        + "1,A,1,2011-03-01 09:00:00,1.0,1,UK\n"
        + "2,A,1,2011-03-01 25:61:00,1.0,2,UK\n"  # the time is broken, the date still reads
        + "3,A,1,garbage,1.0,3,UK\n"  # nothing reads: the day of the line before it
        + "4,A,inf,2011-03-01 12:00:00,1.0,4,UK\n"  # crashed collect with an OverflowError
        + "5,A,1e400,2011-03-01 13:00:00,NaN,5,UK\n"
        + "6,A,1,2011-03-02 10:00:00,1.0,6,UK\n"
    )
    settings = make_settings(source={"path": str(path)})
    first = collect(settings, *day("2011-03-01"))
    second = collect(settings, *day("2011-03-02"))
    assert (first.rows, second.rows) == (5, 1)
    raw = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    errors = dict(zip(raw["_source_row"], raw["_parse_errors"], strict=True))
    assert pd.isna(errors[1])
    assert errors[2] == (
        "event_time (column 'InvoiceDate'): '2011-03-01 25:61:00' is not a timestamp "
        "(collected on the day of its date, 2011-03-01)"
    )
    assert errors[3].endswith("(collected on the day of the line before it, 2011-03-01)")
    assert errors[4] == "quantity (column 'Quantity'): 'inf' is not a finite number"
    assert "unit_price (column 'UnitPrice'): 'NaN' is not a finite number" in errors[5]
    clean = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 2)).to_pandas()
    assert clean["_parse_errors"].isna().all() and list(clean["_source_row"]) == [6]


@pytest.mark.parametrize(
    ("raw_id", "why"),
    [
        ("null", "is a placeholder for a missing value, not an id"),
        ("N/A", "is a placeholder for a missing value, not an id"),
        ("-17850", "starts with a sign: a number, not an id"),
        ("1.785e4", "is a number in exponent form (an id mangled by a spreadsheet)"),
        ("178 50", "contains whitespace, control or invisible characters"),
        ("1785\u200b0", "contains whitespace, control or invisible characters"),
        ("x" * 65, "is 65 characters long (at most 64)"),
    ],
)
def test_implausible_customer_ids_are_kept_and_flagged_never_taken_as_customers(
    tmp_path, make_settings, raw_id, why
):
    path = tmp_path / "export.csv"
    path.write_text(
        EXPORT_HEADER
        + f"1,A,1,2011-03-01 10:00:00,1.0,{raw_id},UK\n"
        + "2,A,1,2011-03-01 11:00:00,1.0,000123,UK\n"
    )
    settings = make_settings(source={"path": str(path)})
    collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    assert out["customer_id"].tolist() == [raw_id, "000123"]  # kept as sent; leading zeros kept
    assert out["_parse_errors"].iloc[0].startswith("customer_id (column 'CustomerID'): ")
    assert out["_parse_errors"].iloc[0].endswith(why)
    assert pd.isna(out["_parse_errors"].iloc[1])


def test_an_overlong_value_is_flagged_with_its_length(tmp_path, make_settings):
    path = tmp_path / "export.csv"
    path.write_text(EXPORT_HEADER + f"1,{'S' * 100_000},1,2011-03-01 10:00:00,1.0,1,UK\n")
    settings = make_settings(source={"path": str(path)})
    collect(settings, *day("2011-03-01"))
    out = read_partition(settings_store(settings), *RAW_EVENTS, dt.date(2011, 3, 1)).to_pandas()
    message = out["_parse_errors"].iloc[0]
    assert message.startswith("item_id (column 'StockCode'): 'SSSS") and message.endswith(
        "is longer than 256 characters"
    )
    assert len(message) < 200  # the value is kept in the row, never echoed whole in the message


def test_rerun_replaces_the_partition_with_identical_rows(settings, real_data):
    first = collect(settings, *day("2011-03-01"))
    path = first.uri
    content = pq.read_table(path).to_pandas()
    second = collect(settings, *day("2011-03-01"))
    again = pq.read_table(path).to_pandas()
    assert first.rows == second.rows > 1000
    pd.testing.assert_frame_equal(content, again)
    digest = lambda: hashlib.sha256(open(path, "rb").read()).hexdigest()  # noqa: E731
    d1 = digest()
    collect(settings, *day("2011-03-01"))
    assert digest() == d1


def test_real_day_maps_cancellations_and_guests(settings, real_data):
    result = collect(settings, *day("2011-03-01"))
    out = pq.read_table(result.uri).to_pandas()
    assert result.rows == len(out)
    cancels = out[out["order_id"].str.startswith("C")]
    assert len(cancels) > 0 and cancels["is_return"].all()
    assert not out.loc[~out["order_id"].str.startswith("C"), "is_return"].any()
    assert out["customer_id"].isna().any()  # guest checkouts are kept
    assert (out["amount"] - out["quantity"] * out["unit_price"]).abs().max() < 1e-9
    assert (
        out["event_time"]
        .between(pd.Timestamp("2011-03-01", tz="UTC"), pd.Timestamp("2011-03-02", tz="UTC"), inclusive="left")
        .all()
    )
    assert out["_parse_errors"].isna().all()


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.csv", None, "source file does not exist"),
        ("empty.csv", b"", "file is empty (0 bytes)"),
        ("blank.csv", b"\n\n", "file is empty (no header line)"),
        ("cut.csv.gz", "truncated", "gzip stream is damaged or truncated"),
        (
            "semi.csv",
            b"InvoiceNo;StockCode;Quantity;InvoiceDate;UnitPrice;CustomerID;Country\n1;A;1;2011-03-01 10:00:00;1;1;UK\n",
            "looks ';'-delimited",
        ),
        (
            "nocust.csv",
            b"InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,Country\n1,A,1,2011-03-01 10:00:00,1,UK\n",
            "missing mapped column(s) 'CustomerID' (for customer_id)",
        ),
        ("binary.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        (
            "latin.csv",
            "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n1,A,1,2011-03-01 10:00:00,1,1,Cura\xe7ao\n".encode(
                "latin-1"
            ),
            "not valid utf-8 at offset",
        ),
    ],
)
def test_bad_source_files_fail_with_the_file_and_the_problem(tmp_path, make_settings, name, content, message):
    path = tmp_path / name
    if content == "truncated":
        full = gzip.compress(
            b"InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            + b"1,A,1,2011-03-01 10:00:00,1,1,UK\n" * 2000
        )
        path.write_bytes(full[: len(full) // 2])
    elif content is not None:
        path.write_bytes(content)
    settings = make_settings(source={"path": str(path)})
    # A good partition collected earlier must survive the failed run untouched.
    good = tmp_path / "good.csv"
    good.write_text(
        "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n9,A,1,2011-03-01 10:00:00,1,1,UK\n"
    )
    before = collect(make_settings(source={"path": str(good)}), *day("2011-03-01"))
    before_bytes = open(before.uri, "rb").read()
    with pytest.raises(SourceError) as err:
        collect(settings, *day("2011-03-01"))
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert open(before.uri, "rb").read() == before_bytes


def test_landing_day_without_delivery_is_an_error_naming_the_folder(tmp_path, make_settings):
    (tmp_path / "landing").mkdir()
    settings = make_settings(source={**RETAILER_C, "path": str(tmp_path / "landing")})
    with pytest.raises(SourceError, match=r"date=2011-03-01: no delivery for 2011-03-01"):
        collect(settings, *day("2011-03-01"))


def test_interval_must_be_one_whole_utc_day():
    start = dt.datetime(2011, 3, 1, tzinfo=UTC)
    assert day_of_interval(start, start + dt.timedelta(days=1)) == dt.date(2011, 3, 1)
    with pytest.raises(ValueError, match="one whole UTC day"):
        day_of_interval(start, start + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="naive datetime"):
        day_of_interval(start.replace(tzinfo=None), start.replace(tzinfo=None) + dt.timedelta(days=1))
