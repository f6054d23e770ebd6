"""The predictions database: versioned schema migrations, staged writes and an atomic day swap.

One table downstream teams query, ``predictions(customer_id, score, model_name, model_version,
feature_date, scored_for_date, run_id)``, primary key ``(scored_for_date, customer_id)``. SQLite
in the ``local`` profile, Postgres in ``prod``; the URL (``batch.db_url``) picks the driver:
``sqlite:///path`` or ``postgresql://user@host:port/db``. A Postgres password never sits in the
URL of a committed file: libpq reads ``PGPASSWORD`` (or ``~/.pgpass``), or the whole URL comes
from ``PROPENSITY_BATCH__DB_URL``.

How a day is written (see :mod:`propensity.batch`):

1. every Spark partition stages its rows in ``predictions_staging`` under the run's ``batch_id``,
   through the Python driver (``COPY`` on Postgres), in a transaction of its own that first
   removes what an earlier attempt of the same partition staged: a retried task never doubles rows;
2. :func:`publish_day` then, in ONE transaction, checks the staged count, deletes the day's rows
   and moves the staged rows in. Readers see the old day until the commit and the new day
   after it, never a gap or a mix; any failure rolls the whole swap back.

The schema is created by :func:`migrate`, which applies the numbered steps of :data:`MIGRATIONS`
not yet recorded in ``schema_migrations`` (idempotent; concurrent callers serialize on a lock).
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

import pandas as pd

log = logging.getLogger(__name__)

TABLE, STAGING, MIGRATIONS_TABLE = "predictions", "predictions_staging", "schema_migrations"
COLUMNS = ("customer_id", "score", "model_name", "model_version", "feature_date", "scored_for_date", "run_id")
STAGING_COLUMNS = (*COLUMNS, "batch_id", "part")
# Serializes migrations (and publishes of one day) across processes on Postgres.
_MIGRATION_LOCK = 0x70726564  # "pred"


class PredictionsDBError(RuntimeError):
    """A write to the predictions database that did not happen; the day's previous rows stand."""


class PredictionsDBUnavailable(PredictionsDBError):
    """The predictions database cannot be reached (down, wrong host/port, refused login)."""


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
                model_name TEXT NOT NULL,
                model_version TEXT NOT NULL,
                feature_date DATE NOT NULL,
                scored_for_date DATE NOT NULL,
                run_id TEXT NOT NULL,
                PRIMARY KEY (scored_for_date, customer_id)
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
)

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


# -- staging (one call per Spark partition) ---------------------------------------------------
def stage_rows(
    db: PredictionsDB, batch_id: str, part: int, rows: pd.DataFrame | Iterable[pd.DataFrame]
) -> int:
    """Replace what ``(batch_id, part)`` staged with ``rows`` (columns :data:`COLUMNS`; one frame or a
    stream of them, written as they come); returns the count.

    Its own transaction: an earlier attempt of the same partition is removed first, and on
    Postgres an advisory lock on the pair serializes two attempts running at once (speculation).
    """
    frames = [rows] if isinstance(rows, pd.DataFrame) else rows
    staging, p, n = db.table(STAGING), db.param, 0
    cols = ", ".join(STAGING_COLUMNS)
    with db.transaction() as cur:
        if db.kind == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{batch_id}:{part}",))
        cur.execute(f"DELETE FROM {staging} WHERE batch_id = {p} AND part = {p}", (batch_id, int(part)))
        if db.kind == "postgres":
            with cur.copy(f"COPY {staging} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                for frame in frames:
                    copy.write(_csv_bytes(_staged(frame, batch_id, part)))
                    n += len(frame)
        else:
            insert = f"INSERT INTO {staging} ({cols}) VALUES ({', '.join('?' * len(STAGING_COLUMNS))})"
            for frame in frames:
                staged = _staged(frame, batch_id, part).astype({"feature_date": str, "scored_for_date": str})
                cur.executemany(insert, staged.itertuples(index=False, name=None))
                n += len(frame)
    return n


def _staged(frame: pd.DataFrame, batch_id: str, part: int) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rows to stage lack column(s) {missing}")
    return frame.loc[:, list(COLUMNS)].assign(batch_id=batch_id, part=int(part))


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV for COPY: Arrow writes floats in their shortest round-trip form, so scores land bit-exact."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False),
        buf,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    return buf.getvalue()


def discard_batch(db: PredictionsDB, batch_id: str) -> None:
    """Drop what a failed attempt staged (best effort: the next publish of the day sweeps leftovers)."""
    try:
        with db.transaction() as cur:
            cur.execute(f"DELETE FROM {db.table(STAGING)} WHERE batch_id = {db.param}", (batch_id,))
    except Exception as exc:
        log.warning("could not discard staged batch %s: %s", batch_id, exc)


# -- the swap --------------------------------------------------------------------------------
def publish_day(
    db: PredictionsDB,
    scored_for_date: dt.date,
    batch_id: str,
    expected_rows: int,
    *,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the day's rows with the batch's staged rows, in one transaction; returns the count.

    ``before_commit`` runs inside the transaction after every row is in place (a seam for
    fault-injection tests and for callers that must check something before the swap is visible).
    """
    p, day = db.param, scored_for_date.isoformat()
    table, staging = db.table(TABLE), db.table(STAGING)
    cols = ", ".join(COLUMNS)
    try:
        with db.transaction() as cur:
            if db.kind == "postgres":
                # Two publishes of one day queue here rather than interleave their DELETE/INSERT.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{TABLE}:{day}",))
            cur.execute(
                f"SELECT count(*), count(DISTINCT scored_for_date) FROM {staging} WHERE batch_id = {p}",
                (batch_id,),
            )
            staged, days = cur.fetchone()
            if staged != expected_rows:
                raise PredictionsDBError(
                    f"batch {batch_id} staged {staged} rows for {day}, expected {expected_rows}: "
                    "another attempt for the same day may have swept it; nothing was replaced"
                )
            if staged and days != 1:
                raise PredictionsDBError(f"batch {batch_id} mixes {days} scored_for_date values")
            cur.execute(f"DELETE FROM {table} WHERE scored_for_date = {p}", (day,))
            replaced = cur.rowcount
            cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} WHERE batch_id = {p}", (batch_id,)
            )
            # Also sweeps what earlier failed attempts of this day left behind.
            cur.execute(f"DELETE FROM {staging} WHERE scored_for_date = {p}", (day,))
            if before_commit is not None:
                before_commit()
    except PredictionsDBError:
        raise
    except Exception as exc:
        if _is_connection_error(exc):
            raise PredictionsDBUnavailable(
                f"predictions database {db.safe_url} went away while publishing {day}: {exc}; "
                "the day's previous rows are intact, retry the task"
            ) from exc
        raise PredictionsDBError(
            f"publishing {day} failed, the day's previous rows are intact: {type(exc).__name__}: {exc}"
        ) from exc
    log.info("predictions for %s: %d rows published (replaced %d)", day, staged, replaced)
    return int(staged)


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
        cur.execute(
            f"SELECT customer_id, score FROM {table} WHERE scored_for_date = {p} "
            f"ORDER BY score DESC, customer_id LIMIT {int(top_n)}",
            (day,),
        )
        top = [(str(c), float(s)) for c, s in cur.fetchall()]
    return {"rows": sum(versions.values()), "model_versions": versions, "top": top}


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
