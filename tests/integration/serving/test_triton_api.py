"""The prediction API with ``serving.backend: triton``: real Feast, a real Triton Inference Server.

The API's answers name the version Triton answered with; Triton killed in the middle of a load
turns into 503s naming Triton (or flagged in-process answers where the fallback is configured), and
the same API process answers from Triton again once it is back.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient
from serving_models import FEATURES, make_feast_store, train_booster
from triton_fixtures import TritonHandle, free_ports

from propensity.core.settings import committed_settings
from propensity.core.timeutil import wait_until
from propensity.serving.app import create_app
from propensity.serving.backends import TritonBackend
from propensity.serving.deploy import DeployError, deploy_model
from propensity.serving.feature_source import FeastFeatureSource
from propensity.serving.triton_server import TritonServer, repository_index

pytestmark = pytest.mark.integration

KEY = "triton-key"
CUSTOMERS = {
    "17850": [3.0, 12.0, 540.5, 380.0, 0.05],
    "13047": [40.0, 2.0, 80.0, 200.0, 0.0],
    "12583": [-1.5, 0.3, 1.2, -0.7, 0.9],
}


def expected(booster, ids):
    x = np.array([CUSTOMERS[i] for i in ids], dtype=np.float32)
    return booster.inplace_predict(x).astype(np.float64)


def post(client, body):
    return client.post("/predict", json=body, headers={"X-API-Key": KEY})


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    return FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_answers_come_from_triton_with_the_version_triton_used(triton, make_settings, source, protocol):
    name = f"api_{protocol}"
    settings = make_settings(serving=triton.serving(name, protocol, prediction_log_flush_rows=1))
    champion, challenger = train_booster(seed=0), train_booster(seed=5)
    deploy_model(settings, champion, 1, "champion")
    deploy_model(settings, challenger, 2, "shadow")
    with TestClient(create_app(settings, feature_source=source)) as client:
        r = post(client, {"customer_id": "17850"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model_name"], body["model_version"], body["fallback"]) == (name, "1", False)
        assert body["score"] == pytest.approx(expected(champion, ["17850"])[0], abs=1e-6)
        ids = ["13047", "17850", "12583"]
        preds = post(client, {"customer_ids": ids}).json()["predictions"]
        np.testing.assert_allclose([p["score"] for p in preds], expected(champion, ids), atol=1e-6)
        assert client.get("/readyz").json()["shadow_version"] == "2"
    table = ds.dataset(str(settings.zone_root) + "/predictions/log", format="parquet").to_table().to_pandas()
    assert set(table["model_version"]) == {"1"} and set(table["shadow_version"]) == {"2"}
    # the challenger's shadow scores came from Triton's v2
    np.testing.assert_allclose(
        table["shadow_score"].to_numpy(dtype=float),
        challenger.inplace_predict(table[FEATURES].to_numpy(np.float32)),
        atol=1e-6,
    )


def test_triton_killed_mid_load_gives_503_then_the_same_api_recovers(tmp_path, source):
    handle = TritonHandle(tmp_path / "models", *free_ports(), tmp_path / "triton.log")
    handle.repository.mkdir()

    def settings_for(**more):
        return committed_settings(
            zone_root=str(tmp_path / "zones"),
            cache_dir=str(tmp_path / "cache"),
            serving=handle.serving("killed", "grpc", request_timeout_s=0.5, **more),
        )

    settings, fallback = settings_for(), settings_for(fallback_to_inprocess=True)
    champion = train_booster(seed=0)
    server = TritonServer(settings, load=[], log_path=handle.log_path).start()
    try:
        deploy_model(settings, champion, 1, "champion")
        want = expected(champion, ["17850"])[0]
        with (
            TestClient(create_app(settings, feature_source=source)) as api,
            TestClient(create_app(fallback, feature_source=source)) as api_fb,
        ):
            assert post(api, {"customer_id": "17850"}).json()["model_version"] == "1"
            # a shadow deploy whose load is under way when the server dies
            failures: list[Exception] = []

            def deploy() -> None:
                try:
                    deploy_model(settings, train_booster(seed=5), 2, "shadow")
                except DeployError as exc:
                    failures.append(exc)

            worker = threading.Thread(target=deploy)
            worker.start()
            wait_until(
                lambda: any(m["state"] == "LOADING" for m in repository_index(handle.http)),
                timeout_s=60,
                interval_s=0.05,
                what="v2 loading",
            )
            server.kill()
            worker.join(120)
            assert failures and "Triton at" in str(failures[0])  # the deploy failed, and said why
            assert "versions: [ 1 ]" in (handle.repository / "killed" / "config.pbtxt").read_text()

            r = post(api, {"customer_id": "17850"})
            assert r.status_code == 503
            assert r.json()["detail"].startswith(f"model server unavailable: Triton at {handle.grpc}")
            assert api.get("/readyz").status_code == 503
            body = post(api_fb, {"customer_id": "17850"}).json()  # configured fallback: flagged
            assert (body["fallback"], body["model_version"]) == (True, "1")
            assert body["score"] == pytest.approx(want, abs=1e-6)

            # back on the same ports, loading what the repository says is live: no API restart
            server = TritonServer(settings, log_path=tmp_path / "triton2.log").start()
            assert server.load == ["killed"]

            def answered() -> bool:
                return post(api, {"customer_id": "17850"}).status_code == 200

            wait_until(answered, timeout_s=30, interval_s=0.2, what="the API answering again")
            body = post(api, {"customer_id": "17850"}).json()
            assert (body["model_version"], body["fallback"]) == ("1", False)
            assert body["score"] == pytest.approx(want, abs=1e-6)
            wait_until(
                lambda: not post(api_fb, {"customer_id": "17850"}).json()["fallback"],
                timeout_s=30,
                what="the fallback API back on Triton",
            )
            assert api.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_a_hung_server_times_out_within_the_request_timeout():
    """A request to a port that accepts and never answers gives up after request_timeout_s."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"127.0.0.1:{listener.getsockname()[1]}"
        backend = TritonBackend(url, "hung", 1, protocol="grpc", timeout_s=0.09)
        t0 = time.perf_counter()
        with pytest.raises(Exception, match=f"Triton at {url}"):
            backend.predict(np.zeros((1, 5), dtype=np.float32))
        # bounded: the call gave up (a wait without a timeout would never return)
        assert time.perf_counter() - t0 < 30
    finally:
        listener.close()


def test_a_deploy_reaches_the_running_api_through_triton_without_dropping_requests(
    triton, make_settings, source
):
    """A new champion deployed into Triton while the API is under load: every request answered 200, by
    the version it names (Triton's), and the running API moves to the new version without a restart."""
    import httpx
    from serving_models import running_api

    settings = make_settings(serving=triton.serving("api_swap", "grpc", reload_interval_s=0.05))
    boosters = {1: train_booster(seed=0), 2: train_booster(seed=6)}
    deploy_model(settings, boosters[1], 1, "champion")
    want = {str(v): expected(b, list(CUSTOMERS)) for v, b in boosters.items()}
    answers, errors, stop = [], [], threading.Event()
    with running_api(create_app(settings, feature_source=source)) as url:

        def load() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    r = c.post(
                        f"{url}/predict", json={"customer_ids": list(CUSTOMERS)}, headers={"X-API-Key": KEY}
                    )
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")
                        continue
                    preds = r.json()["predictions"]
                    answers.append((preds[0]["model_version"], [p["score"] for p in preds]))

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(0.5)
            deploy_model(settings, boosters[2], 2, "champion")
            wait_until(lambda: answers and answers[-1][0] == "2", timeout_s=30, what="v2 answering")
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(timeout=20)
    assert errors == []
    versions = [v for v, _ in answers]
    assert versions[0] == "1" and versions[-1] == "2" and versions == sorted(versions)
    for version, scores in answers:
        np.testing.assert_allclose(scores, want[version], atol=1e-6)
