"""Feature job vs a single-machine peer: Spark ``local[2]`` against the same features in DuckDB.

Usage: python bench/bench_features.py [--master local[2]] [--workdir /tmp/bench-features] [--scale 10]

Prepares validated partitions of the real year once (collect, every line a product line: a
stand-in for the validation stage that keeps this script minutes long), and a ``--scale``-times
synthetic scale-up of it (every event replicated with shifted customer and order ids). Then, on
each: the snapshot as of the day after the last one through ``compute_features`` (the job a DAG
run executes, the same code as on a cluster), against the same features written as one DuckDB
query over the same Parquet files. JVM + SparkSession start is timed on its own; the first
Spark job in a fresh JVM (what each DAG run pays) and the best of 3 warm ones are both shown, with the
load average at each (the host may be shared: compare figures of one run only). The scale-up also
runs in a JVM with the full tiered JIT, to show the trade-off of the session's client-compiler
default. The peer's values are checked against Spark's on a sample of customers before any figure
is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from benchline import bench_line

from propensity.core.settings import Settings, committed_settings
from propensity.core.storage import list_partitions, partition_exists, read_partition, write_partition
from propensity.core.zones import RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.ingest.collect import collect

FIRST, LAST = dt.date(2010, 12, 1), dt.date(2011, 12, 9)
GOAL_RATIO = 3.0

# The features of propensity.features.job.customer_features, in DuckDB SQL. Same definitions, same
# exact arithmetic: money summed as integer units of 0.0001, gap statistics from integer sums.
PEER_SQL = """
WITH lines AS (
    SELECT customer_id, event_time, order_id, item_id, amount, is_return, country
    FROM read_parquet($paths)
    WHERE customer_id IS NOT NULL AND line_kind = 'product'
),
dates AS (
    SELECT d AS as_of, d::TIMESTAMPTZ AS as_of_ts FROM unnest($dates::DATE[]) AS t(d)
),
orders AS (
    SELECT *, lag(order_time) OVER (
        PARTITION BY customer_id, is_return ORDER BY order_time, order_id) AS prev_time
    FROM (
        SELECT customer_id, order_id, is_return, min(event_time) AS order_time,
               abs(sum(round(amount * 10000)::BIGINT)) AS value, max(country) AS country
        FROM lines GROUP BY customer_id, order_id, is_return
    )
),
seen AS (
    SELECT o.*, d.as_of, d.as_of_ts,
           epoch_us(d.as_of_ts) // 1000000 - epoch_us(o.order_time) // 1000000 AS age_s,
           NOT o.is_return AS buy,
           NOT o.is_return AND o.prev_time IS NOT NULL
               AND o.prev_time >= d.as_of_ts - INTERVAL ($history) DAY AS gap_ok,
           epoch_us(o.order_time) // 1000000 - epoch_us(o.prev_time) // 1000000 AS gap_s
    FROM orders o JOIN dates d
      ON o.order_time < d.as_of_ts AND o.order_time >= d.as_of_ts - INTERVAL ($history) DAY
),
per AS (
    SELECT customer_id, as_of,
        max(order_time) FILTER (buy) AS last_order,
        min(order_time) FILTER (buy) AS first_order,
        count(*) FILTER (gap_ok) AS n_gaps,
        coalesce(sum(gap_s) FILTER (gap_ok), 0)::HUGEINT AS sum_gap,
        coalesce(sum(gap_s::HUGEINT * gap_s) FILTER (gap_ok), 0)::HUGEINT AS sum_gap2,
        coalesce(sum(value) FILTER (NOT buy AND age_s > 0 AND age_s <= 90 * 86400), 0) AS returned_90d,
        coalesce(sum(value) FILTER (buy AND age_s > 30 * 86400 AND age_s <= 60 * 86400), 0)
            AS spend_prev_30d,
        arg_max(country, (order_time, country)) FILTER (country IS NOT NULL) AS country,
        count(*) FILTER (buy AND age_s > 0 AND age_s <= 7 * 86400) AS orders_7d,
        count(*) FILTER (buy AND age_s > 0 AND age_s <= 30 * 86400) AS orders_30d,
        count(*) FILTER (buy AND age_s > 0 AND age_s <= 90 * 86400) AS orders_90d,
        count(*) FILTER (buy AND age_s > 0 AND age_s <= 365 * 86400) AS orders_365d,
        coalesce(sum(value) FILTER (buy AND age_s > 0 AND age_s <= 7 * 86400), 0) AS money_7d,
        coalesce(sum(value) FILTER (buy AND age_s > 0 AND age_s <= 30 * 86400), 0) AS money_30d,
        coalesce(sum(value) FILTER (buy AND age_s > 0 AND age_s <= 90 * 86400), 0) AS money_90d,
        coalesce(sum(value) FILTER (buy AND age_s > 0 AND age_s <= 365 * 86400), 0) AS money_365d
    FROM seen GROUP BY customer_id, as_of
    HAVING count(*) FILTER (buy AND age_s > 0 AND age_s <= 365 * 86400) > 0
),
items AS (
    SELECT i.customer_id, d.as_of, count(DISTINCT i.item_id) AS distinct_items_90d
    FROM (
        SELECT DISTINCT customer_id, item_id, (event_time AT TIME ZONE 'UTC')::DATE AS day
        FROM lines WHERE NOT is_return AND item_id IS NOT NULL
    ) i JOIN dates d ON i.day < d.as_of AND i.day >= d.as_of - INTERVAL 90 DAY
    GROUP BY i.customer_id, d.as_of
)
SELECT p.as_of, p.customer_id,
    p.as_of - (p.last_order AT TIME ZONE 'UTC')::DATE AS recency_days,
    (p.last_order AT TIME ZONE 'UTC')::DATE - (p.first_order AT TIME ZONE 'UTC')::DATE AS tenure_days,
    p.as_of - (p.first_order AT TIME ZONE 'UTC')::DATE AS days_since_first_order,
    orders_7d, orders_30d, orders_90d, orders_365d,
    money_7d::DOUBLE / 10000 AS spend_7d, money_30d::DOUBLE / 10000 AS spend_30d,
    money_90d::DOUBLE / 10000 AS spend_90d, money_365d::DOUBLE / 10000 AS spend_365d,
    CASE WHEN orders_90d > 0 THEN money_90d::DOUBLE / 10000 / orders_90d ELSE 0.0 END AS aov_90d,
    coalesce(i.distinct_items_90d, 0) AS distinct_items_90d,
    CASE WHEN money_90d + returned_90d > 0
         THEN (returned_90d::DOUBLE / 10000) / ((money_90d + returned_90d)::DOUBLE / 10000) ELSE 0.0 END
        AS return_rate_90d,
    CASE WHEN n_gaps > 0 THEN sum_gap::DOUBLE / n_gaps / 86400 END AS mean_days_between_orders,
    CASE WHEN n_gaps > 0 THEN
        sqrt(greatest((n_gaps * sum_gap2 - sum_gap * sum_gap)::DOUBLE, 0.0)) / n_gaps / 86400
    END AS std_days_between_orders,
    ln(1 + greatest(money_30d::DOUBLE / 10000, 0.0)) - ln(1 + greatest(spend_prev_30d::DOUBLE / 10000, 0.0))
        AS spend_trend_30d,
    CASE WHEN p.country IS NULL THEN NULL WHEN p.country IN (SELECT unnest($home)) THEN 1.0 ELSE 0.0
    END AS is_home_country,
    p.country
FROM per p LEFT JOIN items i USING (customer_id, as_of)
ORDER BY p.as_of, p.customer_id
"""


def settings_for(workdir: str, master: str) -> Settings:
    overrides = {
        "zone_root": os.path.join(workdir, "zones"),
        "cache_dir": os.path.join(workdir, "cache"),
        "spark": {"master": master},
    }
    return committed_settings(**overrides)


def prepare(settings: Settings) -> None:
    """Validated partitions of the real year (collect; every line a product line)."""
    store = zone_store(settings)
    day = FIRST
    while day <= LAST:
        if not partition_exists(store, *VALIDATED_EVENTS, day):
            start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
            collect(settings, start, start + dt.timedelta(days=1))
            raw = read_partition(store, *RAW_EVENTS, day)
            kinds = pa.array(["product"] * raw.num_rows, pa.string())
            write_partition(store, *VALIDATED_EVENTS, day, raw.append_column("line_kind", kinds))
        day += dt.timedelta(days=1)


def scale_up(source: Settings, target: Settings, factor: int) -> None:
    """Every validated day of ``source`` ``factor`` times: copy k gets ids suffixed ``~k``."""
    src, dst = zone_store(source), zone_store(target)
    for day in list_partitions(src, *VALIDATED_EVENTS):
        if partition_exists(dst, *VALIDATED_EVENTS, day):
            continue
        table = read_partition(src, *VALIDATED_EVENTS, day)
        copies = [table]
        for k in range(1, factor):
            copy = table
            for col in ("customer_id", "order_id"):
                i = copy.schema.get_field_index(col)
                copy = copy.set_column(i, col, pc.binary_join_element_wise(copy[col], f"{k}", "~"))
            copies.append(copy)
        write_partition(dst, *VALIDATED_EVENTS, day, pa.concat_tables(copies))


def peer_features(settings: Settings, as_of: Sequence[dt.date], threads: int) -> tuple[pa.Table, float]:
    """The snapshot rows of ``as_of`` computed by DuckDB from the same validated files; seconds."""
    import duckdb

    from propensity.features.job import validated_days_needed

    store = zone_store(settings)
    days, _, _ = validated_days_needed(store, as_of, settings.features.history_days)
    paths = [store.path(*VALIDATED_EVENTS, f"date={d.isoformat()}", "part-0.parquet") for d in days]
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    params = {
        "paths": paths,
        "dates": list(as_of),
        "history": settings.features.history_days,
        "home": list(settings.features.home_countries) or [None],
    }
    table = con.execute(PEER_SQL, params).to_arrow_table()
    con.close()
    return table, time.perf_counter() - t0


def check_peer(ours: pa.Table, peer: pa.Table, sample: int = 500) -> str:
    """Every feature of a random sample of customers: integers exactly, floats to 1e-12.

    (DuckDB has no log1p: ``ln(1 + x)`` may differ from Spark's in the last bits.)"""
    from propensity.features.spec import INT_FEATURES, MODEL_FEATURES

    mine = {r["customer_id"]: r for r in ours.to_pylist()}
    theirs = {r["customer_id"]: r for r in peer.to_pylist()}
    if set(mine) != set(theirs):
        raise AssertionError(f"customers differ: {len(set(mine) ^ set(theirs))} not in both")
    ids = random.Random(0).sample(sorted(mine), min(sample, len(mine)))
    for cid in ids:
        # The peer's SQL has the 18 v1 features; issue 19's (BG/NBD, rhythm) are Spark's only.
        for name in (*(n for n in MODEL_FEATURES if n in peer.column_names), "country"):
            a, b = mine[cid][name], theirs[cid][name]
            same = (a is None and b is None) or (
                a is not None
                and b is not None
                and (
                    a == b
                    if name in INT_FEATURES or name == "country"
                    else math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
                )
            )
            if not same:
                raise AssertionError(f"customer {cid} {name}: spark {a!r} != peer {b!r}")
    return f"peer == spark on {len(ids)} sampled customers x {len(MODEL_FEATURES) + 1} columns"


def line_level_floor(spark, settings: Settings, as_of: dt.date) -> float:
    """Seconds for the two line-level aggregations any exact computation of these features needs,
    alone, in one Spark job: lines grouped by order (time and value), and each customer's distinct
    items over 90 days. The feature job cannot be faster than this on the same session."""
    from pyspark.sql import functions as F

    from propensity.features.job import money_units, product_events, read_validated, validated_days_needed

    store = zone_store(settings)
    days, _, _ = validated_days_needed(store, [as_of], settings.features.history_days)
    lines = product_events(read_validated(spark, store, days))
    orders = lines.groupBy("customer_id", "order_id", "is_return", "country").agg(
        F.min("event_time").alias("t"), F.sum(money_units(F.col("amount"))).alias("v")
    )
    start = dt.datetime.combine(as_of - dt.timedelta(days=90), dt.time(0), tzinfo=dt.UTC)
    end = dt.datetime.combine(as_of, dt.time(0), tzinfo=dt.UTC)
    recent = ~F.col("is_return") & (F.col("event_time") >= start) & (F.col("event_time") < end)
    items = (
        lines.where(recent & F.col("item_id").isNotNull())
        .groupBy("customer_id")
        .agg(F.countDistinct("item_id").alias("n"))
    )
    t0 = time.perf_counter()
    orders.agg(F.max("t"), F.sum("v")).crossJoin(items.agg(F.sum("n"))).collect()
    return time.perf_counter() - t0


def run_one(settings: Settings, as_of: dt.date, threads: int, jit: str, floor: bool = False) -> dict:
    """In a fresh process: JVM start, the job (first = what a DAG run pays, then best of 3 warm),
    with ``floor`` the :func:`line_level_floor` (best of 3), then the peer.

    ``jit``: ``quick`` (the session's default, client compiler only) or ``full`` (tiered, the
    JVM's default). Each figure carries the 1-minute load average before and after it.
    """
    from propensity.core.spark import QUICK_JIT, spark_session
    from propensity.features.job import compute_features, read_snapshot

    t0 = time.perf_counter()
    spark = spark_session(
        settings.spark.master,
        "propensity-features",
        settings.spark.shuffle_partitions,
        settings.spark.driver_memory,
        java_options=QUICK_JIT if jit == "quick" else "",
    )
    spark.sparkContext.setLogLevel("ERROR")
    out = {"jvm_start": time.perf_counter() - t0, "load_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    compute_features(settings, [as_of])
    out["spark_first"] = time.perf_counter() - t0
    out["load_first"] = os.getloadavg()[0]
    # Warm: best of 3 runs, as the peer's figure is its best of 2.
    out["spark_warm_runs"] = []
    for _ in range(3):
        t0 = time.perf_counter()
        compute_features(settings, [as_of])
        out["spark_warm_runs"].append(time.perf_counter() - t0)
    out["spark_warm"] = min(out["spark_warm_runs"])
    out["load_warm"] = os.getloadavg()[0]
    if floor:
        out["floor_runs"] = [line_level_floor(spark, settings, as_of) for _ in range(3)]
        out["floor"] = min(out["floor_runs"])
    ours = read_snapshot(settings, as_of)
    peer_runs = []
    for _ in range(2):
        peer, seconds = peer_features(settings, [as_of], threads)
        peer_runs.append(seconds)
    out["load_peer"] = os.getloadavg()[0]
    store = zone_store(settings)
    out |= {
        "peer_runs": peer_runs,
        "peer": min(peer_runs),
        "customers": ours.num_rows,
        "events": sum(
            pq.ParquetFile(store.path(*VALIDATED_EVENTS, f"date={d}", "part-0.parquet")).metadata.num_rows
            for d in list_partitions(store, *VALIDATED_EVENTS)
        ),
        "guard": check_peer(ours, peer.drop_columns(["as_of"])),
    }
    return out


def features_bench_line(figure: str, ours: float, peer: float) -> str:
    return bench_line(figure, ours, peer, f"<= {GOAL_RATIO:g}x", ours / peer <= GOAL_RATIO, "s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default="/tmp/bench-features")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one zone, JSON out
    parser.add_argument("--jit", default="quick", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = int(args.master[len("local[") : -1]) if args.master.startswith("local[") else os.cpu_count()
    as_of = LAST + dt.timedelta(days=1)
    if args.one:
        settings = settings_for(args.one, args.master)
        print("RESULT " + json.dumps(run_one(settings, as_of, threads, args.jit, args.floor)))
        return

    import duckdb
    import pyspark

    real = settings_for(args.workdir, args.master)
    scaled_dir = os.path.join(args.workdir, f"x{args.scale}")
    t0 = time.perf_counter()
    prepare(real)
    scale_up(real, settings_for(scaled_dir, args.master), args.scale)
    print(f"prepare validated zones (kept in {args.workdir}): {time.perf_counter() - t0:.1f} s")
    print(
        f"spark {pyspark.__version__} {args.master} vs duckdb {duckdb.__version__} ({threads} threads); "
        f"{os.cpu_count()} cores, python {platform.python_version()}; snapshot as of {as_of}, "
        f"{real.features.history_days} days of history"
    )
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    results = {}
    scaled = f"{args.scale}x scale-up"
    runs = (
        ("real year", args.workdir, "quick"),
        (scaled, scaled_dir, "quick"),
        (f"{scaled}, full JIT", scaled_dir, "full"),
    )
    for label, workdir, jit in runs:
        # A process per zone: each Spark figure is the first job of a fresh JVM, as in a DAG run.
        child = subprocess.run(
            [sys.executable, __file__, "--master", args.master, "--one", workdir, "--jit", jit]
            + (["--floor"] if workdir == scaled_dir else []),
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [ln for ln in child.stdout.splitlines() if ln.startswith("RESULT ")]
        if child.returncode or not lines:
            raise SystemExit(f"{label} failed (rc {child.returncode}):\n{child.stderr[-3000:]}")
        r = results[label] = json.loads(lines[-1][len("RESULT ") :])
        print(
            f"{label}: {r['events']:,} events -> {r['customers']:,} customers\n"
            f"  JVM + SparkSession start {r['jvm_start']:.1f} s (not in the figures; load {r['load_start']:.1f})\n"
            f"  spark: first job {r['spark_first']:.1f} s (load {r['load_first']:.1f}), "
            f"warm {r['spark_warm']:.1f} s (best of {', '.join(f'{t:.1f}' for t in r['spark_warm_runs'])}; "
            f"load {r['load_warm']:.1f})\n"
            + (
                f"  spark floor: the two line-level aggregations alone {r['floor']:.1f} s (best of "
                f"{', '.join(f'{t:.1f}' for t in r['floor_runs'])}) = {r['floor'] / r['peer']:.1f}x the peer's "
                "whole job\n"
                if "floor" in r
                else ""
            )
            + f"  duckdb: {r['peer']:.2f} s (runs {', '.join(f'{t:.2f}' for t in r['peer_runs'])}; "
            f"load {r['load_peer']:.1f})\n"
            f"  correctness guard: {r['guard']}"
        )
    # What no rewrite of the job can beat on this session: its two line-level aggregations alone.
    for label in (f"{scaled}, full JIT", scaled):
        r = results[label]
        jit = ", full JIT" if label.endswith("full JIT") else ""
        figure = (
            f"features {r['events'] / 1e6:.1f}M rows, floor: the 2 line-level aggregations alone, warm{jit}"
        )
        print(bench_line(figure, r["floor"], r["peer"], None, None, "s"))
    # Warm figures first; the last line is the figure: 5M rows, what a DAG run pays.
    # The full-JIT run (not what the DAG runs) shows the JIT trade-off of propensity.core.spark.
    order = [f"{scaled}, full JIT", "real year", scaled]
    for run, words in (("spark_warm", "warm JVM"), ("spark_first", "first job of a fresh JVM")):
        for label in order:
            r = results[label]
            size = "real year" if label == "real year" else f"{r['events'] / 1e6:.1f}M rows"
            jit = ", full JIT" if label.endswith("full JIT") else ""
            print(features_bench_line(f"features {size}, one snapshot, {words}{jit}", r[run], r["peer"]))


if __name__ == "__main__":
    main()
