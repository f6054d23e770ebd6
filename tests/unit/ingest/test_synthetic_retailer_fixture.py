"""The synthetic retailer fixture itself: deterministic, and unlike Online Retail where it should be."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path, synthetic_retailer):
    spec = dataclasses.replace(synthetic_retailer.RetailerSpec(), customers=500)
    a = synthetic_retailer.write(synthetic_retailer.generate(spec), tmp_path / "a.parquet")
    b = synthetic_retailer.write(synthetic_retailer.generate(spec), tmp_path / "b.parquet")
    assert a.read_bytes() == b.read_bytes()
    other = synthetic_retailer.generate(dataclasses.replace(spec, seed=spec.seed + 1))
    assert not other.equals(pq.read_table(a))


def test_a_us_store_without_order_ids(synthetic_retailer):
    spec = synthetic_retailer.RetailerSpec()
    t = synthetic_retailer.generate(spec)
    assert t.column_names == [
        "member_id",
        "sold_at",
        "sku",
        "units",
        "line_total",
        "country_code",
        "store_id",
        "tender",
    ]
    assert t.schema.field("sold_at").type == pa.timestamp("us")  # naive local wall clock
    local = t.column("sold_at").to_pandas()
    assert local.min().date() == spec.start and local.max().date() == spec.end - dt.timedelta(days=1)
    # Open 09:00-18:00 local; closed on the named holidays, open every other day.
    assert local.dt.hour.min() == spec.open_hour and local.dt.hour.max() == spec.close_hour - 1
    closed = {d for d in spec.closures()}
    assert {(d.month, d.day) for d in closed} >= {(12, 25)} and len(closed) == 4
    days = set(local.dt.date)
    assert not days & closed
    assert len(days) == spec.days - len(closed)
    # Zero-padded member ids (text), guests, returns as negative units with negative amounts.
    ids = t.column("member_id")
    assert pc.all(pc.match_substring_regex(ids.drop_null(), r"^0\d{5}$")).as_py()
    assert 0.03 < ids.null_count / t.num_rows < 0.08
    units, total = t.column("units"), t.column("line_total")
    neg = pc.less(units, 0)
    assert pc.all(pc.equal(neg, pc.less(total, 0))).as_py()
    # Identical lines: the same purchase twice at the same second (a line is an order).
    frame = t.to_pandas()
    assert frame[frame["member_id"].notna()].duplicated().sum() > 100
    # The promotion's cohort: first purchases concentrate in the last drift_days.
    firsts = frame.dropna(subset=["member_id"]).groupby("member_id")["sold_at"].min()
    late = firsts >= dt.datetime.combine(spec.end - dt.timedelta(days=spec.drift_days), dt.time(0))
    share_of_time = spec.drift_days / spec.days
    assert late.mean() > 2 * share_of_time


def test_tz_aware_and_text_variants(tmp_path, synthetic_retailer):
    spec = dataclasses.replace(synthetic_retailer.RetailerSpec(), customers=300, tz_aware=True)
    t = synthetic_retailer.generate(spec)
    assert t.schema.field("sold_at").type == pa.timestamp("us", tz="America/Chicago")
    path = synthetic_retailer.write(t, tmp_path / "r.csv", delimiter=";", line_ending="\r\n")
    head = path.read_bytes().split(b"\r\n")[:2]
    assert head[0] == b"member_id;sold_at;sku;units;line_total;country_code;store_id;tender"
    assert head[1].split(b";")[0].startswith(b"0") and head[1].split(b";")[1][-6:] in (b"-05:00", b"-06:00")
