"""Feast over the real offline store: materialize, online lookups, point-in-time training sets.

Built once per module from the real data: collect -> (validated: every line a product) ->
weekly snapshots in one Spark pass. Train/serve parity is checked on SQLite and on the real
Redis at 127.0.0.1:6379 (a dedicated DB number and a project of its own, removed afterwards).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from propensity.core.settings import Settings, committed_settings
from propensity.core.storage import read_partition, write_partition
from propensity.core.zones import RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.features.job import compute_features, read_snapshot
from propensity.features.spec import FEATURE_SERVICE, MODEL_FEATURES
from propensity.features.store import (
    CustomerFeatures,
    NoFeatures,
    feature_store,
    materialize_dates,
    online_features,
)
from propensity.ingest.collect import collect
from propensity.training.dataset import TrainingSetError, build_training_set, training_rows

pytestmark = pytest.mark.integration

FIRST, LAST = dt.date(2010, 12, 1), dt.date(2011, 2, 5)
SNAPSHOTS = [dt.date(2011, 1, 5), dt.date(2011, 1, 12), dt.date(2011, 1, 19)]
REDIS_DB = 13


@pytest.fixture(scope="module")
def base(tmp_path_factory, real_data, spark) -> dict:
    root = tmp_path_factory.mktemp("feast")
    overrides = {
        "zone_root": str(root / "zones"),
        "cache_dir": str(root / "cache"),
        "source": {"path": str(real_data)},
        "features": {"registry": str(root / "registry.db"), "sqlite_path": str(root / "online.db")},
    }
    settings = committed_settings(**overrides)
    store = zone_store(settings)
    day = FIRST
    while day <= LAST:
        start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        collect(settings, start, start + dt.timedelta(days=1))
        raw = read_partition(store, *RAW_EVENTS, day)
        # Stand-in for the validation stage: every line is a product line.
        validated = raw.append_column("line_kind", pa.array(["product"] * raw.num_rows, pa.string()))
        write_partition(store, *VALIDATED_EVENTS, day, validated)
        day += dt.timedelta(days=1)
    compute_features(settings, SNAPSHOTS)
    return overrides


def settings_for(base: dict, **features) -> Settings:
    return committed_settings(**{**base, "features": {**base.get("features", {}), **features}})


def assert_parity(settings: Settings, as_of: dt.date) -> None:
    offline = read_snapshot(settings, as_of).to_pylist()
    sample = offline[::17][:40]
    got = online_features(settings, [r["customer_id"] for r in sample] + ["no-such-customer"])
    assert got[-1] == NoFeatures("no-such-customer")
    for row, online in zip(sample, got[:-1], strict=True):
        assert isinstance(online, CustomerFeatures)
        assert online.as_of == dt.datetime.combine(as_of, dt.time(0), tzinfo=dt.UTC)
        for name in (*MODEL_FEATURES, "country"):
            want, have = row[name], online.values[name]
            if want is None:
                assert have is None, (row["customer_id"], name)
            else:
                assert have == want, (row["customer_id"], name, have, want)
        vector = online.vector()
        for name, value in zip(MODEL_FEATURES, vector, strict=True):
            assert math.isnan(value) if row[name] is None else value == float(row[name])


def test_parity_sqlite(base):
    settings = settings_for(base, online_store="sqlite")
    materialize_dates(settings, SNAPSHOTS[:2])  # the latest snapshot per customer wins online
    assert_parity(settings, SNAPSHOTS[1])
    # The next day's materialization moves every customer in it to the new snapshot.
    materialize_dates(settings, [SNAPSHOTS[2]])
    assert_parity(settings, SNAPSHOTS[2])


def test_parity_redis(base):
    import redis

    project = f"propensity_test_{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        base, online_store="redis", redis_connection=f"127.0.0.1:6379,db={REDIS_DB}", feast_project=project
    )
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        materialize_dates(settings, [SNAPSHOTS[2]])
        assert client.dbsize() > 0
        assert_parity(settings, SNAPSHOTS[2])
    finally:
        feature_store(settings).teardown()
        for key in client.scan_iter(match=f"*{project}*"):
            client.delete(key)
    assert not list(client.scan_iter(match=f"*{project}*"))


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_rerunning_an_older_day_never_overwrites_newer_online_features(base, online_store, tmp_path):
    """A backfill of an earlier features day after a later one: online keeps the later snapshot."""
    import redis

    project = f"propensity_newer_{uuid.uuid4().hex[:8]}"
    extra = {"sqlite_path": str(tmp_path / "online.db"), "registry": str(tmp_path / "registry.db")}
    if online_store == "redis":
        extra["redis_connection"] = f"127.0.0.1:6379,db={REDIS_DB}"
    settings = settings_for(base, online_store=online_store, feast_project=project, **extra)
    try:
        materialize_dates(settings, [SNAPSHOTS[2]])
        materialize_dates(settings, [SNAPSHOTS[0]])  # the old day, re-run
        assert_parity(settings, SNAPSHOTS[2])
        # A customer only in the older snapshot is written: nothing newer was stored for them.
        newer = {r["customer_id"] for r in read_snapshot(settings, SNAPSHOTS[2]).to_pylist()}
        only_old = [
            r["customer_id"]
            for r in read_snapshot(settings, SNAPSHOTS[0]).to_pylist()
            if r["customer_id"] not in newer
        ]
        if only_old:
            (got,) = online_features(settings, only_old[:1])
            assert got.as_of == dt.datetime.combine(SNAPSHOTS[0], dt.time(0), tzinfo=dt.UTC)
    finally:
        if online_store == "redis":
            feature_store(settings).teardown()
            client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
            for key in client.scan_iter(match=f"*{project}*"):
                client.delete(key)


def test_training_set_is_point_in_time_and_labelled(base):
    settings = settings_for(base)
    rows = training_rows(settings, [SNAPSHOTS[0]])
    rows = pd.concat([rows, pd.DataFrame({"customer_id": ["no-such-customer"], "cutoff": [SNAPSHOTS[0]]})])
    got = build_training_set(settings, rows, as_of=dt.date(2011, 2, 4))
    assert list(got["customer_id"]) == list(rows["customer_id"])
    assert list(got.columns) == ["customer_id", "cutoff", *MODEL_FEATURES, "country", "label"]

    # Features: exactly the Jan 5 snapshot (not the later ones), row for row.
    snap = read_snapshot(settings, SNAPSHOTS[0]).to_pandas().set_index("customer_id")
    known = got[got["customer_id"] != "no-such-customer"].set_index("customer_id")
    pd.testing.assert_frame_equal(
        known[list(MODEL_FEATURES)], snap[list(MODEL_FEATURES)].astype("float64"), check_names=False
    )
    assert got.iloc[-1][list(MODEL_FEATURES)].isna().all()

    # Label: an order in [Jan 5, Feb 4), computed here straight from the validated partitions.
    store = zone_store(settings)
    days = [SNAPSHOTS[0] + dt.timedelta(days=i) for i in range(30)]
    events = pa.concat_tables([read_partition(store, *VALIDATED_EVENTS, d) for d in days])
    buyers = set(events.filter(pc.invert(events["is_return"]))["customer_id"].drop_null().to_pylist())
    expected = [int(c in buyers) for c in rows["customer_id"]]
    assert list(got["label"]) == expected
    assert 0 < sum(expected) < len(expected)


def test_immature_labels_are_refused(base):
    settings = settings_for(base)
    rows = pd.DataFrame({"customer_id": ["12347"], "cutoff": [SNAPSHOTS[0]]})
    with pytest.raises(TrainingSetError, match="matures on 2011-02-04"):
        build_training_set(settings, rows, as_of=dt.date(2011, 2, 3))
    late = pd.DataFrame({"customer_id": ["12347"], "cutoff": [SNAPSHOTS[2]]})
    with pytest.raises(TrainingSetError, match="up to 2011-02-17"):
        build_training_set(settings, late)
    with pytest.raises(TrainingSetError, match="midnight"):
        build_training_set(settings, pd.DataFrame({"customer_id": ["1"], "cutoff": ["2011-01-05 10:00"]}))


def test_service_name_is_the_contract(base):
    store = feature_store(settings_for(base), apply=True)
    service = store.get_feature_service(FEATURE_SERVICE)
    names = [f.name for proj in service.feature_view_projections for f in proj.features]
    assert names == [*MODEL_FEATURES, "country"]
