"""The prediction API end to end: real Feast (SQLite online store), deployed models, Parquet log."""

from __future__ import annotations

import datetime as dt
import gc

import numpy as np
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient
from serving_models import FEATURE_TIME, FEATURES, closed_port, make_feast_store, train_booster

from propensity.serving.app import create_app
from propensity.serving.backends import TritonBackend
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

KEY = "test-key-1"
CUSTOMERS = {
    "17850": [3.0, 12.0, 540.5, 380.0, 0.05],
    "13047": [40.0, 2.0, 80.0, 200.0, 0.0],
    "12583": [-1.5, 0.3, 1.2, -0.7, 0.9],
}


@pytest.fixture
def env(make_settings, tmp_path, monkeypatch):
    """Settings with a temporary repository holding champion v1, and a real Feast store."""
    monkeypatch.setenv("PROPENSITY_API_KEYS", f"other-key,{KEY}")
    settings = make_settings(
        serving={"repository": str(tmp_path / "models"), "prediction_log_flush_rows": 1000}
    )
    champion = train_booster(seed=0)
    deploy_model(settings, champion, 1, "champion")
    source = FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")
    return settings, champion, source


def expected(booster, ids):
    x = np.array([CUSTOMERS[i] for i in ids], dtype=np.float32)
    return booster.inplace_predict(x).astype(np.float64)


def post(client, body, key=KEY):
    return client.post("/predict", json=body, headers={"X-API-Key": key} if key else {})


def test_single_and_batch_scores_come_from_online_features_and_the_champion(env):
    settings, champion, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:
        assert gc.get_freeze_count() > 0  # startup's objects are out of the collector's way
        r = post(client, {"customer_id": "17850"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["score"] == pytest.approx(expected(champion, ["17850"])[0], abs=1e-7)
        assert (body["model_name"], body["model_version"]) == ("propensity", "1")
        assert dt.datetime.fromisoformat(body["feature_timestamp"]) == dt.datetime.fromisoformat(FEATURE_TIME)
        assert (body["cold_start"], body["fallback"]) == (False, False)
        assert r.headers["Server-Timing"].startswith("features;dur=")

        ids = ["13047", "17850", "12583"]
        r = post(client, {"customer_ids": ids})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["customer_id"] for p in preds] == ids
        np.testing.assert_allclose([p["score"] for p in preds], expected(champion, ids), atol=1e-7)


def test_bad_input_gets_a_clear_4xx(env):
    settings, _, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:
        r = client.post(
            "/predict",
            content=b'{"customer_id": ',
            headers={"X-API-Key": KEY, "content-type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        r = client.post("/predict", content=b'{"customer_id": "17850"}', headers={"X-API-Key": KEY})
        assert r.status_code == 422 and "content-type application/json" in r.json()["detail"][0]["msg"]
        r = post(client, {"customer_id": 17850})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "customer_id"]
        assert "valid string" in r.json()["detail"][0]["msg"]
        r = post(client, {"customer_id": "1", "customer_ids": ["2"]})
        assert r.status_code == 422 and "exactly one of customer_id" in r.json()["detail"][0]["msg"]
        r = post(client, {})
        assert r.status_code == 422
        r = post(client, {"customer_id": "null"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "customer_id"]
        assert "is a placeholder for a missing value" in r.json()["detail"][0]["msg"]
        r = post(client, {"customer_ids": ["17850", "x" * 10_000]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "customer_ids", 1]
        assert "at most 64" in r.json()["detail"][0]["msg"] and len(r.text) < 400  # never echoed whole
        r = post(client, {"customer_ids": [str(i) for i in range(101)]})
        assert r.status_code == 413
        assert r.json()["detail"] == "batch of 101 customer ids exceeds the limit of 100"
        metrics = client.get("/metrics").text
        assert 'propensity_api_errors_total{kind="invalid_request"} 7.0' in metrics
        assert 'propensity_api_errors_total{kind="batch_too_large"} 1.0' in metrics


def test_an_integer_id_written_as_a_float_is_the_same_customer_as_at_ingest(env):
    settings, champion, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:
        r = post(client, {"customer_id": "17850.0"})
        assert r.status_code == 200 and r.json()["customer_id"] == "17850"
        assert r.json()["score"] == pytest.approx(expected(champion, ["17850"])[0], abs=1e-7)


def test_api_key_is_required(env, monkeypatch):
    settings, _, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:
        assert post(client, {"customer_id": "17850"}, key=None).status_code == 401
        r = post(client, {"customer_id": "17850"}, key="wrong")
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert post(client, {"customer_id": "17850"}, key="other-key").status_code == 200
        # probes and the schema stay open
        assert client.get("/healthz").json() == {"status": "alive"}
        predict = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
        body = predict["requestBody"]["content"]["application/json"]["schema"]
        one, batch = body["oneOf"]  # exactly one of the two shapes, nothing else
        assert (one["required"], one["additionalProperties"]) == (["customer_id"], False)
        assert (batch["required"], batch["additionalProperties"]) == (["customer_ids"], False)
        assert batch["properties"]["customer_ids"]["maxItems"] == 100
        assert one["properties"]["customer_id"]["maxLength"] == 64
        assert set(predict["responses"]) >= {"200", "401", "404", "413", "422", "503"}
    monkeypatch.delenv("PROPENSITY_API_KEYS")
    with pytest.raises(RuntimeError, match=r"\$PROPENSITY_API_KEYS is empty"):
        create_app(settings, feature_source=source)


def test_unknown_customer_is_404_or_a_flagged_cold_start_score(env, make_settings, tmp_path):
    settings, champion, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:
        r = post(client, {"customer_ids": ["17850", "nobody"]})
        assert r.status_code == 404 and r.json()["detail"] == "unknown customer id(s): ['nobody']"
    cold = make_settings(serving={"repository": str(tmp_path / "models"), "unknown_customer": "cold_start"})
    with TestClient(create_app(cold, feature_source=source)) as client:
        body = post(client, {"customer_id": "nobody"}).json()
        assert body["cold_start"] is True and body["feature_timestamp"] is None
        empty = np.full((1, len(FEATURES)), np.nan, dtype=np.float32)
        assert body["score"] == pytest.approx(float(champion.inplace_predict(empty)[0]), abs=1e-7)


def test_shadow_is_scored_off_path_and_every_request_is_logged(env):
    settings, champion, source = env
    challenger = train_booster(seed=4)
    deploy_model(settings, challenger, 2, "shadow")
    app = create_app(settings, feature_source=source)
    with TestClient(app) as client:
        r = post(client, {"customer_ids": ["17850", "13047"]})
        assert [p["model_version"] for p in r.json()["predictions"]] == ["1", "1"]  # champion answers
        post(client, {"customer_id": "12583"})
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["model_version"], ready["shadow_version"]) == ("ready", "1", "2")
        metrics = client.get("/metrics").text
        assert 'propensity_model_info{role="shadow",version="2"} 1.0' in metrics
        assert 'propensity_api_requests_total{endpoint="predict",status="200"} 2.0' in metrics
    # Leaving the client ran the shutdown: background work done, log flushed.
    files = app.state.prediction_log.files
    assert len(files) == 1 and "/predictions/log/date=" in files[0]
    table = ds.dataset(files, format="parquet").to_table().to_pandas().sort_values("customer_id")
    assert list(table["customer_id"]) == ["12583", "13047", "17850"]
    ids = list(table["customer_id"])
    np.testing.assert_allclose(table["score"], expected(champion, ids), atol=1e-7)
    np.testing.assert_allclose(table["shadow_score"], expected(challenger, ids), atol=1e-7)
    assert set(table["shadow_version"]) == {"2"} and set(table["model_version"]) == {"1"}
    np.testing.assert_allclose(table[FEATURES].to_numpy(), [CUSTOMERS[i] for i in ids], rtol=1e-6)
    assert table["request_id"].nunique() == 2 and (table["latency_ms"] > 0).all()


def test_model_server_down_is_503_or_a_flagged_in_process_fallback(env, make_settings, tmp_path):
    settings, champion, source = env
    down = TritonBackend(f"127.0.0.1:{closed_port()}", "propensity", 1, protocol="http", timeout_s=0.5)
    with TestClient(create_app(settings, feature_source=source, backend=down)) as client:
        r = post(client, {"customer_id": "17850"})
        assert r.status_code == 503 and r.json()["detail"].startswith("model server unavailable:")
        assert client.get("/readyz").status_code == 503
    fb = make_settings(serving={"repository": str(tmp_path / "models"), "fallback_to_inprocess": True})
    with TestClient(create_app(fb, feature_source=source, backend=down)) as client:
        body = post(client, {"customer_id": "17850"}).json()
        assert body["fallback"] is True and body["model_version"] == "1"
        assert body["score"] == pytest.approx(expected(champion, ["17850"])[0], abs=1e-7)


def test_no_champion_deployed_is_not_ready(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "empty")})
    source = FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")
    with TestClient(create_app(settings, feature_source=source)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "no champion deployed" in r.json()["reasons"][0]
        assert post(client, {"customer_id": "17850"}).status_code == 503


def test_side_endpoints_need_the_key_where_configured(env, make_settings, tmp_path):
    settings, _, source = env
    with TestClient(create_app(settings, feature_source=source)) as client:  # loopback bind: open
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    exposed = make_settings(
        serving={"repository": str(tmp_path / "models"), "host": "0.0.0.0", "protect_docs": True}
    )
    with TestClient(create_app(exposed, feature_source=source)) as client:
        for path in ("/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
        assert client.get("/healthz").status_code == 200  # probes stay open
