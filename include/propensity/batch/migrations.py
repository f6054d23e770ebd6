"""The predictions database's schema, as numbered migrations (append only; applied by
:func:`propensity.batch.predictions_db.migrate`)."""

from __future__ import annotations

from dataclasses import dataclass

TABLE, STAGING = "predictions", "predictions_staging"
COLUMNS = ("customer_id", "score", "model_name", "model_version", "feature_date", "scored_for_date", "run_id")
STAGE_PARTS = f"{TABLE}_stage_parts"  # Postgres: which partition of a batch staged how many rows


# Postgres declares the predictions columns after ``score`` alike in migrations 1 and 3.
_PG_AFTER_SCORE = """model_name TEXT NOT NULL, model_version TEXT NOT NULL, feature_date DATE NOT NULL,
                scored_for_date DATE NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (scored_for_date, customer_id)"""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


# Append only: a step, once released, never changes (databases out there already applied it).
# ``{schema}`` is the Postgres schema prefix ("" or "name."), empty on SQLite.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "predictions table and its staging table",
        sqlite=(
            f"""CREATE TABLE {TABLE} (
                customer_id TEXT NOT NULL,
                score REAL NOT NULL CHECK (score >= 0 AND score <= 1),
                model_name TEXT NOT NULL,
                model_version TEXT NOT NULL,
                feature_date TEXT NOT NULL,
                scored_for_date TEXT NOT NULL,
                run_id TEXT NOT NULL,
                PRIMARY KEY (scored_for_date, customer_id)
            )""",
            f"""CREATE TABLE {STAGING} (
                customer_id TEXT NOT NULL, score REAL, model_name TEXT NOT NULL,
                model_version TEXT NOT NULL, feature_date TEXT NOT NULL, scored_for_date TEXT NOT NULL,
                run_id TEXT NOT NULL, batch_id TEXT NOT NULL, part INTEGER NOT NULL
            )""",
            f"CREATE INDEX {STAGING}_batch ON {STAGING} (batch_id, part)",
        ),
        postgres=(
            f"""CREATE TABLE {{schema}}{TABLE} (
                customer_id TEXT NOT NULL,
                score DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
{_PG_AFTER_SCORE}
            )""",
            # UNLOGGED: staged rows are disposable (a crash loses only an unpublished attempt),
            # and skipping the WAL halves the cost of staging.
            f"""CREATE UNLOGGED TABLE {{schema}}{STAGING} (
                customer_id TEXT NOT NULL, score DOUBLE PRECISION, model_name TEXT NOT NULL,
                model_version TEXT NOT NULL, feature_date DATE NOT NULL, scored_for_date DATE NOT NULL,
                run_id TEXT NOT NULL, batch_id TEXT NOT NULL, part INTEGER NOT NULL
            )""",
            f"CREATE INDEX {STAGING}_batch ON {{schema}}{STAGING} (batch_id, part)",
        ),
    ),
    Migration(
        2,
        "index for 'which rows did model version X score'",
        sqlite=(f"CREATE INDEX {TABLE}_model ON {TABLE} (model_version, scored_for_date)",),
        postgres=(f"CREATE INDEX {TABLE}_model ON {{schema}}{TABLE} (model_version, scored_for_date)",),
    ),
    Migration(
        3,
        "Postgres: predictions partitioned by day, so a day is swapped in whole instead of re-inserted",
        sqlite=(),
        postgres=(
            f"ALTER TABLE {{schema}}{TABLE} RENAME TO {TABLE}_unpartitioned",
            f"ALTER INDEX {{schema}}{TABLE}_pkey RENAME TO {TABLE}_unpartitioned_pkey",
            f"ALTER INDEX {{schema}}{TABLE}_model RENAME TO {TABLE}_unpartitioned_model",
            # Constraint named: a table attached as a partition must carry it under the same name.
            f"""CREATE TABLE {{schema}}{TABLE} (
                customer_id TEXT NOT NULL,
                score DOUBLE PRECISION NOT NULL CONSTRAINT {TABLE}_score_check CHECK (score >= 0 AND score <= 1),
{_PG_AFTER_SCORE}
            ) PARTITION BY LIST (scored_for_date)""",
            f"CREATE INDEX {TABLE}_model ON {{schema}}{TABLE} (model_version, scored_for_date)",
            f"""DO $$
            DECLARE d date;
            BEGIN
                FOR d IN SELECT DISTINCT scored_for_date FROM {{schema}}{TABLE}_unpartitioned LOOP
                    EXECUTE format('CREATE TABLE {{schema}}%I PARTITION OF {{schema}}{TABLE} FOR VALUES IN (%L)',
                                   '{TABLE}_' || to_char(d, 'YYYYMMDD'), d);
                END LOOP;
            END $$""",
            f"INSERT INTO {{schema}}{TABLE} ({', '.join(COLUMNS)}) "
            f"SELECT {', '.join(COLUMNS)} FROM {{schema}}{TABLE}_unpartitioned",
            f"DROP TABLE {{schema}}{TABLE}_unpartitioned",
            f"DROP TABLE {{schema}}{STAGING}",  # batches stage in tables of their own now
            f"""CREATE TABLE {{schema}}{STAGE_PARTS} (
                batch_id TEXT NOT NULL, part INTEGER NOT NULL, rows BIGINT NOT NULL,
                PRIMARY KEY (batch_id, part)
            )""",
        ),
    ),
    Migration(
        4,
        "Postgres: the model-version index is BRIN (a day partition holds one model version)",
        sqlite=(),
        # Every row of a day partition shares model_version and scored_for_date: a B-tree over
        # that one key cost a third of each publish (0.27 s per 1 M rows) to build. A BRIN index
        # answers "which rows did version X score" as well (each partition's block ranges carry
        # its one version, so other days are skipped) and builds in one pass without sorting.
        postgres=(
            f"DROP INDEX {{schema}}{TABLE}_model",
            f"CREATE INDEX {TABLE}_model ON {{schema}}{TABLE} USING brin (model_version, scored_for_date)",
        ),
    ),
)
