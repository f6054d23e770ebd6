"""Batch scoring into the real Postgres at 127.0.0.1:5432: COPY staging, the atomic day swap, faults.

Each test gets a schema of its own in database ``test``, dropped afterwards.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "batch"))  # batch_data helpers
from batch_data import DAY, synthetic_snapshot, train_champion  # noqa: E402
from serving_models import closed_port  # noqa: E402

from propensity.batch import score_day  # noqa: E402
from propensity.collect import zone_store  # noqa: E402
from propensity.deploy import deploy_model  # noqa: E402
from propensity.features import MODEL_FEATURES, OFFLINE_ZONE, SNAPSHOTS  # noqa: E402
from propensity.predictions_db import (  # noqa: E402
    PredictionsDBError,
    PredictionsDBUnavailable,
    db_from_settings,
    read_day,
    schema_version,
)
from propensity.storage import write_partition  # noqa: E402
from propensity.train import matrix  # noqa: E402

pytestmark = pytest.mark.integration

PG = "postgresql://postgres@127.0.0.1:5432/test"
N = 2000


@pytest.fixture
def schema():
    name = f"batch_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def env(make_settings, tmp_path, schema):
    settings = make_settings(
        serving={"repository": str(tmp_path / "models")},
        batch={"db_url": PG, "db_schema": schema, "partitions": 2, "connect_timeout_s": 3},
    )
    snapshot = synthetic_snapshot(N, DAY)
    write_partition(zone_store(settings), OFFLINE_ZONE, SNAPSHOTS, DAY, snapshot)
    champion = train_champion(seed=0)
    deploy_model(settings, champion, 1, "champion")
    return settings, snapshot, champion


def reader_view(schema: str) -> tuple[int, set[str]]:
    """What another session sees of the day right now."""
    with psycopg.connect(PG) as conn:
        rows = conn.execute(
            f"SELECT model_version FROM {schema}.predictions WHERE scored_for_date = %s", (DAY,)
        ).fetchall()
    return len(rows), {r[0] for r in rows}


def test_scores_land_in_postgres_bit_exact_and_a_rerun_replaces_them(env, schema, spark):
    settings, snapshot, champion = env
    first = score_day(settings, DAY, run_id="scheduled__1", spark=spark)
    deploy_model(settings, train_champion(seed=1), 2, "champion")
    second = score_day(settings, DAY, run_id="scheduled__2", spark=spark)

    db = db_from_settings(settings)
    assert schema_version(db) == 2
    rows = read_day(db, DAY)
    assert (first["rows"], second["rows"], len(rows)) == (N, N, N)
    assert rows["customer_id"].is_unique and set(rows["model_version"]) == {"2"}
    assert set(rows["run_id"]) == {"scheduled__2"} and set(rows["feature_date"]) == {"2011-12-01"}
    frame = snapshot.to_pandas()
    want = dict(
        zip(
            frame["customer_id"],
            train_champion(seed=1).inplace_predict(matrix(frame, MODEL_FEATURES)).astype(np.float64),
            strict=True,
        )
    )
    assert rows["score"].tolist() == [want[c] for c in rows["customer_id"]]  # COPY kept every bit
    with psycopg.connect(PG) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.predictions_staging").fetchone() == (0,)


def test_readers_see_the_old_day_until_commit_and_a_crash_keeps_it(env, schema, spark):
    settings, _, _ = env
    score_day(settings, DAY, spark=spark)
    deploy_model(settings, train_champion(seed=1), 2, "champion")
    seen: list[tuple[int, set[str]]] = []

    def crash_after_every_row_is_written() -> None:
        seen.append(reader_view(schema))  # the new rows are in, uncommitted
        raise RuntimeError("executor lost before commit")

    with pytest.raises(PredictionsDBError, match="executor lost before commit"):
        score_day(settings, DAY, spark=spark, before_commit=crash_after_every_row_is_written)
    assert seen == [(N, {"1"})]  # no gap and no mix while the swap was in flight
    assert reader_view(schema) == (N, {"1"})

    score_day(settings, DAY, spark=spark)  # the retry
    assert reader_view(schema) == (N, {"2"})


def test_a_connection_killed_mid_swap_fails_clearly_and_the_retry_succeeds(env, schema, spark):
    settings, _, _ = env
    score_day(settings, DAY, spark=spark)
    deploy_model(settings, train_champion(seed=1), 2, "champion")

    def kill_the_writer() -> None:
        with psycopg.connect(PG, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE state = 'idle in transaction' AND query LIKE %s",
                (f"%{schema}.predictions_staging%",),
            ).fetchall()
        assert killed == [(True,)]

    with pytest.raises(PredictionsDBUnavailable, match="went away while publishing 2011-12-01.*retry"):
        score_day(settings, DAY, spark=spark, before_commit=kill_the_writer)
    assert reader_view(schema) == (N, {"1"})
    score_day(settings, DAY, spark=spark)
    assert reader_view(schema) == (N, {"2"})


def test_database_down_is_a_clear_error_and_the_retry_succeeds(env, schema, spark, make_settings):
    settings, _, _ = env
    port = closed_port()
    down = settings.model_copy(
        update={
            "batch": settings.batch.model_copy(
                update={"db_url": f"postgresql://postgres@127.0.0.1:{port}/test"}
            )
        }
    )
    with pytest.raises(
        PredictionsDBUnavailable, match=rf"127.0.0.1:{port}/test is unreachable.*can be retried"
    ):
        score_day(down, DAY, spark=spark)
    assert score_day(settings, DAY, spark=spark)["rows"] == N
