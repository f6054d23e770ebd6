"""Feast on Redis vs raw redis-py: materialization rate and one customer's online lookup.

Usage: python bench/bench_feast.py [--customers 50000] [--calls 1000] [--redis 127.0.0.1:6379] [--db 13]

A synthetic snapshot of ``--customers`` rows (the real snapshot schema, seeded values) is written
to a temporary offline zone. Ours: ``materialize_dates`` (what the features DAG runs: Feast reads
the Parquet snapshot and keeps the latest row per customer; the project's batch engine,
``propensity.features.feast_redis``, serializes from Arrow and writes Redis). Peer: redis-py writing the very
hashes ours wrote (read back byte for byte) to other keys, in pipelines of 1,000. Reference, no
goal: Feast's stock path (its local engine: protobuf per value, ``online_write_batch``) on the same
rows into another project, whose hashes must equal ours byte for byte. Then 1,000 lookups of one
customer each: ``online_features`` over a long-lived store (what the API calls) against redis-py
``HMGET`` of the same key and fields. Loopback only; every key written is deleted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid

import numpy as np
import pyarrow as pa
from benchline import bench_line

from propensity.core.settings import Settings, committed_settings
from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features.spec import FEATURE_VIEW, INT_FEATURES, MODEL_FEATURES, SNAPSHOT_SCHEMA
from propensity.features.store import feature_store, materialize_dates, online_features

AS_OF = dt.date(2011, 12, 10)
RAW_PREFIX = b"bench-raw:"
PIPELINE = 1_000


def synthetic_snapshot(customers: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = dt.datetime.combine(AS_OF, dt.time(0), tzinfo=dt.UTC)
    columns: dict[str, object] = {
        "customer_id": [f"B{i:07d}" for i in range(customers)],
        "event_timestamp": [ts] * customers,
    }
    for name in MODEL_FEATURES:
        if name in INT_FEATURES:
            columns[name] = rng.integers(0, 365, customers)
        else:
            values = rng.gamma(2.0, 50.0, customers)
            # Some nulls, as in real snapshots (one order: no gap statistics).
            columns[name] = pa.array(values, mask=rng.random(customers) < 0.1)
    columns["country"] = rng.choice(["United Kingdom", "France", "Germany"], customers)
    return pa.table(columns).cast(SNAPSHOT_SCHEMA)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--db", type=int, default=13)
    args = parser.parse_args()
    host, port = args.redis.split(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback Redis only")

    import feast
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    work = tempfile.mkdtemp(prefix="bench-feast-")
    tag = uuid.uuid4().hex[:8]
    project, stock_project = f"bench_{tag}", f"bench_stock_{tag}"

    def settings_for(name: str) -> Settings:
        overrides = {
            "zone_root": os.path.join(work, "zones"),
            "cache_dir": os.path.join(work, "cache"),
            "features": {
                "online_store": "redis",
                "redis_connection": f"{args.redis},db={args.db}",
                "feast_project": name,
                "registry": os.path.join(work, f"{name}-registry.db"),
            },
        }
        return committed_settings(**overrides)

    settings, stock_settings = settings_for(project), settings_for(stock_project)
    client = redis.Redis(host=host, port=int(port), db=args.db)
    print(
        f"feast {feast.__version__}, redis-py {redis.__version__}, redis server "
        f"{client.info('server')['redis_version']} at {args.redis} db {args.db}; {os.cpu_count()} cores; "
        f"{args.customers:,} customers x {len(MODEL_FEATURES) + 1} features"
    )
    try:
        write_partition(zone_store(settings), *SNAPSHOTS, AS_OF, synthetic_snapshot(args.customers))
        store = feature_store(settings, apply=True)
        feature_store(stock_settings, apply=True, engine="stock")

        t0 = time.perf_counter()
        result = materialize_dates(settings, [AS_OF])
        feast_s = time.perf_counter() - t0
        if result["write_path"] != "arrow-redis":
            raise SystemExit(f"materialize_dates took the {result['write_path']} path, not the Arrow one")
        keys = sorted(client.scan_iter(match=f"*{project}", count=10_000))
        if len(keys) != args.customers:
            raise SystemExit(f"Feast wrote {len(keys)} keys for {args.customers} rows")

        # The same rows, byte for byte: what Feast wrote, read back.
        hashes = []
        for i in range(0, len(keys), PIPELINE):
            with client.pipeline(transaction=False) as pipe:
                for key in keys[i : i + PIPELINE]:
                    pipe.hgetall(key)
                hashes.extend(zip(keys[i : i + PIPELINE], pipe.execute(), strict=True))
        t0 = time.perf_counter()
        for i in range(0, len(hashes), PIPELINE):
            with client.pipeline(transaction=False) as pipe:
                for key, mapping in hashes[i : i + PIPELINE]:
                    pipe.hset(RAW_PREFIX + key, mapping=mapping)
                pipe.execute()
        raw_s = time.perf_counter() - t0
        feast_rate, raw_rate = args.customers / feast_s, args.customers / raw_s

        t0 = time.perf_counter()
        materialize_dates(stock_settings, [AS_OF], engine="stock")
        stock_s = time.perf_counter() - t0
        stock_rate = args.customers / stock_s
        print(
            f"materialize: ours (Arrow->Redis engine) {feast_s:.2f} s ({feast_rate:,.0f} rows/s, reading the "
            f"Parquet snapshot included); redis-py pipelined HSET {raw_s:.2f} s ({raw_rate:,.0f} rows/s); "
            f"Feast's stock path {stock_s:.2f} s ({stock_rate:,.0f} rows/s)"
        )
        # Guard: the fast path wrote exactly what Feast's own write path wrote, key for key.
        suffix, stock_suffix = project.encode(), stock_project.encode()
        stock_keys = sorted(client.scan_iter(match=f"*{stock_project}", count=10_000))
        if [k[: -len(stock_suffix)] for k in stock_keys] != [k[: -len(suffix)] for k in keys]:
            raise SystemExit("the stock path wrote other keys than ours")
        for i in range(0, len(stock_keys), PIPELINE):
            with client.pipeline(transaction=False) as pipe:
                for key in stock_keys[i : i + PIPELINE]:
                    pipe.hgetall(key)
                for (key, ours), stock in zip(hashes[i : i + PIPELINE], pipe.execute(), strict=True):
                    if ours != stock:
                        raise SystemExit(f"{key!r}: ours {ours} != Feast's stock path {stock}")
        print(f"correctness guard: all {len(keys):,} hashes byte-identical to Feast's stock path")

        # Why the stock path is slow: its Arrow -> protobuf step (per value, in Python) runs before
        # any write, whatever the online store, so rows / its time caps it.
        from feast.utils import _convert_arrow_to_proto

        view = store.get_feature_view(FEATURE_VIEW)
        key_types = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
        snapshot = synthetic_snapshot(args.customers)
        t0 = time.perf_counter()
        _convert_arrow_to_proto(snapshot, view, key_types)
        convert_s = time.perf_counter() - t0
        print(
            f"  stock path: Arrow -> protobuf conversion alone {convert_s:.2f} s ({convert_s / stock_s:.0%}): "
            f"it cannot beat {args.customers / convert_s:,.0f} rows/s "
            f"({args.customers / convert_s / raw_rate:.2f}x raw) with a free Redis write"
        )

        ids = random.Random(0).choices([f"B{i:07d}" for i in range(args.customers)], k=args.calls)
        names = [*MODEL_FEATURES, "country"]
        fields = [_mmh3(f"{FEATURE_VIEW}:{n}") for n in names] + [f"_ts:{FEATURE_VIEW}".encode()]

        def redis_key(cid: str) -> bytes:
            entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=cid)])
            return _redis_key(project, entity, entity_key_serialization_version=3)

        # Guard: both reads see the same stored values.
        sample = ids[0]
        via_feast = online_features(settings, [sample], store=store)[0]
        raw_values = client.hmget(redis_key(sample), fields)
        decoded = {}
        for n, blob in zip(names, raw_values, strict=False):
            value = Value.FromString(blob)
            kind = value.WhichOneof("val")
            decoded[n] = getattr(value, kind) if kind and kind != "null_val" else None
        if decoded != via_feast.values:
            raise SystemExit(f"raw read {decoded} != feast {via_feast.values}")
        print(f"correctness guard: raw HMGET decodes to Feast's values for customer {sample}")

        feast_ms, raw_ms = [], []
        for cid in ids[:20]:  # warm-up: registry cache, connections
            online_features(settings, [cid], store=store)
            client.hmget(redis_key(cid), fields)
        for cid in ids:
            t0 = time.perf_counter()
            online_features(settings, [cid], store=store)
            feast_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            client.hmget(redis_key(cid), fields)
            raw_ms.append((time.perf_counter() - t0) * 1000)
        (f50, f99), (r50, r99) = percentiles(feast_ms), percentiles(raw_ms)
        print(
            f"lookup of one customer, {args.calls} calls: feast p50 {f50:.2f} ms p99 {f99:.2f} ms; "
            f"redis-py HMGET p50 {r50:.3f} ms p99 {r99:.3f} ms"
        )
        rate_ratio = feast_rate / raw_rate
        print(
            bench_line(
                f"materialize into Redis, {args.customers} rows",
                feast_rate,
                raw_rate,
                ">= 0.5x raw rate",
                rate_ratio >= 0.5,
                "rows/s",
            )
        )
        print(
            bench_line(
                f"materialize into Redis, {args.customers} rows, Feast stock path (reference)",
                stock_rate,
                raw_rate,
                None,
                None,
                "rows/s",
            )
        )
        print(bench_line("online lookup 1 customer p50", f50, r50, None, None, "ms"))
        print(bench_line("online lookup 1 customer p99", f99, r99, None, None, "ms"))
    finally:
        try:
            feature_store(settings).teardown()
            feature_store(stock_settings, engine="stock").teardown()
        finally:
            for pattern in (f"*{project}", f"*{stock_project}", RAW_PREFIX + b"*"):
                for key in client.scan_iter(match=pattern, count=10_000):
                    client.delete(key)
            shutil.rmtree(work, ignore_errors=True)
    left = sum(
        1
        for pattern in (f"*{project}", f"*{stock_project}", RAW_PREFIX + b"*")
        for _ in client.scan_iter(match=pattern)
    )
    print(f"cleaned up: {left} bench keys left in db {args.db}")


if __name__ == "__main__":
    main()
