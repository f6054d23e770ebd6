"""The API's feature reads and micro-batching against real Feast stores (SQLite, and Redis at :6379).

The API reads through the provider's ``online_read`` with the FeatureService's views, resolved
once; these tests hold it to ``FeatureStore.get_online_features`` value for value, and check that
requests scored together in one batch get exactly the answers they would get alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import numpy as np
import pytest
from feast_stores import typed_store
from serving_models import make_feast_store, train_booster

from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

REDIS_DB = 12  # away from the other tests' databases; this project's keys are removed afterwards
KEY = "k"


def via_get_online_features(source: FeastFeatureSource, ids: list[str]):
    """What the API read before: FeatureStore.get_online_features(...).to_dict(), packed the same way."""
    data = source.store.get_online_features(
        features=source.service, entity_rows=[{"customer_id": c} for c in ids]
    ).to_dict(include_event_timestamps=True)
    n = len(ids)
    values = np.full((n, len(source.feature_names)), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    ts = np.zeros(n, dtype=np.int64)
    for j, name in enumerate(source.feature_names):
        for i, v in enumerate(data[name]):
            if v is not None:
                values[i, j], found[i] = v, True
        ts = np.maximum(ts, np.asarray(data[f"{name}__ts"], dtype=np.int64))
    return values, found, [dt.datetime.fromtimestamp(int(t), dt.UTC) if t > 0 else None for t in ts]


def assert_same_rows(source: FeastFeatureSource) -> None:
    assert source.feature_names == [
        "orders_90d",
        "spend_90d",
        "return_rate_90d",
    ]  # strings are not model inputs
    ids = ["a", "b", "c", "d", "nobody", "a", "d"]  # unknown and repeated ids too
    got = source.get(ids)
    values, found, stamps = via_get_online_features(source, ids)
    np.testing.assert_array_equal(got.values, values)  # NaN where missing, in the same places
    assert got.found.tolist() == found.tolist() == [True, True, True, True, False, True, True]
    assert got.timestamps == stamps
    assert got.timestamps[0] == dt.datetime(2011, 12, 2, tzinfo=dt.UTC)  # the later of its two views
    assert got.timestamps[2] == dt.datetime(2011, 12, 1, 6, 30, tzinfo=dt.UTC)
    assert got.values[1].tolist()[:2] == [pytest.approx(np.nan, nan_ok=True), 7.5]


def test_online_read_equals_get_online_features_on_sqlite(tmp_path):
    assert_same_rows(FeastFeatureSource(typed_store(tmp_path), "svc"))


def test_online_read_equals_get_online_features_on_redis(tmp_path):
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    project = f"api_features_{uuid.uuid4().hex[:8]}"
    online = RedisOnlineStoreConfig(connection_string=f"127.0.0.1:6379,db={REDIS_DB},retry=null")
    store = typed_store(tmp_path, online, project)
    try:
        assert_same_rows(FeastFeatureSource(store, "svc"))
    finally:
        store.teardown()
        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        for key in client.scan_iter(match=f"*{project}*"):
            client.delete(key)


class RecordingSource:
    """A real Feast source that records each lookup's ids; the first lookup lingers so that the
    other requests queue behind it and go together in the next."""

    def __init__(self, inner: FeastFeatureSource) -> None:
        self.inner, self.feature_names, self.calls = inner, inner.feature_names, []

    def get(self, ids):
        self.calls.append(list(ids))
        if len(self.calls) == 1:
            import time

            time.sleep(0.2)
        return self.inner.get(ids)

    def check(self) -> None:
        self.inner.check()


def test_concurrent_requests_share_a_lookup_and_get_their_own_answers(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models")})
    champion = train_booster(seed=0)
    deploy_model(settings, champion, 1, "champion")
    customers = {str(17000 + i): [float(i), 1.0 + i, 10.0 * i, 5.0, 0.01 * i] for i in range(12)}
    source = RecordingSource(
        FeastFeatureSource(make_feast_store(tmp_path / "feast", customers), "propensity_v1")
    )
    app = create_app(settings, feature_source=source)
    ids = list(customers)
    bodies = [{"customer_id": c} for c in ids[:8]] + [
        {"customer_ids": ids[8:]},
        {"customer_ids": [ids[0], "nobody"]},  # 404, without failing its batch-mates
        {"customer_id": ids[3]},
    ]

    async def send_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(
                *(client.post("/predict", json=b, headers={"X-API-Key": KEY}) for b in bodies)
            )

    answers = asyncio.run(send_all())
    app.state.background.close()

    def expected(cid: str) -> float:
        x = np.array([customers[cid]], dtype=np.float32)
        return float(champion.inplace_predict(x)[0])

    assert [r.status_code for r in answers] == [200] * 9 + [404, 200]
    for body, r in zip(bodies[:8] + bodies[10:], answers[:8] + answers[10:], strict=True):
        assert r.json()["customer_id"] == body["customer_id"]
        assert r.json()["score"] == expected(body["customer_id"])  # bit for bit, as if alone
        assert "queue;dur=" in r.headers["Server-Timing"]
    preds = answers[8].json()["predictions"]
    assert [p["customer_id"] for p in preds] == ids[8:]
    assert [p["score"] for p in preds] == [expected(c) for c in ids[8:]]
    assert answers[9].json()["detail"] == "unknown customer id(s): ['nobody']"
    # Eleven requests, at most two lookups: the first (lingering) and one for all that queued.
    assert sum(len(c) for c in source.calls) == 8 + 4 + 2 + 1 and len(source.calls) <= 2
    metrics = app.state.metrics.registry
    assert metrics.get_sample_value("propensity_api_batch_requests_count") == len(source.calls)
    assert metrics.get_sample_value("propensity_prediction_log_rows_total") == 1 + 7 + 4 + 1
