"""What :mod:`propensity.features.feast_compat` relies on in Feast, pinned.

A Feast upgrade that changes one of these shapes fails here, by name, before it changes an
answer; and each fallback the adapter takes when a shape changed gives the same answers as its
fast path (same features and values, same Redis bytes). Real Feast, SQLite and the Redis at
127.0.0.1:6379 (db 11, keys of this module's projects removed afterwards).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import struct
import uuid

import numpy as np
import pytest
from batch_data import synthetic_snapshot
from feast_stores import typed_store

from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features import feast_compat
from propensity.features.feast_compat import (
    ProviderReader,
    ServiceReader,
    engine_hook_problem,
    field_hash,
    parse_connection_string,
    redis_client,
    redis_view_name,
)
from propensity.features.store import feature_store, materialize_dates
from propensity.serving.feature_source import FeastFeatureSource

REDIS_DB = 11
AS_OF = dt.date(2011, 6, 1)


@pytest.fixture
def redis_db():
    """A client on this module's db; every key of the projects named in ``projects`` goes afterwards."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    projects: list[str] = []
    yield client, projects
    for project in projects:
        for key in client.scan_iter(match=f"*{project}", count=1000):
            client.delete(key)


# -- the Redis layout: murmur3 field hashes, view names, the client -------------------------


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 as Austin Appleby published it (smhasher's MurmurHash3.cpp)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    rounded = len(data) - len(data) % 4
    for i in range(0, rounded, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = int.from_bytes(data[rounded:], "little")
    if k or len(data) % 4:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def test_the_reference_murmur3_gives_the_published_values():
    assert murmur3_x86_32(b"") == 0
    assert murmur3_x86_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723
    assert murmur3_x86_32(b"foo") == 2**32 - 156908512  # mmh3's README: mmh3.hash("foo") == -156908512


@pytest.mark.parametrize(
    ("view", "feature"),
    [("customer_features", "orders_90d"), ("customer_features_v2", "spend_7d"), ("v", ""), ("vue", "prix€")],
)
def test_field_hash_is_murmur3_of_view_and_feature_as_feast_writes_it(view, feature):
    from feast.infra.online_stores.helpers import _mmh3

    documented = struct.pack("<I", murmur3_x86_32(f"{view}:{feature}".encode()))
    assert field_hash(view, feature) == documented
    assert _mmh3(f"{view}:{feature}") == documented, "Feast hashes its Redis fields another way now"


@pytest.mark.parametrize("versioning", [False, True])
@pytest.mark.parametrize("version", [None, 0, 3])
def test_redis_view_name_is_the_one_feast_writes(tmp_path, versioning, version):
    from feast import Entity, FeatureView, Field, FileSource, RepoConfig
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.types import Float64

    config = RepoConfig(
        project="p",
        provider="local",
        registry={"path": str(tmp_path / "r.db"), "enable_online_feature_view_versioning": versioning},
        online_store={"type": "redis", "connection_string": "127.0.0.1:6379"},
        entity_key_serialization_version=3,
    )
    view = FeatureView(
        name="customer_features",
        entities=[Entity(name="customer", join_keys=["customer_id"])],
        schema=[Field(name="x", dtype=Float64)],
        source=FileSource(path=str(tmp_path / "x.parquet"), timestamp_field="event_timestamp"),
    )
    view.current_version_number = version
    want = "customer_features_v3" if versioning and version == 3 else "customer_features"
    assert redis_view_name(view, config) == _versioned_fv_name(view, config) == want


CONNECTIONS = [
    "127.0.0.1:6379",
    "127.0.0.1:6379,db=3,retry=null,socket_timeout=1",
    "redis:6380,password=se=cret,ssl=true,db=0,client_name=propensity",
    "h1:7000,h2:7001,skip_full_coverage_check=true",
]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_connection_strings_parse_as_feast_parses_them(connection):
    from feast.infra.online_stores.redis import RedisOnlineStore

    assert parse_connection_string(connection) == RedisOnlineStore._parse_connection_string(connection)


@pytest.mark.parametrize("connection", CONNECTIONS[:3])
def test_the_redis_client_connects_as_feasts_does(connection):
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    config = RedisOnlineStoreConfig(connection_string=connection)
    ours, theirs = redis_client(config), RedisOnlineStore()._get_client(config)
    assert type(ours) is type(theirs)
    mine, feasts = ours.connection_pool.connection_kwargs, theirs.connection_pool.connection_kwargs
    assert mine.keys() == feasts.keys()
    for key, value in feasts.items():
        if key == "retry" and value is not None:  # a fresh default policy per client: same settings
            assert (type(mine[key]), mine[key]._retries) == (type(value), value._retries)
        else:
            assert mine[key] == value, key


# -- the batch engine hook ------------------------------------------------------------------


def test_the_engine_hook_has_the_shape_relied_on():
    from feast.infra.compute_engines.base import ComputeEngine
    from feast.infra.passthrough_provider import PassthroughProvider

    assert engine_hook_problem() is None
    assert list(inspect.signature(ComputeEngine.materialize).parameters)[:3] == ["self", "registry", "tasks"]
    # What the provider calls for each view: the engine's public materialize.
    assert "batch_engine.materialize(" in inspect.getsource(
        PassthroughProvider.materialize_single_feature_view
    )


def redis_state(client, project: str) -> dict[bytes, dict[bytes, bytes]]:
    keys = sorted(client.scan_iter(match=f"*{project}", count=1000))
    return {k[: -len(project)]: client.hgetall(k) for k in keys}


def test_the_engine_without_its_hook_writes_the_same_bytes_through_feast(
    make_settings, tmp_path, redis_db, monkeypatch, caplog
):
    client, projects = redis_db
    settings = {}
    for name in ("hooked", "unhooked"):
        project = f"contract_{name}_{uuid.uuid4().hex[:6]}"
        projects.append(project)
        settings[name] = make_settings(
            zone_root=str(tmp_path / "zones"),
            features={
                "online_store": "redis",
                "redis_connection": f"127.0.0.1:6379,db={REDIS_DB},retry=null",
                "feast_project": project,
                "registry": str(tmp_path / f"{project}.db"),
            },
        )
    write_partition(zone_store(settings["hooked"]), *SNAPSHOTS, AS_OF, synthetic_snapshot(120, AS_OF))
    assert materialize_dates(settings["hooked"], [AS_OF])["write_path"] == "arrow-redis"
    import propensity.features.feast_redis as feast_redis

    monkeypatch.setattr(feast_redis, "engine_hook_problem", lambda: "simulated: LocalOutputNode changed")
    with caplog.at_level(logging.WARNING, logger="propensity.features.feast_redis"):
        assert materialize_dates(settings["unhooked"], [AS_OF])["write_path"] == "feast"
    warnings = [r for r in caplog.records if "its plan changed shape" in r.getMessage()]
    assert len(warnings) == 1 and "simulated" in warnings[0].getMessage()
    hooked = redis_state(client, settings["hooked"].features.feast_project)
    assert len(hooked) == 120
    assert redis_state(client, settings["unhooked"].features.feast_project) == hooked
    for name in settings:
        feature_store(settings[name]).teardown()


# -- online reads ---------------------------------------------------------------------------


def test_the_provider_online_read_has_the_shape_relied_on(tmp_path):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    store = typed_store(tmp_path)
    params = inspect.signature(store.provider.online_read).parameters
    assert {"config", "table", "entity_keys", "requested_features"} <= params.keys()
    (projection, _) = store.get_feature_service("svc").feature_view_projections
    view = store.get_feature_view("orders").with_projection(projection)
    assert [(c.name, c.dtype.to_value_type()) for c in view.entity_columns] == [
        ("customer_id", ValueType.STRING)
    ]
    assert [f.name for f in view.projection.features] == ["orders_90d", "spend_90d", "country"]
    keys = [
        EntityKey(join_keys=["customer_id"], entity_values=[v])
        for v in python_values_to_proto_values(["a", "nobody"], ValueType.STRING)
    ]
    assert keys[0].entity_values[0] == Value(string_val="a")
    requested = ["orders_90d", "spend_90d"]
    rows = store.provider.online_read(
        config=store.config, table=view, entity_keys=keys, requested_features=requested
    )
    assert len(rows) == 2  # one (timestamp, values) per key, in the keys' order
    (ts, data), missing = rows
    assert isinstance(ts, dt.datetime)  # SQLite keeps whole seconds of 06:30:00.75
    assert ts.replace(tzinfo=dt.UTC, microsecond=0) == dt.datetime(2011, 12, 1, 6, 30, tzinfo=dt.UTC)
    assert data["orders_90d"] == Value(int64_val=3) and data["spend_90d"] == Value(double_val=120.25)
    assert missing == (None, None)


def same_rows(a, b) -> None:
    np.testing.assert_array_equal(a.values, b.values)  # NaN in the same places
    assert a.found.tolist() == b.found.tolist()
    assert a.timestamps == b.timestamps


IDS = ["a", "b", "c", "d", "nobody", "a", "d"]


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_both_readers_read_the_same_rows(tmp_path, redis_db, online):
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    client, projects = redis_db
    project = f"contract_read_{uuid.uuid4().hex[:6]}"
    projects.append(project)
    config = (
        RedisOnlineStoreConfig(connection_string=f"127.0.0.1:6379,db={REDIS_DB},retry=null")
        if online == "redis"
        else None
    )
    store = typed_store(tmp_path, config, project)
    service = store.get_feature_service("svc")
    columns = ["orders_90d", "spend_90d", "return_rate_90d"]
    fast, documented = (
        cls(store, service, columns, "customer_id") for cls in (ProviderReader, ServiceReader)
    )
    got = fast.read(IDS)
    same_rows(got, documented.read(IDS))
    assert got.found.tolist() == [True, True, True, True, False, True, True]
    assert got.timestamps[0] == dt.datetime(2011, 12, 2, tzinfo=dt.UTC)  # the later of its two views
    store.teardown()


def test_a_changed_online_read_falls_back_to_get_online_features_with_the_same_rows(
    tmp_path, monkeypatch, caplog
):
    store = typed_store(tmp_path)
    before = FeastFeatureSource(store, "svc")
    assert before.path == "online_read"
    provider_class = type(store.provider)
    original = provider_class.online_read

    def online_read(self, *args, **kwargs):  # a release that renamed the parameters
        return original(self, *args, **kwargs)

    monkeypatch.setattr(provider_class, "online_read", online_read)
    with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
        after = FeastFeatureSource(store, "svc")
    assert after.path == "get_online_features"
    assert [r.getMessage() for r in caplog.records if r.name == feast_compat.__name__] == [
        "Feast online reads through get_online_features (slower): "
        "provider.online_read has no parameter(s) ['config', 'table', 'entity_keys', 'requested_features']: "
        "['args', 'kwargs']"
    ]
    a, b = before.get(IDS), after.get(IDS)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.found.tolist() == b.found.tolist() and a.timestamps == b.timestamps


def test_on_demand_views_are_refused_as_before(tmp_path):
    from feast import FeatureService, Field, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64

    store = typed_store(tmp_path)
    request = RequestSource(name="req", schema=[Field(name="bonus", dtype=Float64)])

    @on_demand_feature_view(sources=[request], schema=[Field(name="doubled", dtype=Float64)], mode="python")
    def doubled(inputs):
        return {"doubled": [b * 2 for b in inputs["bonus"]]}

    store.apply([request, doubled, FeatureService(name="with_odfv", features=[doubled])])
    with pytest.raises(ValueError, match="on-demand views"):
        FeastFeatureSource(store, "with_odfv")
