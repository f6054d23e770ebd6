"""Online store (Redis) down: 503 naming the cause, and the API recovers by itself when it returns."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_models import closed_port, make_feast_store, train_booster

from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

KEY = "k"


class RedisServer:
    """A private redis-server on a free port; SIGTERM saves its data, so a restart keeps it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, closed_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "3600 1",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


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
