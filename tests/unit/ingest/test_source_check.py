"""`propensity source check` on files a new user would bring: the synthetic retailer as Parquet and
as text in other delimiters, line endings, encodings and conventions."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from propensity.core.settings import SourceSettings
from propensity.ingest import sources
from propensity.ingest.source_check import SourceCheckError, check_source, run


@pytest.fixture(scope="module")
def spec(synthetic_retailer):
    return synthetic_retailer.RetailerSpec()  # 3,000 customers: no day of the year without a sale by chance


@pytest.fixture(scope="module")
def table(synthetic_retailer, spec) -> pa.Table:
    return synthetic_retailer.generate(spec)


def proposed(report) -> SourceSettings:
    """The YAML the user pastes, loaded back: it must be a valid source block."""
    return SourceSettings(**yaml.safe_load(report.yaml())["source"])


def canonical(path, source: SourceSettings):
    raw = sources.read_source_bytes(path.read_bytes(), str(path), source)
    return sources.to_canonical(raw, str(path), source)


def test_parquet_proposes_the_fixtures_mapping(
    tmp_path, synthetic_retailer, synthetic_retailer_config, spec, table
):
    path = synthetic_retailer.write(table, tmp_path / "retailer.parquet")
    report = check_source(str(path), timezone="America/Chicago")
    source = proposed(report)
    assert source.mapping == SourceSettings(**synthetic_retailer_config["source"]).mapping
    assert source.mapping.order_id is None and source.mapping.unit_price is None
    assert (source.format, source.timezone, source.timestamp_format) == ("auto", "America/Chicago", None)
    assert source.guest_rows and source.return_order_prefix is None
    # Closed on Thanksgiving and Christmas Day: both US public holidays, nothing left unexplained.
    assert source.calendar.country == "US" and source.calendar.closures == []
    assert [why for _, why in report.zero_days] == [
        "public holiday: Thanksgiving Day",
        "public holiday: Christmas Day",
    ] * 2
    assert (report.first_day, report.last_day) == (spec.start, spec.end - dt.timedelta(days=1))
    assert report.home_country == "US"
    assert report.evidence["non_product_candidates"] == ["FEE-BAG"]
    notes = " ".join(report.notes)
    assert "leading zeros" in notes and "no order id" in notes and "negative quantities" in notes
    assert report.checks["identical_lines"] > 0  # the same item twice at the same second
    assert report.checks["rows"] == table.num_rows
    assert any("trades on" in n for n in report.notes)  # open on the other federal holidays
    # The proposal parses every row with the pipeline's own parser, ids unchanged.
    rows = canonical(path, source)
    assert rows["_parse_errors"].isna().all()
    assert set(rows["customer_id"].dropna()) == set(table.column("member_id").drop_null().to_pylist())


def test_without_a_hint_a_naive_zone_is_flagged_and_an_aware_one_read(tmp_path, synthetic_retailer, spec):
    naive = synthetic_retailer.write(synthetic_retailer.generate(spec), tmp_path / "naive.parquet")
    report = check_source(str(naive))
    assert report.source["timezone"] == "America/New_York"  # US's first zone: a guess, and said so
    assert any("set source.timezone" in n for n in report.notes)
    aware_spec = dataclasses.replace(spec, tz_aware=True)
    aware = synthetic_retailer.write(synthetic_retailer.generate(aware_spec), tmp_path / "aware.parquet")
    report = check_source(str(aware))
    assert report.source["timezone"] == "America/Chicago"  # from the column's own type
    assert not any("set source.timezone" in n for n in report.notes)


@pytest.mark.parametrize(
    ("name", "delimiter", "line_ending", "encoding", "aware"),
    [
        ("semicolon-crlf.csv", ";", "\r\n", "utf-8", False),
        ("tabs.txt.gz", "\t", "\n", "utf-8", True),
        ("pipes-cp1252.csv", "|", "\r\n", "cp1252", False),
    ],
)
def test_text_exports(
    tmp_path, synthetic_retailer, table, name, delimiter, line_ending, encoding, aware, spec
):
    if aware:
        table = synthetic_retailer.generate(dataclasses.replace(spec, tz_aware=True))
    if encoding != "utf-8":
        # A name only the file's own encoding spells: decoding it as UTF-8 would fail.
        country = pc.replace_substring(table.column("country_code"), "MX", "México")
        table = table.set_column(table.schema.get_field_index("country_code"), "country_code", country)
    path = synthetic_retailer.write(
        table, tmp_path / name, delimiter=delimiter, line_ending=line_ending, encoding=encoding
    )
    report = check_source(str(path), timezone="America/Chicago")
    source = proposed(report)
    assert report.facts.delimiter == delimiter and source.delimiter == delimiter
    assert report.facts.line_ending == line_ending.replace("\r", "\\r").replace("\n", "\\n")
    assert report.facts.compression == ("gzip" if name.endswith(".gz") else None)
    assert source.mapping.customer_id == "member_id" and source.mapping.amount == "line_total"
    assert source.mapping.event_time == "sold_at" and source.mapping.order_id is None
    # Offsets in the text: the ISO path; naive text: the exact pattern the generator wrote.
    assert source.timestamp_format == (None if aware else "%Y-%m-%d %H:%M:%S")
    rows = canonical(path, source)
    assert rows["_parse_errors"].isna().all() and len(rows) == table.num_rows
    # Text ids keep their leading zeros ("000123" is not customer 123).
    assert rows["customer_id"].dropna().str.fullmatch(r"0\d{5}").all()
    if encoding != "utf-8":
        assert "México" in set(rows["country"])


def test_a_unit_price_and_a_return_flag(tmp_path, table):
    """Another convention: the price of one unit, and returns flagged by a column with positive units."""
    units = table.column("units")
    price = pc.round(pc.divide(table.column("line_total"), pc.cast(units, pa.float64())), 2)
    refund = pc.less(units, 0)
    variant = pa.table(
        {
            "Customer Number": table.column("member_id"),
            "Date": table.column("sold_at"),
            "Article": table.column("sku"),
            "Qty": pc.abs(units),
            "Price Each": pc.abs(price),
            "Refund": refund,
        }
    )
    path = tmp_path / "variant.parquet"
    pq.write_table(variant, path)
    report = check_source(str(path), timezone="America/Chicago")
    m = proposed(report).mapping
    assert (m.customer_id, m.event_time, m.item_id, m.quantity) == (
        "Customer Number",
        "Date",
        "Article",
        "Qty",
    )
    assert (m.unit_price, m.amount, m.is_return) == ("Price Each", None, "Refund")
    assert any("boolean column 'Refund'" in n for n in report.notes)


def test_unreadable_files_are_named(tmp_path, synthetic_retailer, table, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(SourceCheckError, match="empty.csv: file is empty"):
        check_source(str(empty))
    good = synthetic_retailer.write(table, tmp_path / "r.csv.gz")
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(SourceCheckError, match="cut.csv.gz: gzip stream is damaged or truncated"):
        check_source(str(cut))
    no_time = tmp_path / "no_time.csv"
    no_time.write_text(table.drop_columns(["sold_at"]).to_pandas().to_csv(index=False))
    with pytest.raises(SourceCheckError, match="no column reads as timestamps"):
        check_source(str(no_time))
    assert run(str(empty)) == 1
    assert "file is empty" in capsys.readouterr().err
    assert run(str(good), timezone="America/Chicago", yaml_only=True) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["source"]["mapping"]["customer_id"] == "member_id"
