"""A running API follows deploys: the new champion answers without a restart, no request fails during
the swap, every answer names the version that computed it, and a tampered file is refused."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from serving_models import make_feast_store, running_api, train_booster

from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource
from propensity.serving.manifest import MODEL_FILE

pytestmark = pytest.mark.integration

KEY = "swap-key"
CUSTOMERS = {
    "c-1": [3.0, 12.0, 540.5, 380.0, 0.05],
    "c-2": [40.0, 2.0, 80.0, 200.0, 0.0],
    "c-3": [-1.5, 0.3, 1.2, -0.7, 0.9],
}
IDS = list(CUSTOMERS)


def scores_of(booster) -> np.ndarray:
    x = np.array([CUSTOMERS[i] for i in IDS], dtype=np.float32)
    return booster.inplace_predict(x).astype(np.float64)


@pytest.fixture
def env(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)

    def settings_for(interval_s: float):
        return make_settings(
            serving={"repository": str(tmp_path / "models"), "reload_interval_s": interval_s}
        )

    boosters = {v: train_booster(seed=v) for v in (1, 2, 3)}
    deploy_model(settings_for(0), boosters[1], 1, "champion")
    source = FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")
    return settings_for, boosters, source, tmp_path / "models" / "propensity"


def predict(client: httpx.Client, url: str) -> dict:
    r = client.post(f"{url}/predict", json={"customer_ids": IDS}, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_deploy_reaches_the_running_api_and_no_request_fails_meanwhile(env):
    settings_for, boosters, source, _ = env
    settings = settings_for(0.05)  # the watcher's thread reads the deployment record every 50 ms
    want = {str(v): scores_of(b) for v, b in boosters.items()}
    answers: list[tuple[str, list[float]]] = []
    errors: list[str] = []
    stop = threading.Event()
    with running_api(create_app(settings, feature_source=source)) as url, httpx.Client(timeout=5) as client:
        assert predict(client, url)["predictions"][0]["model_version"] == "1"

        def load() -> None:
            with httpx.Client(timeout=5) as c:
                while not stop.is_set():
                    r = c.post(f"{url}/predict", json={"customer_ids": IDS}, headers={"X-API-Key": KEY})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")
                        continue
                    preds = r.json()["predictions"]
                    versions = {p["model_version"] for p in preds}
                    assert len(versions) == 1  # one batch, one model
                    answers.append((versions.pop(), [p["score"] for p in preds]))

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.3)
        deploy_model(settings, boosters[2], 2, "champion")
        deadline = time.monotonic() + 10
        while client.get(f"{url}/readyz").json()["model_version"] != "2":
            assert time.monotonic() < deadline, "the running API never picked up v2"
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        thread.join(timeout=10)
        body = predict(client, url)
    assert errors == []
    versions = [v for v, _ in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions)  # once v2 answered, v1 never answered again
    for version, scores in answers:  # every answer is the named version's score
        np.testing.assert_allclose(scores, want[version], atol=1e-7)
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], want["2"], atol=1e-7)


def test_a_tampered_model_file_is_refused_and_the_previous_champion_keeps_serving(env):
    settings_for, boosters, source, repo = env
    settings = settings_for(0)  # no thread: this test polls the deployment record itself
    app = create_app(settings, feature_source=source)
    watcher = app.state.deployment_watcher
    with running_api(app) as url, httpx.Client(timeout=5) as client:
        deploy_model(settings, boosters[2], 2, "champion")
        assert watcher.poll() is True
        assert predict(client, url)["predictions"][0]["model_version"] == "2"

        deploy_model(settings, boosters[3], 3, "champion")
        # The file under v3 is replaced after the deploy: not the file the manifest's sha256 names.
        (repo / "3" / MODEL_FILE).write_bytes((repo / "1" / MODEL_FILE).read_bytes())
        assert watcher.poll() is False
        ready = client.get(f"{url}/readyz").json()
        assert ready["model_version"] == "2" and ready["status"] == "ready"
        assert "v3 not served" in ready["deployment_problem"] and "sha256" in ready["deployment_problem"]
        body = predict(client, url)
        assert {p["model_version"] for p in body["predictions"]} == {"2"}
        np.testing.assert_allclose(
            [p["score"] for p in body["predictions"]], scores_of(boosters[2]), atol=1e-7
        )

        deploy_model(settings, boosters[3], 3, "champion")  # redeployed: the right file again
        assert watcher.poll() is True
        assert client.get(f"{url}/readyz").json()["deployment_problem"] is None
        body = predict(client, url)
        np.testing.assert_allclose(
            [p["score"] for p in body["predictions"]], scores_of(boosters[3]), atol=1e-7
        )
        assert {p["model_version"] for p in body["predictions"]} == {"3"}


def test_an_api_started_before_the_first_deploy_becomes_ready_when_it_lands(
    make_settings, tmp_path, monkeypatch
):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models"), "reload_interval_s": 0})
    source = FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")
    app = create_app(settings, feature_source=source)
    with running_api(app) as url, httpx.Client(timeout=5) as client:
        r = client.post(f"{url}/predict", json={"customer_id": "c-1"}, headers={"X-API-Key": KEY})
        assert r.status_code == 503 and "no champion deployed" in r.json()["detail"]
        deploy_model(settings, train_booster(seed=4), 1, "champion")
        assert app.state.deployment_watcher.poll() is True
        r = client.post(f"{url}/predict", json={"customer_id": "c-1"}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
