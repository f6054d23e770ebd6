"""The predictions table on SQLite: migrations, idempotent staging, the one-transaction day swap."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd
import pytest

from propensity.batch.predictions_db import (
    MIGRATIONS,
    STAGING,
    PredictionsDB,
    PredictionsDBError,
    PredictionsDBUnavailable,
    StagedBatch,
    day_summary,
    migrate,
    publish_day,
    read_day,
    schema_version,
    stage_rows,
)

DAY = dt.date(2011, 12, 1)


def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": [f"c{i:04d}" for i in range(n)], "score": [(i % 97) / 97 for i in range(n)]}
    )


def batch(number: int, version: str, run_id: str = "r1", day: dt.date = DAY) -> StagedBatch:
    return StagedBatch(f"{number:08x}", "propensity", version, day, day, run_id)


def write_day(db: PredictionsDB, frame: pd.DataFrame, staged: StagedBatch, **kwargs) -> int:
    half = len(frame) // 2
    stage_rows(db, staged, 0, frame.iloc[:half])
    stage_rows(db, staged, 1, frame.iloc[half:])
    return publish_day(db, staged, len(frame), **kwargs)


@pytest.fixture
def db(tmp_path) -> PredictionsDB:
    db = PredictionsDB(f"sqlite:///{tmp_path}/predictions.db")
    migrate(db)
    return db


def test_migrations_are_versioned_and_idempotent(tmp_path):
    db = PredictionsDB(f"sqlite:///{tmp_path}/fresh.db")
    assert schema_version(db) == 0
    assert migrate(db) == migrate(db) == MIGRATIONS[-1].version == 4
    with sqlite3.connect(f"{tmp_path}/fresh.db") as conn:
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert applied == [(1,), (2,), (3,), (4,)]  # 3 and 4 are Postgres-only: nothing to do here
    assert {"predictions_model", "predictions_staging_batch"} <= indexes


def test_a_database_at_an_older_version_gets_only_the_missing_steps(tmp_path):
    path = f"{tmp_path}/old.db"
    db = PredictionsDB(f"sqlite:///{path}")
    migrate(db)
    with sqlite3.connect(path) as conn:  # roll the file back to version 1
        conn.execute("DROP INDEX predictions_model")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 2")
    assert schema_version(db) == 1
    migrate(db)
    assert schema_version(db) == 4


def test_a_retried_partition_replaces_what_it_staged(db, tmp_path):
    frame, b1 = rows(10), batch(1, "1")
    stage_rows(db, b1, 0, frame)
    stage_rows(db, b1, 0, frame)  # the same Spark task, retried
    stage_rows(db, b1, 1, rows(0))
    assert publish_day(db, b1, 10) == 10
    assert len(read_day(db, DAY)) == 10


def test_publish_swaps_the_day_and_sweeps_the_staging_table(db, tmp_path):
    write_day(db, rows(100), batch(1, "1"))
    write_day(db, rows(80), batch(2, "2", run_id="r2"))
    day = read_day(db, DAY)
    assert len(day) == 80 and set(day["model_version"]) == {"2"} and set(day["run_id"]) == {"r2"}
    summary = day_summary(db, DAY, top_n=3)
    assert summary["rows"] == 80 and summary["model_versions"] == {"2": 80}
    assert summary["top"] == [("c0079", 79 / 97), ("c0078", 78 / 97), ("c0077", 77 / 97)]
    with sqlite3.connect(f"{tmp_path}/predictions.db") as conn:
        assert conn.execute(f"SELECT count(*) FROM {STAGING}").fetchone() == (0,)


def test_a_failure_half_way_through_the_swap_leaves_the_day_intact(db):
    write_day(db, rows(100), batch(1, "1"))
    broken = rows(100)
    broken.loc[60, "score"] = 1.5  # the database's CHECK rejects it after 60 rows went in
    with pytest.raises(
        PredictionsDBError, match="publishing 2011-12-01 failed, the day's previous rows are intact"
    ):
        write_day(db, broken, batch(2, "2", run_id="r2"))
    day = read_day(db, DAY)
    assert len(day) == 100 and set(day["model_version"]) == {"1"}


def test_an_exception_after_every_row_is_written_rolls_back(db):
    write_day(db, rows(100), batch(1, "1"))

    def crash() -> None:
        raise RuntimeError("worker killed")

    with pytest.raises(PredictionsDBError, match="worker killed"):
        write_day(db, rows(100), batch(2, "2"), before_commit=crash)
    assert set(read_day(db, DAY)["model_version"]) == {"1"}
    write_day(db, rows(100), batch(3, "2"))  # the retry
    assert set(read_day(db, DAY)["model_version"]) == {"2"}


def test_a_short_batch_is_refused_before_anything_is_replaced(db):
    write_day(db, rows(100), batch(1, "1"))
    b2 = batch(2, "2")
    stage_rows(db, b2, 0, rows(40))
    with pytest.raises(PredictionsDBError, match="staged 40 rows for 2011-12-01, expected 100"):
        publish_day(db, b2, 100)
    assert len(read_day(db, DAY)) == 100


def test_an_unopenable_database_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PredictionsDBUnavailable, match="cannot open the predictions DB"):
        migrate(PredictionsDB(f"sqlite:///{tmp_path}/file/sub/p.db"))


def test_urls_are_checked_and_passwords_kept_out_of_messages():
    with pytest.raises(ValueError, match="unsupported predictions database URL 'mysql://u@h/db'"):
        PredictionsDB("mysql://u@h/db")
    assert PredictionsDB("postgresql://u:s3cret@h:5432/db").safe_url == "postgresql://u:***@h:5432/db"
    with pytest.raises(ValueError, match="invalid Postgres schema name"):
        PredictionsDB("postgresql://u@h/db", schema="x; drop table y")


def test_a_batch_id_must_be_fit_for_a_table_name():
    with pytest.raises(ValueError, match="8-32 lower-case hex"):
        StagedBatch("x; drop table y", "propensity", "1", DAY, DAY, "r1")
