"""The Arrow->Redis batch engine against Feast's stock materialization: the same bytes in Redis.

Synthetic snapshots (ints with and without nulls, floats with nulls, NaN, -0.0 and inf, strings
with nulls, empty and non-ASCII ones) are materialized through Feast's stock path into one project
and through :mod:`propensity.feast_fast` into another, on the real Redis at 127.0.0.1:6379 (a
dedicated DB number, every key removed afterwards). Keys differ only by the project suffix; every
hash must be byte-identical, and online lookups must return the same values.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from propensity.collect import zone_store
from propensity.feature_store import (
    FEATURE_VIEW,
    CustomerFeatures,
    _config_dict,
    definitions,
    feature_repo_dir,
    feature_store,
    materialize_dates,
    online_features,
    render_yaml,
)
from propensity.features import INT_FEATURES, MODEL_FEATURES, OFFLINE_ZONE, SNAPSHOT_SCHEMA, SNAPSHOTS
from propensity.settings import Settings, _deep_merge, _YamlProfiles
from propensity.storage import write_partition

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
    store = zone_store(Settings(**_deep_merge(_YamlProfiles(Settings)(), {"zone_root": root})))
    for seed, (day, ids) in enumerate(CUSTOMERS.items()):
        write_partition(store, OFFLINE_ZONE, SNAPSHOTS, day, snapshot(day, ids, seed))
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
    return Settings(**_deep_merge(_YamlProfiles(Settings)(), overrides))


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
        key[: -len(suffix)]: (client.hgetall(key), client.ttl(key) > 0)
        for key in client.scan_iter(match=f"*{project}", count=10_000)
    }


def assert_same_redis(client, stock: Settings, fast: Settings) -> dict:
    want = redis_state(client, stock.features.feast_project)
    got = redis_state(client, fast.features.feast_project)
    assert want, "the stock path wrote nothing"
    assert got.keys() == want.keys()
    different = [key for key in want if got[key] != want[key]]
    assert not different, (len(different), different[0], want[different[0]], got[different[0]])
    return want


def stored_day(client, settings: Settings, customer: str) -> dt.date:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer)])
    key = _redis_key(settings.features.feast_project, entity, entity_key_serialization_version=3)
    blob = client.hget(key, f"_ts:{FEATURE_VIEW}")
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


def store_for(settings: Settings, engine: str, **online: object):
    """A FeatureStore whose Redis online store has extra settings (key_ttl_seconds, skip_dedup)."""
    from feast import FeatureStore, RepoConfig

    config = _config_dict(settings, engine=engine)
    config["online_store"].update(online)
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
    stores = store_for(stock, "stock", **online), store_for(fast, "fast", **online)
    for day in (D2, D1):
        for store in stores:
            materialize_with(store, day)
        state = assert_same_redis(client, stock, fast)
    assert stores[1]._get_provider().batch_engine.paths == {FEATURE_VIEW: "arrow-redis"}
    expiring = {expires for _, expires in state.values()}
    assert expiring == {"key_ttl_seconds" in online}
    # skip_dedup: the older snapshot overwrites (Feast's documented trade-off); otherwise it does not.
    assert stored_day(client, fast, "C00150") == (D1 if "skip_dedup" in online else D2)
    for store in stores:
        store.teardown()


def test_feast_cli_materialize_uses_the_engine(pair, redis_client, tmp_path):
    client, _ = redis_client
    stock, fast = pair
    materialize_dates(stock, [D3], engine="stock")
    feature_store(fast, apply=True)
    yaml_file = tmp_path / "feature_store.yaml"
    yaml_file.write_text(render_yaml(fast))
    assert "propensity.feast_fast.ArrowRedisEngine" in yaml_file.read_text()
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


def test_unhandled_column_type_takes_the_stock_path(pair):
    from propensity.feast_fast import FastPathUnsupported, RedisWritePlan

    _, fast = pair
    store = feature_store(fast, apply=True)
    view = store.get_feature_view(FEATURE_VIEW)
    table = snapshot(D2, CUSTOMERS[D2], 0)
    provider = store._get_provider()
    RedisWritePlan.for_table(store.config, provider.online_store, view, table)  # as written: handled
    as_float32 = table.set_column(
        table.schema.get_field_index("spend_7d"), "spend_7d", table["spend_7d"].cast(pa.float32())
    )
    with pytest.raises(FastPathUnsupported, match="spend_7d"):
        RedisWritePlan.for_table(store.config, provider.online_store, view, as_float32)
    doubled = pa.concat_tables([table, table])
    with pytest.raises(FastPathUnsupported, match="several rows per entity"):
        RedisWritePlan.for_table(store.config, provider.online_store, view, doubled)


# -- the encoders against Feast's own conversion, value by value ---------------------------------

EDGE_INTS = [0, 1, -1, 127, 128, 300, 2**31 - 1, -(2**31), 2**40, -(2**53), None]


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

    from propensity.feast_fast import encode_values

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

    from propensity.feast_fast import encode_entity_keys, encode_timestamps, event_micros

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
