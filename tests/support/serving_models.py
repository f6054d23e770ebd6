"""Helpers for the serving tests: small synthetic XGBoost models and a port with no listener.

Importable from any test folder: pytest puts tests/ (home of the root conftest) on sys.path.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import xgboost as xgb

FEATURES = ["recency_days", "frequency_90d", "monetary_90d", "tenure_days", "returns_ratio"]


def train_booster(seed: int = 0, rows: int = 300, features: list[str] | None = None) -> xgb.Booster:
    """A binary:logistic model on random rows whose label depends on two features."""
    names = features or FEATURES
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(names))).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    dtrain = xgb.DMatrix(x, label=y, feature_names=names)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train(params, dtrain, num_boost_round=20)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_api(app, timeout_s: float = 30.0) -> Iterator[str]:
    """``app`` served by a real uvicorn server on a free loopback port, in a thread: its base URL."""
    import uvicorn

    port = closed_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


FEATURE_TIME = "2011-12-01T00:00:00+00:00"


def make_feast_store(folder, customers: dict[str, list[float]], online_store=None):
    """A real Feast store (file registry; SQLite online store unless given) holding ``customers``.

    One entity, one feature view with FEATURES as Float64, one FeatureService ``propensity_v1``;
    rows go straight to the online store (``write_to_online_store``), as materialize would.
    """
    import datetime as dt

    import pandas as pd
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
    from feast.types import Float64

    folder.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project="serving_test",
        registry=str(folder / "registry.db"),
        provider="local",
        online_store=online_store or SqliteOnlineStoreConfig(path=str(folder / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    ts = pd.Timestamp(FEATURE_TIME)
    frame = pd.DataFrame(
        {"customer_id": list(customers), "event_timestamp": [ts] * len(customers)}
        | {f: [float(v[i]) for v in customers.values()] for i, f in enumerate(FEATURES)}
    )
    frame.to_parquet(folder / "features.parquet")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="customer_features",
        entities=[customer],
        ttl=dt.timedelta(days=3650),
        # Stored in a different order from the model's: the API must reorder by name.
        schema=[Field(name=f, dtype=Float64) for f in reversed(FEATURES)],
        source=FileSource(path=str(folder / "features.parquet"), timestamp_field="event_timestamp"),
        online=True,
    )
    store.apply([customer, view, FeatureService(name="propensity_v1", features=[view])])
    store.write_to_online_store("customer_features", frame)
    return store
