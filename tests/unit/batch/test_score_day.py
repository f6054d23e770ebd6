"""The batch job on the local profile: Spark (local[1]), the deployed champion, SQLite."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from batch_data import DAY, synthetic_snapshot

from propensity.batch.predictions_db import db_from_settings, read_day
from propensity.batch.scoring import BatchInputError, NoChampionDeployed, days_to_score, score_day
from propensity.core.storage import write_partition
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features.spec import MODEL_FEATURES, matrix
from propensity.serving.deploy import deploy_model


def expected_scores(booster, table: pa.Table) -> dict[str, float]:
    frame = table.to_pandas()
    scores = booster.inplace_predict(matrix(frame, MODEL_FEATURES), validate_features=False)
    return dict(zip(frame["customer_id"], np.asarray(scores, dtype=np.float64), strict=True))


def test_every_active_customer_is_scored_by_the_champion(batch_settings, snapshot, champion, spark):
    deploy_model(batch_settings, champion, 1, "champion")
    result = score_day(batch_settings, DAY, run_id="scheduled__2011-12-01", spark=spark)

    rows = read_day(db_from_settings(batch_settings), DAY)
    assert result["rows"] == len(rows) == snapshot.num_rows == 300
    assert rows["customer_id"].is_unique
    want = expected_scores(champion, snapshot)
    # Bit-identical to the booster on the training matrix: same file, same column order.
    assert rows["score"].tolist() == [want[c] for c in rows["customer_id"]]
    assert set(rows["model_name"]) == {"propensity"} and set(rows["model_version"]) == {"1"}
    assert set(rows["feature_date"]) == set(rows["scored_for_date"]) == {"2011-12-01"}
    assert set(rows["run_id"]) == {"scheduled__2011-12-01"}
    best = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert result["top"] == best
    assert result["model_version"] == "1"


def test_rerun_replaces_the_day_and_each_day_names_its_model(
    batch_settings, snapshot, champion, challenger, spark
):
    later = DAY + dt.timedelta(days=1)
    write_partition(zone_store(batch_settings), *SNAPSHOTS, later, synthetic_snapshot(250, later))
    deploy_model(batch_settings, champion, 1, "champion")
    score_day(batch_settings, DAY, spark=spark)
    score_day(batch_settings, DAY, spark=spark)  # a re-run: same rows, no duplicates
    deploy_model(batch_settings, challenger, 2, "champion")
    score_day(batch_settings, later, spark=spark)

    db = db_from_settings(batch_settings)
    first, second = read_day(db, DAY), read_day(db, later)
    assert len(first) == 300 and first["customer_id"].is_unique
    assert set(first["model_version"]) == {"1"}
    assert len(second) == 250 and set(second["model_version"]) == {"2"}

    # A backfill of the first day under the new champion replaces it wholesale.
    score_day(batch_settings, DAY, run_id="backfill__2011-12-01", spark=spark)
    again = read_day(db, DAY)
    assert len(again) == 300 and set(again["model_version"]) == {"2"}
    assert set(again["run_id"]) == {"backfill__2011-12-01"}
    want = expected_scores(challenger, snapshot)
    assert again["score"].tolist() == [want[c] for c in again["customer_id"]]


def test_features_are_read_by_name_whatever_the_stored_column_order(
    batch_settings, snapshot, champion, spark
):
    shuffled = snapshot.select(list(reversed(snapshot.column_names)))
    write_partition(zone_store(batch_settings), *SNAPSHOTS, DAY, shuffled)
    deploy_model(batch_settings, champion, 1, "champion")
    score_day(batch_settings, DAY, spark=spark)
    rows = read_day(db_from_settings(batch_settings), DAY)
    want = expected_scores(champion, snapshot)
    assert rows["score"].tolist() == [want[c] for c in rows["customer_id"]]


def test_no_champion_is_a_clear_skip_reason(batch_settings, snapshot, spark):
    with pytest.raises(NoChampionDeployed, match="no champion deployed in .*models/propensity"):
        score_day(batch_settings, DAY, spark=spark)


def test_a_missing_snapshot_names_the_day_and_the_nearest_one(batch_settings, snapshot, champion, spark):
    deploy_model(batch_settings, champion, 1, "champion")
    with pytest.raises(BatchInputError, match=r"no feature snapshot for 2011-12-05 .*\['2011-12-01'\]"):
        score_day(batch_settings, DAY + dt.timedelta(days=4), spark=spark)


def test_an_older_snapshot_is_used_only_within_the_allowed_age(make_settings, tmp_path, champion, spark):
    settings = make_settings(
        serving={"repository": str(tmp_path / "models")},
        batch={"db_url": f"sqlite:///{tmp_path}/p.db", "max_feature_age_days": 2},
    )
    write_partition(zone_store(settings), *SNAPSHOTS, DAY, synthetic_snapshot(40, DAY))
    deploy_model(settings, champion, 1, "champion")
    result = score_day(settings, DAY + dt.timedelta(days=2), spark=spark)
    assert (result["feature_date"], result["day"], result["rows"]) == ("2011-12-01", "2011-12-03", 40)
    with pytest.raises(BatchInputError, match="no feature snapshot for 2011-12-04"):
        score_day(settings, DAY + dt.timedelta(days=3), spark=spark)


def test_a_snapshot_without_the_models_features_is_refused(batch_settings, snapshot, champion, spark):
    write_partition(zone_store(batch_settings), *SNAPSHOTS, DAY, snapshot.drop_columns(["aov_90d"]))
    deploy_model(batch_settings, champion, 1, "champion")
    with pytest.raises(BatchInputError, match=r"lacks the champion's input column\(s\) \['aov_90d'\]"):
        score_day(batch_settings, DAY, spark=spark)


def test_days_to_score_param_then_asset_events_then_logical_date():
    assert days_to_score("2011-03-04", ["2011-12-01"], None) == [dt.date(2011, 3, 4)]
    assert days_to_score(None, ["2011-12-02", "2011-12-01", "2011-12-02"], None) == [
        dt.date(2011, 12, 1),
        dt.date(2011, 12, 2),
    ]
    logical = dt.datetime(2011, 12, 5, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    assert days_to_score(None, [], logical) == [dt.date(2011, 12, 6)]  # its UTC day
    with pytest.raises(ValueError, match="needs a day"):
        days_to_score(None, [], None)


def test_a_task_with_several_cores_scores_row_blocks_bit_identically(champion):
    from propensity.batch.worker import ModelRef
    from propensity.batch.worker import Scorer as _Scorer
    from propensity.serving.backends import InProcessBackend

    class Broadcast:  # what sc.broadcast gives a task
        value = bytes(champion.save_raw("json"))

    batch = synthetic_snapshot(20_000, DAY).to_batches()[0]
    scorers = [_Scorer(Broadcast(), ModelRef("m", "1", f"sha{n}", MODEL_FEATURES), threads=n) for n in (1, 3)]
    one, three = (s.scores(s.backend(), batch) for s in scorers)
    api = InProcessBackend.from_bytes(Broadcast.value, "1").predict(matrix(batch.to_pandas(), MODEL_FEATURES))
    assert one.tobytes() == three.tobytes() == api.tobytes()
