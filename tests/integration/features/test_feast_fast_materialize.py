"""The Arrow->Redis batch engine against Feast's stock materialization: the same bytes in Redis.

Synthetic snapshots (ints with and without nulls, floats with nulls, NaN, -0.0 and inf, strings
with nulls, empty and non-ASCII ones) are materialized through Feast's stock path into one project
and through :mod:`propensity.features.feast_redis` into another, on the real Redis at 127.0.0.1:6379 (a
dedicated DB number, every key removed afterwards). Keys differ only by the project suffix; every
hash must be byte-identical (TTLs as well, to the second), and online lookups must return the same
values. Snapshots the fast path hands to Feast (unhandled column types, sub-microsecond or far
timestamps) are checked end to end the same way; a view of BOOL/INT32/FLOAT/INT64 columns is
written through both paths directly, in blocks and Feast batches of a few rows; a key of another
Redis type must make both paths fail with the same state left behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from propensity.core.settings import Settings, committed_settings
from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features.spec import FEATURE_VIEW, INT_FEATURES, MODEL_FEATURES, SNAPSHOT_SCHEMA
from propensity.features.store import (
    CustomerFeatures,
    _config_dict,
    definitions,
    feature_repo_dir,
    feature_store,
    materialize_dates,
    online_features,
    render_yaml,
)

pytestmark = pytest.mark.integration

REDIS_DB = 13
D1, D2, D3 = dt.date(2011, 1, 5), dt.date(2011, 1, 12), dt.date(2011, 1, 19)
# Overlapping customer sets: some only in the older snapshot, some in every one.
CUSTOMERS = {D1: range(0, 200), D2: range(100, 300), D3: [*range(50, 150), *range(300, 350)]}


def snapshot(as_of: dt.date, ids: list[int] | range, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(ids)
    columns: dict[str, object] = {
        "customer_id": [f"C{i:05d}" for i in ids],
        "event_timestamp": [dt.datetime.combine(as_of, dt.time(0), tzinfo=dt.UTC)] * n,
    }
    for j, name in enumerate(MODEL_FEATURES):
        if name in INT_FEATURES:
            values = rng.integers(-5, 400, n)
            values[::17], values[5::23], values[7::29] = 0, 2**40 + j, -(2**35)  # 1- to 10-byte varints
            null = rng.random(n) < (0.15 if j % 2 else 0.0)  # int columns with and without nulls
        else:
            values = rng.gamma(2.0, 50.0, n) * rng.choice([1.0, -1.0], n)
            values[::13], values[3::19], values[4::31], values[6::37] = 0.0, -0.0, np.nan, np.inf
            null = rng.random(n) < 0.1
        if as_of == D1 and name in ("orders_7d", "std_days_between_orders"):
            null = np.ones(n, dtype=bool)  # a column with no value at all
        columns[name] = pa.array(values, mask=null)
    country = rng.choice(["United Kingdom", "", "Côte d'Ivoire", "日本"], n).astype(object)
    country[rng.random(n) < 0.1] = None
    columns["country"] = pa.array(country, pa.string())
    return pa.table(columns).cast(SNAPSHOT_SCHEMA)


@pytest.fixture(scope="module")
def zone_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("feast-fast") / "zones")
    store = zone_store(committed_settings(**{"zone_root": root}))
    for seed, (day, ids) in enumerate(CUSTOMERS.items()):
        write_partition(store, *SNAPSHOTS, day, snapshot(day, ids, seed))
    return root


def settings_for(zone_root: str, folder: Path, project: str, online_store: str = "redis") -> Settings:
    overrides = {
        "zone_root": zone_root,
        "cache_dir": str(folder / "cache"),
        "features": {
            "online_store": online_store,
            "redis_connection": f"127.0.0.1:6379,db={REDIS_DB}",
            "feast_project": project,
            "registry": str(folder / f"{project}-registry.db"),
            "sqlite_path": str(folder / f"{project}-online.db"),
        },
    }
    return committed_settings(**overrides)


@pytest.fixture
def redis_client() -> Iterator:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    projects: list[str] = []
    yield client, projects
    for project in projects:
        for key in client.scan_iter(match=f"*{project}", count=10_000):
            client.delete(key)
        assert not list(client.scan_iter(match=f"*{project}"))


@pytest.fixture
def pair(zone_root, tmp_path, redis_client) -> tuple[Settings, Settings]:
    """Settings for a stock-path project and a fast-path project over the same snapshots."""
    tag = uuid.uuid4().hex[:8]
    stock, fast = f"stock_{tag}", f"fast_{tag}"
    redis_client[1].extend([stock, fast])
    return settings_for(zone_root, tmp_path, stock), settings_for(zone_root, tmp_path, fast)


def redis_state(client, project: str) -> dict[bytes, tuple[dict[bytes, bytes], bool]]:
    """Each key of the project (suffix cut off): its hash and whether it expires."""
    suffix = project.encode()
    return {
        key[: -len(suffix)]: (
            client.hgetall(key) if client.type(key) == b"hash" else client.get(key),
            client.ttl(key) > 0,
        )
        for key in client.scan_iter(match=f"*{project}", count=10_000)
    }


def expire_times(client, project: str) -> dict[bytes, float]:
    """Each key of the project (suffix cut off): when it expires, in Unix seconds (-1: never)."""
    suffix = project.encode()
    out = {}
    for key in client.scan_iter(match=f"*{project}", count=10_000):
        ms = client.execute_command("PEXPIRETIME", key)
        out[key[: -len(suffix)]] = ms / 1000 if ms >= 0 else -1
    return out


def assert_same_redis(client, stock: Settings, fast: Settings) -> dict:
    want = redis_state(client, stock.features.feast_project)
    got = redis_state(client, fast.features.feast_project)
    assert want, "the stock path wrote nothing"
    assert got.keys() == want.keys()
    different = [key for key in want if got[key] != want[key]]
    assert not different, (len(different), different[0], want[different[0]], got[different[0]])
    return want


def entity_key(settings: Settings, customer: str) -> bytes:
    """The Redis key Feast gives this customer."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer)])
    return _redis_key(settings.features.feast_project, entity, entity_key_serialization_version=3)


def stored_day(client, settings: Settings, customer: str) -> dt.date:
    from google.protobuf.timestamp_pb2 import Timestamp

    blob = client.hget(entity_key(settings, customer), f"_ts:{FEATURE_VIEW}")
    return Timestamp.FromString(blob).ToDatetime().date()


def test_same_bytes_over_dates_and_reruns(pair, redis_client):
    client, _ = redis_client
    stock, fast = pair
    steps = [
        [D2],
        [D1],  # older: must not overwrite D2's rows, only add customers D2 lacks
        [D1, D2, D3],  # the range: the latest row per customer wins
        [D3],  # a re-run writes nothing new
        [D2],  # older than what is stored for D3's customers
    ]
    seen: set[int] = set()
    for dates in steps:
        assert materialize_dates(stock, dates, engine="stock")["write_path"] == "feast"
        assert materialize_dates(fast, dates)["write_path"] == "arrow-redis"
        seen |= {i for d in dates for i in CUSTOMERS[d]}
        state = assert_same_redis(client, stock, fast)
        assert len(state) == len(seen)
    # Spot checks of the rule itself, on the fast side.
    assert stored_day(client, fast, "C00150") == D2  # in D1 and D2 only
    assert stored_day(client, fast, "C00120") == D3  # in all three
    assert stored_day(client, fast, "C00010") == D1  # only in D1

    ids = [f"C{i:05d}" for i in (0, 49, 50, 120, 199, 250, 310, 349)] + ["no-such-customer"]
    want, got = online_features(stock, ids), online_features(fast, ids)
    assert got == want  # nulls and NaN both come back as None, so plain equality holds
    assert sum(isinstance(g, CustomerFeatures) for g in got) == len(ids) - 1


def store_for(settings: Settings, engine: str, block_rows: int | None = None, **online: object):
    """A FeatureStore whose Redis online store has extra settings (key_ttl_seconds, skip_dedup)."""
    from feast import FeatureStore, RepoConfig

    config = _config_dict(settings, engine=engine)
    config["online_store"].update(online)
    if block_rows is not None:
        config["batch_engine"]["block_rows"] = block_rows
    store = FeatureStore(config=RepoConfig(**config, repo_path=feature_repo_dir()))
    store.apply(definitions(settings))
    return store


def materialize_with(store, day: dt.date) -> None:
    at = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    store.materialize(start_date=at, end_date=at, feature_views=[FEATURE_VIEW])


@pytest.mark.parametrize(
    "online",
    [{"key_ttl_seconds": 3600}, {"skip_dedup": True}],
    ids=["key_ttl_seconds", "skip_dedup"],
)
def test_store_options_behave_as_feast(pair, redis_client, online):
    client, _ = redis_client
    stock, fast = pair
    stores = store_for(stock, "stock", **online), store_for(fast, "fast", block_rows=64, **online)
    projects = stock.features.feast_project, fast.features.feast_project
    days = (D2, D1, D3)  # D3 rewrites keys written with D2: their TTL must be renewed
    windows: dict[tuple[int, dt.date], tuple[float, float]] = {}  # when each path wrote each day
    for day in days:
        for side, store in enumerate(stores):
            before = time.time()
            materialize_with(store, day)
            windows[side, day] = before, time.time()
        state = assert_same_redis(client, stock, fast)
    assert stores[1].provider.batch_engine.paths == {FEATURE_VIEW: "arrow-redis"}
    expiring = {expires for _, expires in state.values()}
    assert expiring == {"key_ttl_seconds" in online}
    ttl = online.get("key_ttl_seconds")
    expiry = [expire_times(client, project) for project in projects]
    for key, (fields, _) in state.items():
        from google.protobuf.timestamp_pb2 import Timestamp

        day = Timestamp.FromString(fields[f"_ts:{FEATURE_VIEW}".encode()]).ToDatetime().date()
        for side in (0, 1):
            if ttl is None:
                assert expiry[side][key] == -1
                continue
            # Expires ttl seconds after the write of the day now stored: within that call, to the second.
            start, stop = windows[side, day]
            assert start + ttl - 1 <= expiry[side][key] <= stop + ttl + 1, (side, key, day)
        if ttl is not None:  # the two paths wrote the same key one call apart
            start, stop = windows[0, day][0], windows[1, day][1]
            assert abs(expiry[1][key] - expiry[0][key]) <= stop - start + 1
    # skip_dedup: the older snapshot overwrites (Feast's documented trade-off); otherwise it does not.
    assert stored_day(client, fast, "C00150") == (D1 if "skip_dedup" in online else D2)
    assert stored_day(client, fast, "C00120") == D3
    for store in stores:
        store.teardown()


def test_feast_cli_materialize_uses_the_engine(pair, redis_client, tmp_path):
    client, _ = redis_client
    stock, fast = pair
    materialize_dates(stock, [D3], engine="stock")
    feature_store(fast, apply=True)
    yaml_file = tmp_path / "feature_store.yaml"
    yaml_file.write_text(render_yaml(fast))
    assert "propensity.features.feast_redis.ArrowRedisEngine" in yaml_file.read_text()
    at = "2011-01-19T00:00:00"
    feast = Path(sys.executable).with_name("feast")
    cmd = [str(feast), "--log-level", "INFO", "-f", str(yaml_file), "materialize", at, at, "-v", FEATURE_VIEW]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Arrow->Redis path" in done.stderr
    assert_same_redis(client, stock, fast)


def test_sqlite_takes_the_stock_path(zone_root, tmp_path):
    settings = settings_for(zone_root, tmp_path, f"lite_{uuid.uuid4().hex[:8]}", online_store="sqlite")
    assert materialize_dates(settings, [D2])["write_path"] == "feast"
    got = online_features(settings, ["C00150"])[0]
    assert got.as_of == dt.datetime.combine(D2, dt.time(0), tzinfo=dt.UTC)


def zone_with(tmp_path: Path, tables: dict[dt.date, pa.Table]) -> str:
    """A zone root of its own holding these snapshot partitions."""
    root = str(tmp_path / f"zones-{uuid.uuid4().hex[:8]}")
    store = zone_store(committed_settings(**{"zone_root": root}))
    for day, table in tables.items():
        write_partition(store, *SNAPSHOTS, day, table)
    return root


def pair_on(root: str, tmp_path: Path, redis_client) -> tuple[Settings, Settings]:
    tag = uuid.uuid4().hex[:8]
    stock, fast = f"stock_{tag}", f"fast_{tag}"
    redis_client[1].extend([stock, fast])
    return settings_for(root, tmp_path, stock), settings_for(root, tmp_path, fast)


def test_a_rerun_writes_nothing_new(tmp_path, redis_client, caplog):
    """Same timestamp, other values: Feast keeps what is stored, and so must the fast path."""
    client, _ = redis_client
    root = zone_with(tmp_path, {D2: snapshot(D2, CUSTOMERS[D2], 0)})
    stock, fast = pair_on(root, tmp_path, redis_client)
    for settings, engine in ((stock, "stock"), (fast, "fast")):
        materialize_dates(settings, [D2], engine=engine)
    before = assert_same_redis(client, stock, fast)
    zone_with_root = zone_store(committed_settings(**{"zone_root": root}))
    write_partition(zone_with_root, *SNAPSHOTS, D2, snapshot(D2, CUSTOMERS[D2], 99))
    with caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"):
        assert materialize_dates(stock, [D2], engine="stock")["write_path"] == "feast"
        assert materialize_dates(fast, [D2])["write_path"] == "arrow-redis"
    assert assert_same_redis(client, stock, fast) == before
    assert "200 rows: 0 written, 200 kept" in caplog.text


def with_column(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def _far(table: pa.Table) -> pa.Table:
    at = dt.datetime(2300, 1, 1, tzinfo=dt.UTC)
    return with_column(
        table, "event_timestamp", pa.array([at] * table.num_rows, pa.timestamp("us", tz="UTC"))
    )


def _sub_micro(table: pa.Table) -> pa.Table:
    nanos = int(dt.datetime.combine(D2, dt.time(0), tzinfo=dt.UTC).timestamp()) * 10**9 + 500
    return with_column(
        table, "event_timestamp", pa.array([nanos] * table.num_rows).cast(pa.timestamp("ns", tz="UTC"))
    )


def _int_spend(table: pa.Table) -> pa.Table:
    # No nulls: with them, Feast's read (pandas) hands the write float64 already.
    return with_column(table, "spend_7d", pa.array(np.arange(table.num_rows) * 7 - 300))


@pytest.mark.parametrize(
    ("change", "day", "path", "why"),
    [
        # A DOUBLE feature from an int64 column: Feast converts each int; the fast path does not.
        (_int_spend, D2, "feast", "spend_7d: DOUBLE feature from a int64 column"),
        (_sub_micro, D2, "feast", "sub-microsecond"),  # Feast drops the nanoseconds
        (_far, dt.date(2300, 1, 1), "feast", "out of range"),  # past 2262: no int64 nanoseconds
        # Rows repeating a customer: Feast's dedup node keeps one per key before the write,
        # so the write itself (either path) never sees two; the fast path takes them as usual.
        (lambda t: pa.concat_tables([t, t]), D2, "arrow-redis", None),
    ],
    ids=["double-from-int64", "sub-microsecond", "year-2300", "duplicate-rows"],
)
def test_snapshots_the_fast_path_hands_to_feast(tmp_path, redis_client, caplog, change, day, path, why):
    client, _ = redis_client
    table = change(snapshot(D2, CUSTOMERS[D2], 0))
    stock, fast = pair_on(zone_with(tmp_path, {day: table}), tmp_path, redis_client)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    if why == "sub-microsecond":  # after midnight: outside materialize_dates' [D, D] window
        for settings, engine in ((stock, "stock"), (fast, "fast")):
            store = feature_store(settings, apply=True, engine=engine)
            with caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"):
                store.materialize(start, start + dt.timedelta(seconds=1), feature_views=[FEATURE_VIEW])
        assert store.provider.batch_engine.paths == {FEATURE_VIEW: path}
    else:
        assert materialize_dates(stock, [day], engine="stock")["write_path"] == "feast"
        with caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"):
            assert materialize_dates(fast, [day])["write_path"] == path
    if why:
        assert "Feast's stock path" in caplog.text and why in caplog.text
    assert len(assert_same_redis(client, stock, fast)) == len(CUSTOMERS[D2])


def test_a_type_feast_rejects_fails_the_same_way(tmp_path, redis_client, caplog):
    """A float32 column for a DOUBLE feature: the fast path hands it to Feast, which raises."""
    client, _ = redis_client
    table = snapshot(D2, CUSTOMERS[D2], 0)
    table = with_column(table, "spend_7d", table["spend_7d"].cast(pa.float32()))
    stock, fast = pair_on(zone_with(tmp_path, {D2: table}), tmp_path, redis_client)
    errors = []
    for settings, engine in ((stock, "stock"), (fast, "fast")):
        with (
            caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"),
            pytest.raises(Exception) as e,
        ):
            materialize_dates(settings, [D2], engine=engine)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]
    assert "Feast's stock path, 200 rows (spend_7d: DOUBLE feature from a float column)" in caplog.text
    for settings in (stock, fast):
        assert not redis_state(client, settings.features.feast_project)


def test_a_date_without_rows_records_the_path_that_ran(pair, redis_client, zone_root, tmp_path, caplog):
    client, _ = redis_client
    _, fast = pair
    empty = dt.date(2011, 1, 1)  # no snapshot: Feast's read yields no rows
    with caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"):
        assert materialize_dates(fast, [empty])["write_path"] == "arrow-redis"
    assert "Arrow->Redis path, 0 rows: 0 written" in caplog.text
    assert not redis_state(client, fast.features.feast_project)
    caplog.clear()
    lite = settings_for(zone_root, tmp_path, f"lite_{uuid.uuid4().hex[:8]}", online_store="sqlite")
    with caplog.at_level(logging.INFO, logger="propensity.features.feast_redis"):
        assert materialize_dates(lite, [empty])["write_path"] == "feast"
    assert "Feast's stock path, 0 rows (online store NewerOnlySqliteOnlineStore)" in caplog.text


def test_unhandled_column_type_takes_the_stock_path(pair):
    from propensity.features.feast_redis import RedisWritePlan
    from propensity.features.redis_encoding import FastPathUnsupported

    _, fast = pair
    store = feature_store(fast, apply=True)
    view = store.get_feature_view(FEATURE_VIEW)
    table = snapshot(D2, CUSTOMERS[D2], 0)
    provider = store.provider
    RedisWritePlan.for_table(store.config, provider.online_store, view, table)  # as written: handled
    as_float32 = with_column(table, "spend_7d", table["spend_7d"].cast(pa.float32()))
    with pytest.raises(FastPathUnsupported, match="spend_7d"):
        RedisWritePlan.for_table(store.config, provider.online_store, view, as_float32)
    doubled = pa.concat_tables([table, table])
    with pytest.raises(FastPathUnsupported, match="several rows per entity"):
        RedisWritePlan.for_table(store.config, provider.online_store, view, doubled)


@pytest.mark.parametrize("online", [{}, {"skip_dedup": True}], ids=["dedup", "skip_dedup"])
def test_a_key_of_another_type_fails_as_in_feast(pair, redis_client, online):
    """A key holding a string: Feast reads every stored timestamp first, so nothing is written;
    with skip_dedup every other row is. The fast path, in blocks of 16 rows, must leave the same."""
    import redis

    client, _ = redis_client
    stock, fast = pair
    stores = store_for(stock, "stock", **online), store_for(fast, "fast", block_rows=16, **online)
    bad = [entity_key(settings, "C00290") for settings in (stock, fast)]
    for key in bad:
        client.set(key, b"x")
    errors = []
    for store in stores:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE") as e:
            materialize_with(store, D2)
        errors.append(str(e.value))
    assert f"(key {bad[1]!r})" in errors[1], errors[1]  # the failing rows, command and key
    failed_row = re.search(r"(?:HSET|HMGET) of row (\d+) ", errors[1])
    assert failed_row and failed_row[0].startswith("HSET" if online else "HMGET"), errors[1]
    assert int(failed_row[1]) >= 16  # past the first block: the blocks before it were read, not written
    states = [redis_state(client, s.features.feast_project) for s in (stock, fast)]
    assert states[0] == states[1]
    # The string key alone, or with every other customer's hash (skip_dedup: Feast writes on).
    assert len(states[0]) == (len(CUSTOMERS[D2]) if online else 1)
    assert client.get(bad[1]) == b"x"
    # With the key gone, the same stores write everything (no connection left half-read).
    for key in bad:
        client.delete(key)
    for store in stores:
        materialize_with(store, D2)
    assert len(assert_same_redis(client, stock, fast)) == len(CUSTOMERS[D2])
    for store in stores:
        store.teardown()


# -- a view of other column types, through both paths' writes --------------------------------


def typed_view():
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Bool, Float32, Float64, Int32, Int64, String
    from feast.value_type import ValueType

    thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.STRING)
    types = {"b": Bool, "i32": Int32, "f32": Float32, "i64": Int64, "i64_exact": Int64, "f64": Float64}
    return FeatureView(
        name="typed",
        entities=[thing],
        schema=[Field(name="thing_id", dtype=String), *(Field(name=k, dtype=t) for k, t in types.items())],
        source=FileSource(path="unused.parquet", timestamp_field="ts"),
    )


def typed_table(n: int) -> pa.Table:
    i = np.arange(n)
    big = np.array([2**53 + 1, -(2**53 + 1), 2**53 + 3, 2**62 + 1, 2**63 - 1024, 5, 0, -1])
    return pa.table(
        {
            "thing_id": [f"t{k}" for k in i],
            "ts": pa.array([dt.datetime(2011, 1, 5, 0, 0, k % 3, k, tzinfo=dt.UTC) for k in i.tolist()]),
            "b": pa.array(i % 3 == 0, mask=i % 4 == 1),
            "i32": pa.array(np.resize([0, 1, -1, 2**31 - 1, -(2**31), 300], n), pa.int32(), mask=i % 5 == 2),
            "f32": pa.array(
                np.resize([0.0, -0.0, 1.5, 3.4e38, np.nan, -1e-30], n), pa.float32(), mask=i % 7 == 3
            ),
            # nulls in the first rows only: with Feast batches of 4, the later batches stay exact
            "i64": pa.array(np.resize(big, n), pa.int64(), mask=i == 1),
            "i64_exact": pa.array(np.resize(big, n), pa.int64()),
            "f64": pa.array(np.resize([0.5, np.nan, -np.inf, 1e300], n), mask=i % 6 == 5),
        }
    )


@pytest.mark.parametrize(
    ("block_rows", "batch_size"),
    [(10_000, None), (3, None), (3, 4)],
    ids=["one-block", "blocks-of-3", "blocks-of-3-feast-batches-of-4"],
)
def test_other_types_write_as_feast_does(tmp_path, redis_client, block_rows, batch_size):
    from feast import RepoConfig
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.utils import _convert_arrow_to_proto
    from feast.value_type import ValueType

    from propensity.features.feast_redis import RedisWritePlan

    client, projects = redis_client
    tag = uuid.uuid4().hex[:8]
    projects.extend([f"tstock_{tag}", f"tfast_{tag}"])
    configs = [
        RepoConfig(
            project=project,
            provider="local",
            registry=str(tmp_path / "registry.db"),
            online_store={"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            materialization={"online_write_batch_size": batch_size},
        )
        for project in projects[-2:]
    ]
    view, table, online = typed_view(), typed_table(23), RedisOnlineStore()
    for k in range(2):  # the second time: older rows are kept back, newer ones rewritten
        if k:
            backwards = pa.array(np.arange(23)[::-1])
            table = with_column(table, "ts", table["ts"].take(backwards))
            table = with_column(table, "i32", table["i32"].take(backwards))
        # Feast's output node, as it feeds the store
        batches = [table] if batch_size is None else table.to_batches(max_chunksize=batch_size)
        for batch in batches:
            rows = _convert_arrow_to_proto(batch, view, {"thing_id": ValueType.STRING})
            online.online_write_batch(configs[0], view, rows, None)
        RedisWritePlan.for_table(configs[1], online, view, table).write(client, block_rows)
        want, got = (redis_state(client, config.project) for config in configs)
        assert len(want) == 23
        assert got == want
    # Row 8 holds 2**53 + 1 in a column with a null in row 1: rounded where Feast converts them together.
    key = _typed_key(configs[1].project, "t8")
    assert Value.FromString(client.hget(key, _mmh3("typed:i64"))).int64_val == 2**53 + (
        batch_size is not None
    )
    assert Value.FromString(client.hget(key, _mmh3("typed:i64_exact"))).int64_val == 2**53 + 1


def _typed_key(project: str, thing: str) -> bytes:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    entity = EntityKey(join_keys=["thing_id"], entity_values=[Value(string_val=thing)])
    return _redis_key(project, entity, entity_key_serialization_version=3)


# Past 2**53 with a null, Feast goes through float64 (rounding 2**53 + 1 to 2**53): so must we.
EDGE_INTS = [
    0,
    1,
    -1,
    127,
    128,
    300,
    2**31 - 1,
    -(2**31),
    2**40,
    -(2**53),
    2**53 + 1,
    -(2**53 + 1),
    2**53 + 3,
]
EDGE_INTS += [2**62 + 1, 2**63 - 1024, None]


@pytest.mark.parametrize(
    ("value_type", "array"),
    [
        ("INT64", pa.array(EDGE_INTS[:-1], pa.int64())),
        ("INT64", pa.array(EDGE_INTS, pa.int64())),
        ("INT64", pa.array([0.0, 2.7, -2.7, 1e15, None, float("nan")], pa.float64())),  # after pandas
        ("INT32", pa.array(EDGE_INTS[:8] + [None], pa.int32())),
        (
            "DOUBLE",
            pa.array([0.0, -0.0, 1.5, -1e300, 5e-324, float("inf"), float("nan"), None], pa.float64()),
        ),
        ("FLOAT", pa.array([0.0, -0.0, 1.5, 3.4e38, float("nan"), None], pa.float32())),
        ("BOOL", pa.array([True, False, None], pa.bool_())),
        ("BOOL", pa.array([True, False], pa.bool_())),
        ("STRING", pa.array(["", "a", "x" * 200, "日本", None], pa.string())),
        ("STRING", pa.array(["b", None], pa.large_string())),
        ("DOUBLE", pa.array([None, None], pa.float64())),
        ("INT64", pa.array([None, None], pa.null())),
    ],
)
def test_values_encode_as_feast_does(value_type, array):
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from propensity.features.redis_encoding import encode_values

    vt = ValueType[value_type]
    want = [
        v.SerializeToString() for v in python_values_to_proto_values(array.to_numpy(zero_copy_only=False), vt)
    ]
    assert encode_values("f", vt, array).to_pylist() == want


def test_timestamps_and_keys_encode_as_feast_does():
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType
    from google.protobuf.timestamp_pb2 import Timestamp

    from propensity.features.redis_encoding import encode_entity_keys, encode_timestamps, event_micros

    instants = [
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500, tzinfo=dt.UTC),
        dt.datetime(2011, 1, 5, tzinfo=dt.UTC),
        dt.datetime(2011, 1, 5, 13, 7, 1, 999_999, tzinfo=dt.UTC),
        dt.datetime(1900, 6, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
    ]
    for unit in ("s", "ms", "us", "ns"):
        column = pa.array([t.replace(microsecond=0) if unit in ("s", "ms") else t for t in instants])
        column = column.cast(pa.timestamp(unit, tz="UTC"))
        want = []
        for t in column.to_pylist():
            ts = Timestamp()
            ts.FromDatetime(t)
            want.append(ts.SerializeToString())
        assert encode_timestamps(event_micros(column)).to_pylist() == want, unit

    ids = ["12347", "", "日本", "x" * 300]
    got = encode_entity_keys("customer_id", ValueType.STRING, pa.array(ids), "proj").to_pylist()
    entity = [EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=i)]) for i in ids]
    assert got == [_redis_key("proj", e, entity_key_serialization_version=3) for e in entity]
    numbers = [0, -1, 2**40]
    got = encode_entity_keys("n", ValueType.INT64, pa.array(numbers), "proj").to_pylist()
    entity = [EntityKey(join_keys=["n"], entity_values=[Value(int64_val=i)]) for i in numbers]
    assert got == [_redis_key("proj", e, entity_key_serialization_version=3) for e in entity]
