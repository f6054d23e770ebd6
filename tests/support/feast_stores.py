"""A Feast store of the shapes the API must read: shared by the serving and the Feast contract tests."""

from __future__ import annotations

import datetime as dt

import pandas as pd


def typed_store(folder, online_store=None, project: str = "api_features"):
    """Two feature views behind one service: Int64, Float64 and String fields, missing values,
    a customer known to one view only, and different timestamps per view."""
    from feast import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        RepoConfig,
        ValueType,
    )
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.types import Float64, Int64, String

    folder.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(
        config=RepoConfig(
            project=project,
            registry=str(folder / "registry.db"),
            provider="local",
            online_store=online_store or SqliteOnlineStoreConfig(path=str(folder / "online.db")),
            entity_key_serialization_version=3,
        )
    )
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    t1 = pd.Timestamp("2011-12-01T06:30:00.750000+00:00")  # sub-second: read back as whole seconds
    t2 = pd.Timestamp("2011-12-02T00:00:00+00:00")
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "event_timestamp": [t1, t1, t1],
            "orders_90d": pd.array([3, None, 0], dtype="Int64"),
            "spend_90d": [120.25, 7.5, None],
            "country": ["United Kingdom", None, "France"],
        }
    )
    returns = pd.DataFrame(
        {"customer_id": ["a", "d"], "event_timestamp": [t2, t2], "return_rate_90d": [0.1, 1.0 / 3.0]}
    )
    views = []
    for name, frame, schema in (
        (
            "orders",
            orders,
            [
                Field(name="orders_90d", dtype=Int64),
                Field(name="spend_90d", dtype=Float64),
                Field(name="country", dtype=String),
            ],
        ),
        ("returns", returns, [Field(name="return_rate_90d", dtype=Float64)]),
    ):
        frame.to_parquet(folder / f"{name}.parquet")
        views.append(
            FeatureView(
                name=name,
                entities=[customer],
                ttl=dt.timedelta(days=3650),
                schema=schema,
                source=FileSource(path=str(folder / f"{name}.parquet"), timestamp_field="event_timestamp"),
                online=True,
            )
        )
    store.apply([customer, *views, FeatureService(name="svc", features=views)])
    store.write_to_online_store("orders", orders)
    store.write_to_online_store("returns", returns)
    return store
