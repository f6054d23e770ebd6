"""Batch and online scores agree: the same customer and feature date score identically through the
Spark batch job and through the prediction API (real Feast online store, the deployed champion)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from batch_data import DAY, synthetic_snapshot, train_champion
from fastapi.testclient import TestClient

from propensity.batch.predictions_db import db_from_settings, read_day
from propensity.batch.scoring import score_day
from propensity.core.storage import write_partition
from propensity.core.zones import (
    SNAPSHOTS,
    zone_store,
)
from propensity.features.store import CustomerFeatures, materialize_dates, online_features
from propensity.serving.app import create_app
from propensity.serving.backends import InProcessBackend
from propensity.serving.deploy import deploy_model

pytestmark = pytest.mark.integration


MIDNIGHT = dt.datetime.combine(DAY, dt.time(0), tzinfo=dt.UTC)


@pytest.fixture
def scored(make_settings, tmp_path, spark):
    """A snapshot in the offline store and online in Feast (SQLite), champion v7, the day batch-scored."""
    settings = make_settings(
        features={
            "registry": str(tmp_path / "feast/registry.db"),
            "sqlite_path": str(tmp_path / "feast/online.db"),
        },
        serving={"repository": str(tmp_path / "models"), "auth_required": False, "shadow_enabled": False},
        batch={"db_url": f"sqlite:///{tmp_path}/predictions.db"},
    )
    write_partition(zone_store(settings), *SNAPSHOTS, DAY, synthetic_snapshot(150, DAY))
    materialize_dates(settings, [DAY])
    deploy_model(settings, train_champion(seed=3), 7, "champion")
    score_day(settings, DAY, spark=spark)
    return settings, read_day(db_from_settings(settings), DAY).set_index("customer_id")


def test_batch_score_equals_the_served_model_over_feast_online_features(scored):
    settings, batch = scored
    ids = list(batch.index[::3])
    online = online_features(settings, ids)
    assert all(isinstance(f, CustomerFeatures) and f.as_of == MIDNIGHT for f in online)
    x = np.array([f.vector() for f in online], dtype=np.float32)  # MODEL_FEATURES order, NaN missing
    served = InProcessBackend.from_repository(settings, "7").predict(x)  # the API's in-process backend
    assert set(batch.loc[ids, "feature_date"]) == {DAY.isoformat()}
    assert set(batch.loc[ids, "model_version"]) == {"7"}
    assert batch.loc[ids, "score"].tolist() == served.tolist()  # bit-identical, not merely close


def test_batch_score_equals_the_api_score_for_the_same_customer_and_feature_date(scored):
    settings, batch = scored
    ids = list(batch.index[::3])  # 50 customers, one API batch
    with TestClient(create_app(settings)) as client:
        r = client.post("/predict", json={"customer_ids": ids})
    assert r.status_code == 200, r.text
    online = r.json()["predictions"]
    assert [p["customer_id"] for p in online] == ids
    for p in online:
        row = batch.loc[p["customer_id"]]
        assert dt.datetime.fromisoformat(p["feature_timestamp"]) == MIDNIGHT
        assert row["feature_date"] == DAY.isoformat()
        assert (p["model_version"], row["model_version"]) == ("7", "7")
        assert p["score"] == row["score"], p["customer_id"]  # bit-identical, not merely close
