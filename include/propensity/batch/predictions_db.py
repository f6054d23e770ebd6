"""The predictions database: versioned schema migrations, staged writes and an atomic day swap.

(Over 500 lines on purpose: staging, the count check and the day swap of both databases are one
transaction protocol, and its invariants are easier to check when they read in one place.)

One table downstream teams query, ``predictions(customer_id, score, model_name, model_version,
feature_date, scored_for_date, run_id)``, primary key ``(scored_for_date, customer_id)``. SQLite
in the ``local`` profile, Postgres in ``prod``; the URL (``batch.db_url``) picks the driver:
``sqlite:///path`` or ``postgresql://user@host:port/db``. A Postgres password never sits in the
URL of a committed file: libpq reads ``PGPASSWORD`` (or ``~/.pgpass``), or the whole URL comes
from ``PROPENSITY_BATCH__DB_URL``.

How a day is written (see :mod:`propensity.batch.scoring`): one scoring attempt is a :class:`StagedBatch`
(its id and the values every row of it carries: model, feature date, day, run id).

* SQLite: every Spark partition stages its rows in ``predictions_staging`` under the batch id,
  in a transaction of its own that first removes what an earlier attempt of the same partition
  staged; :func:`publish_day` then, in ONE transaction, checks the staged count, deletes the
  day's rows and moves the staged rows in.
* Postgres: ``predictions`` is partitioned by ``scored_for_date`` (one partition per day).
  :func:`open_batch` creates the batch's own table, shaped like a partition, whose per-batch
  constants are column defaults: each Spark partition COPYs only ``customer_id, score`` into it
  (a retried partition first removes what its earlier attempt committed, found through the
  ``predictions_stage_parts`` ledger). :func:`publish_day` then, in ONE transaction, checks the
  count, builds the indexes, drops the day's old partition and attaches the batch's table in its
  place: no row is copied a second time, which on 1 M rows is the difference between seconds of
  index-maintaining INSERT and a sorted index build.

Either way readers see the old day until the commit and the new day after it, never a gap or a
mix (on Postgres a reader of ``predictions`` waits for the few milliseconds between the old
partition's drop and the commit); any failure rolls the whole swap back.

The schema is created by :func:`migrate`, which applies the numbered steps of
:data:`propensity.batch.migrations.MIGRATIONS` not yet recorded in ``schema_migrations``
(idempotent; concurrent callers serialize on a lock).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa

from propensity.batch.migrations import COLUMNS, MIGRATIONS, STAGE_PARTS, STAGING, TABLE

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
STAGING_COLUMNS = (*COLUMNS, "batch_id", "part")
SCORED = ("customer_id", "score")  # what a partition stages; the rest are the batch's constants
STAGE_PREFIX = f"{TABLE}_stage_"  # Postgres: one staging table per batch
SWAP_LOCK_TIMEOUT_S = 30  # the longest a day's swap waits for readers of the table
# Serializes migrations (and publishes of one day) across processes on Postgres.
_MIGRATION_LOCK = 0x70726564  # "pred"


class PredictionsDBError(RuntimeError):
    """A write to the predictions database that did not happen; the day's previous rows stand."""


class PredictionsDBUnavailable(PredictionsDBError):
    """The predictions database cannot be reached (down, wrong host/port, refused login)."""


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class PredictionsDB:
    """Where the predictions live: a URL plus, on Postgres, the schema holding the tables."""

    url: str
    schema: str | None = None
    connect_timeout_s: int = 10

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "postgres"):
            raise ValueError(
                f"unsupported predictions database URL {self.safe_url!r}: "
                "use sqlite:///path or postgresql://user@host:port/db"
            )
        if self.schema is not None and not _IDENTIFIER.match(self.schema):
            raise ValueError(f"invalid Postgres schema name {self.schema!r} (lower-case identifier)")
        if self.kind == "postgres" and urlsplit(self.url).password:
            log.warning("the predictions DB URL carries a password: prefer PGPASSWORD or ~/.pgpass")

    @property
    def kind(self) -> str:
        scheme = self.url.split("://", 1)[0]
        if scheme == "sqlite":
            return "sqlite"
        if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            return "postgres"
        return scheme

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        return self.url.replace(f":{parts.password}@", ":***@", 1)

    @property
    def prefix(self) -> str:
        return f"{self.schema}." if self.kind == "postgres" and self.schema else ""

    def table(self, name: str) -> str:
        return self.prefix + name

    @property
    def param(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A DB-API connection in manual-transaction mode; unreachable -> :class:`PredictionsDBUnavailable`."""
        if self.kind == "sqlite":
            path = self.url[len("sqlite:///") :]
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, taking the write lock at
                # the start so concurrent writers queue (timeout) instead of failing mid-way.
                conn = sqlite3.connect(path, timeout=60, isolation_level=None)
            except (sqlite3.Error, OSError) as exc:
                raise PredictionsDBUnavailable(f"cannot open the predictions DB {path}: {exc}") from exc
        else:
            import psycopg

            url = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
            try:
                # autocommit: every transaction is an explicit conn.transaction() block, nothing implicit.
                conn = psycopg.connect(
                    url,
                    connect_timeout=self.connect_timeout_s,
                    application_name="propensity",
                    autocommit=True,
                )
            except psycopg.OperationalError as exc:
                raise PredictionsDBUnavailable(
                    f"predictions database {self.safe_url} is unreachable: {' '.join(str(exc).split())} "
                    "Check that Postgres is up and the URL/credentials are right; the task can be retried."
                ) from exc
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction (commit on success, roll back on any error); yields a cursor."""
        with self.connect() as conn:
            if self.kind == "sqlite":
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            else:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur


def db_from_settings(settings: Any) -> PredictionsDB:
    b = settings.batch
    return PredictionsDB(b.db_url, b.db_schema, b.connect_timeout_s)


# -- migrations ------------------------------------------------------------------------------
def migrate(db: PredictionsDB) -> int:
    """Apply the migrations not yet applied; returns the schema version now in place."""
    with db.transaction() as cur:
        if db.kind == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if db.schema:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {db.schema}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {db.table(MIGRATIONS_TABLE)} "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        cur.execute(f"SELECT version FROM {db.table(MIGRATIONS_TABLE)}")
        applied = {int(r[0]) for r in cur.fetchall()}
        for m in MIGRATIONS:
            if m.version in applied:
                continue
            for statement in m.sqlite if db.kind == "sqlite" else m.postgres:
                cur.execute(statement.replace("{schema}", db.prefix))
            cur.execute(
                f"INSERT INTO {db.table(MIGRATIONS_TABLE)} (version, description, applied_at) "
                f"VALUES ({db.param}, {db.param}, {db.param})",
                # When the step ran is metadata about the database, not a data timestamp.
                (m.version, m.description, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
            )
            log.info("predictions DB %s: applied migration %d (%s)", db.safe_url, m.version, m.description)
    return max(m.version for m in MIGRATIONS)


def schema_version(db: PredictionsDB) -> int:
    """The highest migration applied (0 on an empty database)."""
    with db.transaction() as cur:
        try:
            cur.execute(f"SELECT max(version) FROM {db.table(MIGRATIONS_TABLE)}")
        except Exception:
            return 0
        return int(cur.fetchone()[0] or 0)


# -- one scoring attempt ---------------------------------------------------------------------
_BATCH_ID = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass(frozen=True)
class StagedBatch:
    """One attempt at writing a day: its id and the values every one of its rows carries."""

    batch_id: str  # lower-case hex (a uuid4 hex): part of a table name on Postgres
    model_name: str
    model_version: str
    feature_date: dt.date
    scored_for_date: dt.date
    run_id: str

    def __post_init__(self) -> None:
        if not _BATCH_ID.match(self.batch_id):
            raise ValueError(f"batch id {self.batch_id!r} is not 8-32 lower-case hex digits")

    def constants(self) -> dict[str, str]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "feature_date": self.feature_date.isoformat(),
            "scored_for_date": self.scored_for_date.isoformat(),
            "run_id": self.run_id,
        }


def _day_table(day: dt.date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


def _stage_table(batch: StagedBatch) -> str:
    # The day in the name lets a publish find the leftovers of the day's failed attempts.
    return f"{STAGE_PREFIX}{batch.scored_for_date:%Y%m%d}_{batch.batch_id}"


def open_batch(db: PredictionsDB, batch: StagedBatch) -> None:
    """Make room for the batch's rows (Postgres: its table; SQLite stages in the shared table)."""
    if db.kind != "postgres":
        return
    from psycopg import sql

    consts = batch.constants()
    default = {k: sql.Literal(v) for k, v in consts.items()}
    stage = db.table(_stage_table(batch))
    # Shaped like a partition of ``predictions`` (same columns and named CHECK) plus ``part``; the
    # day CHECK lets ATTACH skip its validation scan. Logged: these rows become the published day.
    ddl = sql.SQL(
        f"""CREATE TABLE {stage} (
            customer_id TEXT NOT NULL,
            score DOUBLE PRECISION NOT NULL CONSTRAINT {TABLE}_score_check CHECK (score >= 0 AND score <= 1),
            model_name TEXT NOT NULL DEFAULT {{model_name}},
            model_version TEXT NOT NULL DEFAULT {{model_version}},
            feature_date DATE NOT NULL DEFAULT {{feature_date}},
            scored_for_date DATE NOT NULL DEFAULT {{scored_for_date}}
                CONSTRAINT {TABLE}_day_check CHECK (scored_for_date = {{scored_for_date}}),
            run_id TEXT NOT NULL DEFAULT {{run_id}},
            part INTEGER NOT NULL
        )"""
    ).format(**default)
    with db.transaction() as cur:
        cur.execute(ddl)


# -- staging (one call per Spark partition) ---------------------------------------------------
Scored = pd.DataFrame | pa.Table


def stage_rows(db: PredictionsDB, batch: StagedBatch, part: int, rows: Scored | Iterable[Scored]) -> int:
    """Replace what ``(batch, part)`` staged with ``rows`` (``customer_id, score``: one frame or
    Arrow table, or a stream of them, written as they come); returns the count.

    Its own transaction: an earlier committed attempt of the same partition is removed first, and
    on Postgres an advisory lock on the pair serializes two attempts running at once (speculation).
    """
    tables = [rows] if isinstance(rows, pd.DataFrame | pa.Table) else rows
    if db.kind == "postgres":
        return _copy_rows(db, batch, int(part), tables)
    staging, n = db.table(STAGING), 0
    cols = ", ".join(STAGING_COLUMNS)
    insert = f"INSERT INTO {staging} ({cols}) VALUES ({', '.join('?' * len(STAGING_COLUMNS))})"
    with db.transaction() as cur:
        cur.execute(f"DELETE FROM {staging} WHERE batch_id = ? AND part = ?", (batch.batch_id, int(part)))
        for table in tables:
            frame = _scored(table).to_pandas() if isinstance(table, pa.Table) else _scored(table)
            staged = frame.assign(**batch.constants(), batch_id=batch.batch_id, part=int(part))
            cur.executemany(insert, staged.loc[:, list(STAGING_COLUMNS)].itertuples(index=False, name=None))
            n += len(frame)
    return n


def _copy_rows(db: PredictionsDB, batch: StagedBatch, part: int, tables: Iterable[Scored]) -> int:
    from psycopg.errors import UndefinedTable

    try:
        return _copy_rows_once(db, batch, part, tables)
    except UndefinedTable as exc:
        raise PredictionsDBError(
            f"staging table {_stage_table(batch)} of batch {batch.batch_id} is gone: another attempt at "
            f"{batch.scored_for_date} published and swept it; this attempt's rows were not kept"
        ) from exc


def _copy_rows_once(db: PredictionsDB, batch: StagedBatch, part: int, tables: Iterable[Scored]) -> int:
    stage, ledger, n = db.table(_stage_table(batch)), db.table(STAGE_PARTS), 0
    with db.transaction() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{batch.batch_id}:{part}",))
        cur.execute(f"DELETE FROM {ledger} WHERE batch_id = %s AND part = %s", (batch.batch_id, part))
        if cur.rowcount:  # a retry of a partition that committed: only then scan for its rows
            cur.execute(f"DELETE FROM {stage} WHERE part = %s", (part,))
        with cur.copy(f"COPY {stage} (customer_id, score, part) FROM STDIN (FORMAT csv)") as copy:
            for table in tables:
                copy.write(_csv_bytes(_scored(table), part))
                n += len(table)
        cur.execute(
            f"INSERT INTO {ledger} (batch_id, part, rows) VALUES (%s, %s, %s)", (batch.batch_id, part, n)
        )
    return n


def _scored(rows: Scored) -> Scored:
    missing = [
        c for c in SCORED if c not in (rows.column_names if isinstance(rows, pa.Table) else rows.columns)
    ]
    if missing:
        raise ValueError(f"rows to stage lack column(s) {missing}")
    return rows.select(list(SCORED)) if isinstance(rows, pa.Table) else rows.loc[:, list(SCORED)]


def _csv_bytes(rows: Scored, part: int) -> bytes:
    """CSV for COPY: Arrow writes floats in their shortest round-trip form, so scores land bit-exact."""
    import pyarrow.csv as pacsv

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
    table = table.append_column("part", pa.array(np.full(table.num_rows, part, dtype=np.int32)))
    buf = io.BytesIO()
    pacsv.write_csv(
        table, buf, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return buf.getvalue()


def discard_batch(db: PredictionsDB, batch: StagedBatch) -> None:
    """Drop what a failed attempt staged (best effort: the next publish of the day sweeps leftovers)."""
    try:
        with db.transaction() as cur:
            if db.kind == "postgres":
                cur.execute(f"DROP TABLE IF EXISTS {db.table(_stage_table(batch))}")
                cur.execute(f"DELETE FROM {db.table(STAGE_PARTS)} WHERE batch_id = %s", (batch.batch_id,))
            else:
                cur.execute(f"DELETE FROM {db.table(STAGING)} WHERE batch_id = ?", (batch.batch_id,))
    except Exception as exc:
        log.warning("could not discard staged batch %s: %s", batch.batch_id, exc)


# -- the swap --------------------------------------------------------------------------------
def publish_day(
    db: PredictionsDB,
    batch: StagedBatch,
    expected_rows: int,
    *,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the day's rows with the batch's staged rows, in one transaction; returns the count.

    ``before_commit`` runs inside the transaction after every row is in place (a seam for
    fault-injection tests and for callers that must check something before the swap is visible).
    """
    day = batch.scored_for_date.isoformat()
    try:
        with db.transaction() as cur:
            if db.kind == "postgres":
                staged, replaced = _swap_partition(db, cur, batch, expected_rows)
            else:
                staged, replaced = _swap_rows(db, cur, batch, expected_rows)
            if before_commit is not None:
                before_commit()
    except PredictionsDBError:
        raise
    except Exception as exc:
        if _is_lock_timeout(exc):
            raise PredictionsDBError(
                f"publishing {day} waited {SWAP_LOCK_TIMEOUT_S} s for readers of {db.table(TABLE)} and gave up "
                f"(lock timeout): the day's previous rows are intact, retry the task"
            ) from exc
        if _is_connection_error(exc):
            raise PredictionsDBUnavailable(
                f"predictions database {db.safe_url} went away while publishing {day}: {exc}; "
                "the day's previous rows are intact, retry the task"
            ) from exc
        raise PredictionsDBError(
            f"publishing {day} failed, the day's previous rows are intact: {type(exc).__name__}: {exc}"
        ) from exc
    if db.kind == "postgres":
        _sweep_stage_tables(db, batch.scored_for_date)
    log.info("predictions for %s: %d rows published (replaced %d)", day, staged, replaced)
    return int(staged)


def _short_batch(batch: StagedBatch, staged: int, expected: int) -> PredictionsDBError:
    return PredictionsDBError(
        f"batch {batch.batch_id} staged {staged} rows for {batch.scored_for_date}, expected {expected}: "
        "another attempt for the same day may have swept it; nothing was replaced"
    )


def _swap_rows(db: PredictionsDB, cur: Any, batch: StagedBatch, expected: int) -> tuple[int, int]:
    day, cols = batch.scored_for_date.isoformat(), ", ".join(COLUMNS)
    table, staging = db.table(TABLE), db.table(STAGING)
    cur.execute(
        f"SELECT count(*), count(DISTINCT scored_for_date) FROM {staging} WHERE batch_id = ?",
        (batch.batch_id,),
    )
    staged, days = cur.fetchone()
    if staged != expected:
        raise _short_batch(batch, staged, expected)
    if staged and days != 1:
        raise PredictionsDBError(f"batch {batch.batch_id} mixes {days} scored_for_date values")
    cur.execute(f"DELETE FROM {table} WHERE scored_for_date = ?", (day,))
    replaced = cur.rowcount
    cur.execute(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} WHERE batch_id = ?", (batch.batch_id,)
    )
    # Also sweeps what earlier failed attempts of this day left behind.
    cur.execute(f"DELETE FROM {staging} WHERE scored_for_date = ?", (day,))
    return staged, replaced


def _swap_partition(db: PredictionsDB, cur: Any, batch: StagedBatch, expected: int) -> tuple[int, int]:
    from psycopg import sql

    day = batch.scored_for_date
    name, part_name = _stage_table(batch), _day_table(day)
    stage, old = db.table(name), db.table(part_name)
    # Two publishes of one day queue here rather than interleave their swaps.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{TABLE}:{day.isoformat()}",))
    # Dropping the old partition locks the whole table until commit, and readers queue behind a
    # waiting swap: a long query on any day must not stall every reader. Past the bound the
    # publish fails (the day's rows intact) and the task's retry tries again.
    cur.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_S}s'")
    cur.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", (stage, old))
    have_stage, have_old = cur.fetchone()
    if not have_stage:
        raise _short_batch(batch, 0, expected)
    cur.execute(f"SELECT count(*) FROM {stage}")
    staged = int(cur.fetchone()[0])
    if staged != expected:
        raise _short_batch(batch, staged, expected)
    # Off the lock readers wait on: the constants stop being defaults, ``part`` goes (a catalog
    # change, no rewrite), the key is indexed by sorting once (a duplicate fails here).
    defaults = ", ".join(f"ALTER COLUMN {c} DROP DEFAULT" for c in COLUMNS[2:])
    cur.execute(f"ALTER TABLE {stage} DROP COLUMN part, {defaults}")
    cur.execute(f"ALTER TABLE {stage} ADD CONSTRAINT {name}_pkey PRIMARY KEY (scored_for_date, customer_id)")
    # As the parent's (migration 4), so ATTACH adopts it instead of building another.
    cur.execute(f"CREATE INDEX {name}_model ON {stage} USING brin (model_version, scored_for_date)")
    replaced = 0
    if have_old:
        cur.execute(f"SELECT count(*) FROM {old}")
        replaced = int(cur.fetchone()[0])
        cur.execute(f"DROP TABLE {old}")  # from here until commit, readers of the table wait
    cur.execute(
        sql.SQL(f"ALTER TABLE {db.table(TABLE)} ATTACH PARTITION {stage} FOR VALUES IN ({{}})").format(
            sql.Literal(day.isoformat())
        )
    )
    cur.execute(f"ALTER TABLE {stage} RENAME TO {part_name}")
    cur.execute(f"ALTER INDEX {db.prefix}{name}_pkey RENAME TO {part_name}_pkey")
    cur.execute(f"ALTER INDEX {db.prefix}{name}_model RENAME TO {part_name}_model")
    cur.execute(f"DELETE FROM {db.table(STAGE_PARTS)} WHERE batch_id = %s", (batch.batch_id,))
    return staged, replaced


def _sweep_stage_tables(db: PredictionsDB, day: dt.date) -> None:
    """Drop what failed attempts at ``day`` left (best effort, after the swap: one still
    running keeps its table, and the lock wait is bounded)."""
    try:
        with db.transaction() as cur:
            cur.execute("SET LOCAL lock_timeout = '2s'")
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = COALESCE(%s, current_schema()) "
                "AND tablename LIKE %s",
                (db.schema, f"{STAGE_PREFIX}{day:%Y%m%d}_%"),
            )
            for (name,) in cur.fetchall():
                cur.execute(f"DROP TABLE {db.table(name)}")
                cur.execute(
                    f"DELETE FROM {db.table(STAGE_PARTS)} WHERE batch_id = %s", (name.rsplit("_", 1)[-1],)
                )
    except Exception as exc:
        log.warning("could not sweep the staging tables of %s: %s", day, exc)


def _is_lock_timeout(exc: BaseException) -> bool:
    """Postgres gave up waiting for a lock (``lock_timeout``): an OperationalError, but no outage."""
    try:
        from psycopg.errors import LockNotAvailable
    except ImportError:  # pragma: no cover - psycopg is a pinned dependency
        return False
    return isinstance(exc, LockNotAvailable)


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a pinned dependency
        return False
    return isinstance(exc, psycopg.OperationalError)


# -- reads -----------------------------------------------------------------------------------
def day_summary(db: PredictionsDB, scored_for_date: dt.date, top_n: int = 10) -> dict[str, Any]:
    """Rows, model versions and the top-scored customers of one day, as readers see them."""
    p, day, table = db.param, scored_for_date.isoformat(), db.table(TABLE)
    with db.transaction() as cur:
        cur.execute(
            f"SELECT model_version, count(*) FROM {table} WHERE scored_for_date = {p} GROUP BY model_version",
            (day,),
        )
        versions = {str(v): int(n) for v, n in cur.fetchall()}
        top = _top(db, cur, scored_for_date, top_n)
    return {"rows": sum(versions.values()), "model_versions": versions, "top": top}


_MAX_CANDIDATES = 900  # ids bound into one query (SQLite allows 999 parameters)


def top_scores(
    db: PredictionsDB,
    scored_for_date: dt.date,
    top_n: int = 10,
    *,
    among: list[str] | None = None,
    written_by: StagedBatch | None = None,
) -> list[tuple[str, float]]:
    """The day's ``top_n`` customers, best first (ties by customer id), as readers see them.

    ``among``: customer ids known to hold every row of the top that ``written_by`` published
    (each writer's best rows, ties included); the table then answers by key instead of scanning
    the day. When the day no longer holds that batch's rows (another run published since) or
    there are too many ids (a day of ties), the day is scanned.
    """
    with db.transaction() as cur:
        if among is not None and written_by is not None and len(among) <= _MAX_CANDIDATES:
            top = _top(db, cur, scored_for_date, top_n, among, written_by)
            if len(top) == min(top_n, len(set(among))):
                return top
        return _top(db, cur, scored_for_date, top_n)


def _top(
    db: PredictionsDB,
    cur: Any,
    scored_for_date: dt.date,
    top_n: int,
    among: list[str] | None = None,
    written_by: StagedBatch | None = None,
) -> list[tuple[str, float]]:
    p = db.param
    where, params = f"scored_for_date = {p}", [scored_for_date.isoformat()]
    if among is not None and written_by is not None:
        ids = sorted(set(among))
        if not ids:
            return []
        # Only that batch's rows: under another run's scores these ids need not hold the top.
        where += f" AND run_id = {p} AND model_version = {p} AND customer_id IN ({', '.join([p] * len(ids))})"
        params += [written_by.run_id, written_by.model_version, *ids]
    # The database orders (its collation breaks ties), so both forms give the same answer.
    cur.execute(
        f"SELECT customer_id, score FROM {db.table(TABLE)} WHERE {where} "
        f"ORDER BY score DESC, customer_id LIMIT {int(top_n)}",
        params,
    )
    return [(str(c), float(s)) for c, s in cur.fetchall()]


def read_day(db: PredictionsDB, scored_for_date: dt.date) -> pd.DataFrame:
    """Every row of one day, ordered by customer (dates as ISO strings on both backends)."""
    with db.transaction() as cur:
        cur.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {db.table(TABLE)} WHERE scored_for_date = {db.param} "
            "ORDER BY customer_id",
            (scored_for_date.isoformat(),),
        )
        frame = pd.DataFrame(cur.fetchall(), columns=list(COLUMNS))
    for col in ("feature_date", "scored_for_date"):
        frame[col] = frame[col].astype(str)
    return frame
