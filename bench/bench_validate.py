"""Validation cost: the Great Expectations suite vs the same checks hand-written in pandas.

One run measures, side by side, on one real day of the Online Retail export and on a synthetic
day of 1,000,000 lines (1% of them broken in the ways the suite catches):

* ``gx pandas``: the suite of ``propensity.ingest.expectations`` on a pandas DataFrame (what the
  ``validate`` task runs, minus file I/O and Data Docs), plus the row verdict (``decide``);
* ``hand pandas``: the same row checks, dedup and batch metrics written directly in pandas;
* ``gx spark``: the same suite on a Spark DataFrame (local[2]) where GE supports it.

Both pandas versions must reach the same verdict row for row (checked before timing is
reported). Goal: GE costs no more than 3x the hand-written checks.

GE's time has a part that does not depend on the data: building the metric graph and a result
object for each of the suite's ~28 expectations. The script measures it apart (the suite on the
first line of the real day), so the real day's ratio can be read as fixed cost + work on rows.
Both pandas versions run on the frame the ``validate`` task builds (``events_frame``: Arrow-backed
strings, categorical lineage), and a process validates with one cached GE context, as the
``validate`` task does when it writes no Data Docs.

    .venv/bin/python bench/bench_validate.py [--rows 1000000] [--no-spark]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from benchline import bench_line

from propensity.core.schema import EVENT_COLUMNS, RAW_SCHEMA
from propensity.core.settings import Settings, get_settings
from propensity.core.storage import read_partition
from propensity.core.zones import RAW_EVENTS, zone_store
from propensity.ingest.collect import collect
from propensity.ingest.expectations import PRODUCT, build_checks
from propensity.ingest.ge_runner import run_suite
from propensity.ingest.validate import events_frame, learn_bands
from propensity.ingest.verdict import DUPLICATE_KEY, decide

REAL_DAY = dt.date(2011, 11, 14)  # a Monday in the busy season: ~2,000-5,000 lines


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# -- the peer: the same checks by hand -------------------------------------------------------


def handwritten(
    frame: pd.DataFrame, settings: Settings, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """Row masks of every row-level check, dedup members and the batch metrics, in plain pandas."""
    v, source = settings.validation, settings.source
    q, price, ret = frame["quantity"], frame["unit_price"], frame["is_return"]
    t = frame["event_time"]
    sale, is_ret = (ret == False).fillna(False), (ret == True).fillna(False)  # noqa: E712
    rows: dict[str, pd.Series] = {}
    if not source.guest_rows:
        rows["customer_id_present"] = frame["customer_id"].isna()
    rows["event_time_present"] = t.isna()
    rows["event_time_not_before_day"] = (t < pd.Timestamp(start)).fillna(False)
    rows["event_time_not_after_day"] = (t >= pd.Timestamp(end)).fillna(False)
    rows["order_id_present"] = frame["order_id"].isna()
    if source.mapping.item_id:
        rows["item_id_present"] = frame["item_id"].isna()
    for column in ("quantity", "unit_price", "amount", "is_return"):
        rows[f"{column}_present"] = frame[column].isna()
    rows["values_parse"] = frame["_parse_errors"].notna()
    rows["quantity_nonzero"] = (q == 0).fillna(False)
    rows["sale_quantity_positive"] = (sale & (q < 1)).fillna(False)
    rows["return_quantity_negative"] = (is_ret & (q > -1)).fillna(False)
    rows["quantity_within_limit"] = (q.abs() > v.max_abs_quantity).fillna(False)
    rows["amount_within_limit"] = (frame["amount"].abs() > v.max_abs_amount).fillna(False)
    rows["unit_price_not_negative"] = (price < 0).fillna(False)
    product = (frame["line_kind"] == PRODUCT).fillna(False)
    rows["product_price_within_limit"] = (product & (price > v.max_unit_price)).fillna(False)
    dup_members = frame.duplicated(subset=DUPLICATE_KEY, keep=False)
    return {
        "rows": {k: np.flatnonzero(m.to_numpy(dtype=bool)) for k, m in rows.items()},
        "duplicates": np.flatnonzero(frame.duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy()),
        "dup_members": int(dup_members.sum()),
        "row_count": len(frame),
        "customer_share": float(frame["customer_id"].notna().mean()),
        "sale_amount_median": float(frame.loc[product & sale, "amount"].median()),
        "types": {c: str(frame[c].dtype) for c in EVENT_COLUMNS},
        "countries_unseen": sorted(set(frame["country"].dropna()) - {"United Kingdom", "France", "Germany"}),
    }


def gx_pandas(frame: pd.DataFrame, settings: Settings, checks) -> Any:
    results = run_suite(frame, checks)
    return results, decide(frame, checks, results, settings)


def same_verdict(frame: pd.DataFrame, checks, gx: Any, hand: dict[str, Any]) -> None:
    results, outcome = gx
    for check in checks:
        if check.level == "row":
            got, want = np.sort(results[check.name].rows), hand["rows"][check.name]
            assert np.array_equal(got, want), f"{check.name}: GE {len(got)} rows, hand {len(want)} rows"
    assert np.array_equal(np.flatnonzero(outcome.duplicates), hand["duplicates"]), "duplicates differ"
    assert results["no_exact_duplicates"].unexpected_count == hand["dup_members"]


# -- data ------------------------------------------------------------------------------------


def real_day(settings: Settings) -> pd.DataFrame:
    start = dt.datetime.combine(REAL_DAY, dt.time(0), tzinfo=dt.UTC)
    collect(settings, start, start + dt.timedelta(days=1))
    return events_frame(read_partition(zone_store(settings), *RAW_EVENTS, REAL_DAY), settings)


def synthetic_day(settings: Settings, n: int, day: dt.date) -> pd.DataFrame:
    """n lines of one day with 1% broken: negative stock adjustments, bad prices, outliers,
    parse failures, times outside the day, and exact copies."""
    rng = np.random.default_rng(7)
    start = pd.Timestamp(day, tz="UTC")
    qty = rng.integers(1, 25, n)
    returns = rng.random(n) < 0.02
    qty = np.where(returns, -qty, qty)
    price = np.round(rng.gamma(2.0, 2.0, n), 2)
    items = rng.integers(10000, 14000, n).astype(str)
    items[rng.random(n) < 0.005] = "POST"
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(
                np.where(rng.random(n) < 0.25, None, rng.integers(12000, 18000, n).astype(str)),
                dtype="string",
            ),
            "event_time": (start + pd.to_timedelta(rng.integers(7 * 3600, 20 * 3600, n), unit="s")).astype(
                "datetime64[us, UTC]"
            ),
            "order_id": pd.array((np.arange(n) // 20 + 500000).astype(str), dtype="string"),
            "item_id": pd.array(items, dtype="string"),
            "quantity": pd.array(qty, dtype="Int64"),
            "unit_price": price,
            "amount": qty * price,
            "is_return": pd.array(returns, dtype="boolean"),
            "country": pd.array(
                rng.choice(["United Kingdom", "France", "Germany", "Spain"], n, p=[0.85, 0.05, 0.05, 0.05]),
                dtype="string",
            ),
            "_source_file": pd.array(np.full(n, "synthetic.csv"), dtype="string"),
            "_source_row": pd.array(np.arange(1, n + 1), dtype="Int64"),
            "_parse_errors": pd.array(np.full(n, None), dtype="string"),
        }
    )
    bad = rng.choice(n, size=n // 100, replace=False)
    kinds = np.array_split(bad, 6)
    frame.loc[kinds[0], ["quantity", "amount"]] = [-3, -3.0]  # stock adjustments outside returns
    frame.loc[kinds[0], "is_return"] = False
    frame.loc[kinds[1], "unit_price"] = -1.0
    frame.loc[kinds[2], "quantity"] = 80995
    frame.loc[kinds[3], ["quantity", "amount"]] = [pd.NA, np.nan]
    frame.loc[kinds[3], "_parse_errors"] = "quantity: 'x' is not a number"
    frame.loc[kinds[4], "event_time"] = start + pd.Timedelta(days=3)
    # Exact copies: the lines after each sampled one repeat it (lineage differs, content not).
    src = kinds[5][kinds[5] < n - 1]
    frame.loc[src + 1, EVENT_COLUMNS + ["_parse_errors"]] = frame.loc[
        src, EVENT_COLUMNS + ["_parse_errors"]
    ].to_numpy()
    table = pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False)
    return events_frame(table, settings)


# -- Spark -----------------------------------------------------------------------------------


def spark_frame(spark, frame: pd.DataFrame, folder: str):
    path = os.path.join(folder, f"frame-{len(frame)}.parquet")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    sdf = spark.read.parquet(path).cache()
    sdf.count()
    return sdf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        base = get_settings()
        settings = base.model_copy(update={"zone_root": os.path.join(tmp, "zones")})
        cases = [("real day " + REAL_DAY.isoformat(), real_day(settings), REAL_DAY)]
        synthetic = dt.date(2011, 11, 15)
        cases.append(
            (f"synthetic {args.rows:,} lines", synthetic_day(settings, args.rows, synthetic), synthetic)
        )

        spark = None
        if not args.no_spark:
            from propensity.core.spark import spark_session

            spark = spark_session(master="local[2]", app_name="bench-validate", shuffle_partitions=4)
            spark.sparkContext.setLogLevel("ERROR")

        print(f"{'case':<28} {'engine':<12} {'rows':>10} {'seconds':>9} {'rows/s':>12} {'vs hand':>8}")
        for label, frame, day in cases:
            start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
            end = start + dt.timedelta(days=1)
            bands = learn_bands(settings, day, [], rows=len(frame))
            checks = build_checks(settings, bands)
            repeat = args.repeat if len(frame) < 100_000 else 1
            hand_s, hand = best_of(repeat, lambda f=frame, s=start, e=end: handwritten(f, settings, s, e))
            gx_s, gx = best_of(repeat, lambda f=frame, c=checks: gx_pandas(f, settings, c))
            same_verdict(frame, checks, gx, hand)  # same rows quarantined, same copies removed
            n = len(frame)
            print(
                f"{label:<28} {'hand pandas':<12} {n:>10,} {hand_s:>9.3f} {n / hand_s:>12,.0f} {1.0:>7.1f}x"
            )
            print(
                f"{label:<28} {'gx pandas':<12} {n:>10,} {gx_s:>9.3f} {n / gx_s:>12,.0f} {gx_s / hand_s:>7.1f}x"
            )
            print(
                bench_line(
                    f"validation, {label}",
                    gx_s,
                    hand_s,
                    "ratio <= 3 vs hand-written pandas",
                    gx_s / hand_s <= 3,
                    "s",
                )
            )
            if n < 100_000:
                one = frame.iloc[:1]
                fixed_s, _ = best_of(repeat, lambda f=one, c=checks: run_suite(f, c))
                print(
                    f"{label:<28} {'gx, 1 line':<12} {1:>10,} {fixed_s:>9.3f} {'':>12} "
                    f"{fixed_s / hand_s:>7.1f}x  (GE's fixed cost per run: {fixed_s / len(checks) * 1000:.1f} ms "
                    f"x {len(checks)} expectations)"
                )
            if spark is not None:
                sdf = spark_frame(spark, frame, tmp)
                spark_checks = build_checks(settings, bands)
                sp_s, sp = best_of(1, lambda s=sdf, c=spark_checks: run_suite(s, c, engine="spark"))
                for check in spark_checks:
                    if check.level == "row" and not sp[check.name].error:
                        assert sp[check.name].unexpected_count == len(hand["rows"][check.name]), check.name
                errors = sorted(c for c, r in sp.items() if r.error)
                note = f"  (not supported on Spark: {', '.join(errors)})" if errors else ""
                print(
                    f"{label:<28} {'gx spark':<12} {n:>10,} {sp_s:>9.3f} {n / sp_s:>12,.0f} {sp_s / hand_s:>7.1f}x{note}"
                )
                sdf.unpersist()
        if spark is not None:
            spark.stop()
        print("goal: gx pandas <= 3.0x hand pandas")


if __name__ == "__main__":
    main()
