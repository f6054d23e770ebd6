"""Feature job on the real year: JVM start, then every weekly snapshot in one Spark pass.

Usage: python bench/bench_features.py [--master local[2]] [--workdir /tmp/bench-features]
Prepares validated partitions from the real data (collect, every line a product line: a
stand-in for the validation stage) once, then times the job. Prints the figures.
The DuckDB/pandas peer of the same features is not written yet (see the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import pyarrow as pa

from propensity.collect import collect, zone_store
from propensity.settings import Settings, _deep_merge, _YamlProfiles
from propensity.storage import partition_exists, read_partition, write_partition

FIRST, LAST = dt.date(2010, 12, 1), dt.date(2011, 12, 9)


def prepare(settings: Settings) -> None:
    store = zone_store(settings)
    day = FIRST
    while day <= LAST:
        if not partition_exists(store, "validated", "events", day):
            start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
            collect(settings, start, start + dt.timedelta(days=1))
            raw = read_partition(store, "raw", "events", day)
            kinds = pa.array(["product"] * raw.num_rows, pa.string())
            write_partition(store, "validated", "events", day, raw.append_column("line_kind", kinds))
        day += dt.timedelta(days=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default="/tmp/bench-features")
    args = parser.parse_args()
    overrides = {
        "zone_root": os.path.join(args.workdir, "zones"),
        "cache_dir": os.path.join(args.workdir, "cache"),
        "spark": {"master": args.master},
    }
    settings = Settings(**_deep_merge(_YamlProfiles(Settings)(), overrides))
    t0 = time.perf_counter()
    prepare(settings)
    print(f"prepare validated zone: {time.perf_counter() - t0:.1f} s")

    from propensity.features import compute_features, read_snapshot
    from propensity.spark import spark_session

    t0 = time.perf_counter()
    spark_session(
        args.master, "propensity-features", settings.spark.shuffle_partitions, settings.spark.driver_memory
    )
    print(f"JVM + SparkSession start ({args.master}): {time.perf_counter() - t0:.1f} s")

    last = LAST + dt.timedelta(days=1)
    t0 = time.perf_counter()
    compute_features(settings, [last])
    print(
        f"one snapshot (as of {last}, full year of history): {time.perf_counter() - t0:.1f} s, "
        f"{read_snapshot(settings, last).num_rows} customers"
    )

    weekly = [dt.date(2011, 1, 1) + dt.timedelta(days=7 * i) for i in range(50)]
    t0 = time.perf_counter()
    compute_features(settings, weekly)
    rows = sum(read_snapshot(settings, d).num_rows for d in weekly)
    print(f"{len(weekly)} weekly snapshots in one pass: {time.perf_counter() - t0:.1f} s, {rows} rows")


if __name__ == "__main__":
    main()
