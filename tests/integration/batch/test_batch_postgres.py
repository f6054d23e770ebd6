"""Batch scoring into the real Postgres at 127.0.0.1:5432: COPY staging, the atomic partition swap, faults.

Each test gets a schema of its own in database ``test``, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import numpy as np
import pandas as pd
import psycopg
import pytest
from batch_data import DAY, synthetic_snapshot, train_champion
from serving_models import closed_port

import propensity.batch.scoring as batch_module
from propensity.batch.predictions_db import (
    MIGRATIONS,
    PredictionsDB,
    PredictionsDBError,
    PredictionsDBUnavailable,
    StagedBatch,
    db_from_settings,
    migrate,
    open_batch,
    publish_day,
    read_day,
    schema_version,
    stage_rows,
    top_scores,
)
from propensity.batch.scoring import BatchInputError, score_day
from propensity.core.storage import write_partition
from propensity.core.zones import (
    SNAPSHOTS,
    zone_store,
)
from propensity.features.spec import MODEL_FEATURES, matrix
from propensity.serving.deploy import deploy_model

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
    write_partition(zone_store(settings), *SNAPSHOTS, DAY, snapshot)
    champion = train_champion(seed=0)
    deploy_model(settings, champion, 1, "champion")
    return settings, snapshot, champion


def reader_view(schema: str, lock_timeout: str = "0") -> tuple[int, set[str]] | str:
    """What another session sees of the day right now ("waits" if it cannot read within ``lock_timeout``)."""
    with psycopg.connect(PG) as conn:
        conn.execute(f"SET lock_timeout = '{lock_timeout}'")
        try:
            rows = conn.execute(
                f"SELECT model_version FROM {schema}.predictions WHERE scored_for_date = %s", (DAY,)
            ).fetchall()
        except psycopg.errors.LockNotAvailable:
            return "waits"
    return len(rows), {r[0] for r in rows}


def stage_tables(schema: str) -> list[tuple]:
    with psycopg.connect(PG) as conn:
        return conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'predictions_stage_%%' "
            "AND tablename <> 'predictions_stage_parts' "
            f"UNION ALL SELECT batch_id FROM {schema}.predictions_stage_parts",
            (schema,),
        ).fetchall()


def test_scores_land_in_postgres_bit_exact_and_a_rerun_replaces_them(env, schema, spark):
    settings, snapshot, champion = env
    first = score_day(settings, DAY, run_id="scheduled__1", spark=spark)
    deploy_model(settings, train_champion(seed=1), 2, "champion")
    second = score_day(settings, DAY, run_id="scheduled__2", spark=spark)

    db = db_from_settings(settings)
    assert schema_version(db) == MIGRATIONS[-1].version == 4
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
    # The top, read back by key among the tasks' best rows, is the table's own top.
    assert (
        second["top"] == top_scores(db, DAY, 10) == sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    )
    assert stage_tables(schema) == []  # the batch's table became the day's partition
    with psycopg.connect(PG) as conn:
        partitions = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (f"{schema}.predictions",),
        ).fetchall()
    assert partitions == [("predictions_20111201",)]


def test_readers_see_the_old_day_until_commit_and_a_crash_keeps_it(env, schema, spark):
    settings, _, _ = env
    score_day(settings, DAY, spark=spark)
    deploy_model(settings, train_champion(seed=1), 2, "champion")
    seen: list[tuple[int, set[str]]] = []

    def crash_after_every_row_is_written() -> None:
        # The new partition is attached, uncommitted: a reader can only wait for the outcome.
        seen.append(reader_view(schema, lock_timeout="500ms"))
        raise RuntimeError("executor lost before commit")

    with pytest.raises(PredictionsDBError, match="executor lost before commit"):
        score_day(settings, DAY, spark=spark, before_commit=crash_after_every_row_is_written)
    assert seen == ["waits"]  # no gap and no mix while the swap was in flight
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
                (f"%{schema}.predictions%",),
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


def test_a_retried_partition_replaces_what_it_committed(schema):
    db = PredictionsDB(PG, schema)
    migrate(db)
    staged = StagedBatch("0000beef", "propensity", "1", DAY, DAY, "r1")
    open_batch(db, staged)
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(10)], "score": np.linspace(0, 1, 10)})
    stage_rows(db, staged, 0, frame.iloc[:6])
    stage_rows(db, staged, 0, frame.iloc[:6])  # the same Spark task, retried after its commit
    stage_rows(db, staged, 1, frame.iloc[6:])
    assert publish_day(db, staged, 10) == 10
    assert read_day(db, DAY)["score"].tolist() == frame["score"].tolist()
    assert stage_tables(schema) == []


def test_a_version_2_database_is_partitioned_by_day_keeping_its_rows(schema):
    db = PredictionsDB(PG, schema)
    with psycopg.connect(PG, autocommit=True) as conn:  # the database as version 2 left it
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied_at TEXT NOT NULL)"
        )
        for m in MIGRATIONS[:2]:
            for statement in m.postgres:
                conn.execute(statement.replace("{schema}", f"{schema}."))
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, 'then')", (m.version, m.description))
        for day in ("2011-11-30", "2011-12-01"):
            conn.execute(
                "INSERT INTO predictions SELECT 'c' || i, i / 10.0, 'propensity', '1', %s, %s, 'old' "
                "FROM generate_series(0, 9) i",
                (day, day),
            )
    assert schema_version(db) == 2
    assert migrate(db) == 4
    assert len(read_day(db, DAY)) == 10 and set(read_day(db, DAY)["run_id"]) == {"old"}
    staged = StagedBatch("0000cafe", "propensity", "2", DAY, DAY, "new")
    open_batch(db, staged)
    stage_rows(db, staged, 0, pd.DataFrame({"customer_id": ["a", "b"], "score": [0.25, 0.5]}))
    assert publish_day(db, staged, 2) == 2
    assert read_day(db, DAY)["customer_id"].tolist() == ["a", "b"]
    assert len(read_day(db, DAY - dt.timedelta(days=1))) == 10  # the other day untouched
    # Migration 4: the model-version index is BRIN on the table and on every day, the swapped-in
    # day's own index adopted by ATTACH (a child of the parent's, not a second one).
    with psycopg.connect(PG) as conn:
        indexes = conn.execute(
            "SELECT t.relname, am.amname, p.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am am ON am.oid = c.relam "
            "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
            "LEFT JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE n.nspname = %s AND t.relname LIKE 'predictions%%' AND NOT x.indisunique ORDER BY 1",
            (schema,),
        ).fetchall()
    assert indexes == [
        ("predictions", "brin", None),
        ("predictions_20111130", "brin", "predictions_model"),
        ("predictions_20111201", "brin", "predictions_model"),
    ]


def test_an_attempt_whose_staging_table_was_swept_fails_saying_so(schema):
    db = PredictionsDB(PG, schema)
    migrate(db)
    late, winner = (StagedBatch(b, "propensity", "1", DAY, DAY, "r") for b in ("0000aaaa", "0000bbbb"))
    open_batch(db, late)
    open_batch(db, winner)
    stage_rows(db, winner, 0, pd.DataFrame({"customer_id": ["a"], "score": [0.5]}))
    assert publish_day(db, winner, 1) == 1  # the winner's publish sweeps the day's other staging tables
    with pytest.raises(PredictionsDBError, match="staging table .* is gone: another attempt at .* swept it"):
        stage_rows(db, late, 0, pd.DataFrame({"customer_id": ["b"], "score": [0.25]}))
    assert read_day(db, DAY)["customer_id"].tolist() == ["a"]


def test_a_swap_waits_for_a_long_reader_only_so_long_and_keeps_the_day(schema, monkeypatch):
    import propensity.batch.predictions_db as pdb

    monkeypatch.setattr(pdb, "SWAP_LOCK_TIMEOUT_S", 1)
    db = PredictionsDB(PG, schema)
    migrate(db)
    first, second = (
        StagedBatch(b, "propensity", v, DAY, DAY, "r") for b, v in (("000000c1", "1"), ("000000c2", "2"))
    )
    for batch in (first, second):  # one after the other: a publish sweeps the day's other staging tables
        open_batch(db, batch)
        stage_rows(db, batch, 0, pd.DataFrame({"customer_id": ["a", "b"], "score": [0.5, 0.25]}))
        if batch is first:
            publish_day(db, first, 2)
    with psycopg.connect(PG) as reader:  # a long query holding the table open
        reader.execute(f"SELECT count(*) FROM {schema}.predictions").fetchone()
        with pytest.raises(
            PredictionsDBError,
            match=r"waited 1 s for readers .* \(lock timeout\): the day's previous rows are intact",
        ):
            publish_day(db, second, 2)
    assert reader_view(schema) == (2, {"1"})  # the day as the first publish left it
    publish_day(db, second, 2)  # the retry, once the reader is gone
    assert reader_view(schema) == (2, {"2"})


def test_a_snapshot_on_s3_is_read_by_the_tasks_and_scored_bit_exact(
    spark, s3_server, s3_bucket, make_settings, tmp_path, schema
):
    # The tasks read their slices from S3 themselves, with their own environment's credentials,
    # given here as executors get them (spark.executorEnv): the Store never carries keys.
    keys = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    settings = make_settings(
        zone_root=f"s3://{s3_bucket}/zones",
        s3_endpoint_url=s3_server,
        serving={"repository": str(tmp_path / "models")},
        batch={"db_url": PG, "db_schema": schema, "partitions": 3},
    )
    snapshot = synthetic_snapshot(N, DAY)
    write_partition(zone_store(settings), *SNAPSHOTS, DAY, snapshot)
    champion = train_champion(seed=0)
    deploy_model(settings, champion, 1, "champion")

    env = spark.sparkContext.environment
    env.update(keys)
    try:
        result = score_day(settings, DAY, run_id="s3", spark=spark)
    finally:
        for k in keys:
            env.pop(k, None)

    assert result["tasks"] == 3 and [s["length"] for s in result["slices"]] == [666, 667, 667]
    rows = read_day(db_from_settings(settings), DAY)
    frame = snapshot.to_pandas()
    want = dict(
        zip(
            frame["customer_id"],
            champion.inplace_predict(matrix(frame, MODEL_FEATURES)).astype(np.float64),
            strict=True,
        )
    )
    assert len(rows) == N and rows["score"].tolist() == [want[c] for c in rows["customer_id"]]


def test_a_snapshot_rewritten_while_it_is_scored_is_refused_and_the_day_kept(env, schema, spark, monkeypatch):
    settings, _, _ = env
    score_day(settings, DAY, run_id="first", spark=spark)
    db = db_from_settings(settings)
    before = read_day(db, DAY)
    planned = batch_module.snapshot_source

    def plan_then_rewrite(*args, **kwargs):  # a features backfill lands after the driver planned
        source = planned(*args, **kwargs)
        rewritten = synthetic_snapshot(N + 5, DAY, seed=9)
        write_partition(zone_store(settings), *SNAPSHOTS, DAY, rewritten)
        return source

    monkeypatch.setattr(batch_module, "snapshot_source", plan_then_rewrite)
    with pytest.raises(BatchInputError, match="changed while it was being scored"):
        score_day(settings, DAY, run_id="second", spark=spark)
    after = read_day(db, DAY)
    assert after.equals(before) and set(after["run_id"]) == {"first"}
