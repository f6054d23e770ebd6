"""Online store (Redis) down: 503 naming the cause, and the API recovers by itself when it returns."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis_process import RedisServer
from serving_models import make_feast_store, train_booster

from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

KEY = "k"


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_gives_503_naming_it_and_service_resumes(
    redis_server, make_settings, tmp_path, monkeypatch
):
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models")})
    deploy_model(settings, train_booster(seed=0), 1, "champion")
    # retry=null: redis-py 7 otherwise retries a refused connection with backoff for ~5 s.
    conn = f"127.0.0.1:{redis_server.port},retry=null,socket_connect_timeout=0.05,socket_timeout=0.05"
    online = RedisOnlineStoreConfig(connection_string=conn)
    store = make_feast_store(tmp_path / "feast", {"17850": [1.0, 2.0, 3.0, 4.0, 0.1]}, online_store=online)
    headers = {"X-API-Key": KEY}
    with TestClient(
        create_app(settings, feature_source=FeastFeatureSource(store, "propensity_v1"))
    ) as client:
        first = client.post("/predict", json={"customer_id": "17850"}, headers=headers)
        assert first.status_code == 200, first.text

        redis_server.stop()
        r = client.post("/predict", json={"customer_id": "17850"}, headers=headers)
        assert r.status_code == 503
        assert r.json()["detail"].startswith(
            "online store (RedisOnlineStoreConfig) unreachable: ConnectionError"
        )
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "RedisOnlineStoreConfig" in ready.json()["reasons"][0]
        assert 'propensity_api_errors_total{kind="feature_store_down"} 1.0' in client.get("/metrics").text

        redis_server.start()  # same port, same data: nothing restarted on the API's side
        again = client.post("/predict", json={"customer_id": "17850"}, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["score"] == first.json()["score"]
        assert client.get("/readyz").status_code == 200


def _redis_app(redis_server, make_settings, tmp_path, monkeypatch, customers):
    """An API over a Feast store on ``redis_server``, with a materialization marker for ``customers``."""
    import datetime as dt

    import pyarrow as pa
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    from propensity.core.storage import write_partition
    from propensity.core.zones import SNAPSHOTS, zone_store
    from propensity.features.store import feature_store, serving_connection, write_online_marker

    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(
        serving={"repository": str(tmp_path / "models")},
        features={"online_store": "redis", "redis_connection": f"127.0.0.1:{redis_server.port},db=0"},
    )
    deploy_model(settings, train_booster(seed=0), 1, "champion")
    # The API's own connection settings (bounded timeouts, no retries), as feast_feature_source makes them.
    assert "retry=null" in feature_store(settings, serving=True).config.online_store.connection_string
    conn = serving_connection(settings.features.redis_connection, settings.serving.feature_timeout_s)
    store = make_feast_store(
        tmp_path / "feast", customers, online_store=RedisOnlineStoreConfig(connection_string=conn)
    )
    day = dt.date(2011, 11, 30)
    write_partition(zone_store(settings), *SNAPSHOTS, day, pa.table({"customer_id": list(customers)}))
    write_online_marker(settings, day)
    return settings, store


def test_an_online_store_restarted_empty_answers_503_not_unknown_customer(
    redis_server, make_settings, tmp_path, monkeypatch
):
    customers = {"17850": [1.0, 2.0, 3.0, 4.0, 0.1], "13047": [0.5, 1.0, 2.0, 3.0, 0.0]}
    settings, store = _redis_app(redis_server, make_settings, tmp_path, monkeypatch, customers)
    headers = {"X-API-Key": KEY}
    with TestClient(
        create_app(settings, feature_source=FeastFeatureSource(store, "propensity_v1"))
    ) as client:
        assert client.post("/predict", json={"customer_id": "17850"}, headers=headers).status_code == 200
        unknown = client.post("/predict", json={"customer_id": "nobody"}, headers=headers)
        assert unknown.status_code == 404  # the store is full: an unknown id is unknown
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["online_snapshot"] == "2011-11-30"

        subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "flushall"], check=True, capture_output=True
        )
        time.sleep(1.1)  # past the once-a-second check of the marker customers
        r = client.post("/predict", json={"customer_id": "17850"}, headers=headers)
        assert r.status_code == 503, r.text
        assert "holds none of the 2 reference customers of the 2011-11-30 snapshot" in r.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "re-run the features DAG" in ready.json()["reasons"][0]

        store.write_to_online_store("customer_features", _frame(customers))  # materialized again
        time.sleep(1.1)
        assert client.post("/predict", json={"customer_id": "17850"}, headers=headers).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_down_store_opens_the_breaker_and_the_api_recovers(
    redis_server, make_settings, tmp_path, monkeypatch
):
    customers = {"17850": [1.0, 2.0, 3.0, 4.0, 0.1]}
    settings, store = _redis_app(redis_server, make_settings, tmp_path, monkeypatch, customers)
    headers = {"X-API-Key": KEY}
    with TestClient(
        create_app(settings, feature_source=FeastFeatureSource(store, "propensity_v1"))
    ) as client:
        assert client.post("/predict", json={"customer_id": "17850"}, headers=headers).status_code == 200
        redis_server.stop()
        details = [client.post("/predict", json={"customer_id": "17850"}, headers=headers) for _ in range(6)]
        assert [r.status_code for r in details] == [503] * 6
        # The first three reached Redis and failed; the next ones were answered without trying.
        assert all("unreachable" in r.json()["detail"] for r in details[:3])
        assert all("not retried for 1 s" in r.json()["detail"] for r in details[3:])
        redis_server.start()
        time.sleep(1.1)  # the breaker lets one probe through after breaker_reset_s
        assert client.post("/predict", json={"customer_id": "17850"}, headers=headers).status_code == 200


def _frame(customers):
    import pandas as pd
    from serving_models import FEATURE_TIME, FEATURES

    ts = pd.Timestamp(FEATURE_TIME)
    return pd.DataFrame(
        {"customer_id": list(customers), "event_timestamp": [ts] * len(customers)}
        | {f: [float(v[i]) for v in customers.values()] for i, f in enumerate(FEATURES)}
    )
