"""The model registry: MLflow versions and aliases, with an audit trail and compare-and-set.

MLflow's alias API is last-writer-wins, and it keeps no history of which version was champion
when. Here every alias move goes through one table (``registry_aliases``) with a
compare-and-set UPDATE: two training runs that finish together both expect the same current
champion, and only one UPDATE matches. Every move, refused or not, is appended to
``registry_audit`` (SQLite locally, Postgres in prod), which survives restarts and is listed by
``propensity audit``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from propensity.core.settings import Settings

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"

_meta = sa.MetaData()
aliases_table = sa.Table(
    "registry_aliases",
    _meta,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("alias", sa.String(50), primary_key=True),
    sa.Column("version", sa.String(20), nullable=True),
    sa.Column("updated_at", sa.String(40), nullable=False),
)
audit_table = sa.Table(
    "registry_audit",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column(
        "action", sa.String(40), nullable=False
    ),  # promote | refuse | rollback | challenger | deploy | deploy_failed
    sa.Column("alias", sa.String(50)),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("logical_date", sa.String(20)),
    sa.Column("report", sa.Text),
)


@dataclass(frozen=True)
class Why:
    """What an audit row records about a move (or a non-move): which action, why, for which
    logical date, the report behind it and who asked."""

    action: str  # promote | refuse | rollback | challenger | shadow | deploy | deploy_failed | ...
    reason: str
    logical_date: str
    report: dict[str, Any] | None = None
    actor: str | None = None


class PromotionConflict(RuntimeError):
    """The champion moved since the caller read it: another promotion won the race."""


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        # SQLite: take the write lock at BEGIN, so two concurrent promotions queue instead of
        # both reading the old champion and one failing with "database is locked".
        @sa.event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    _meta.create_all(engine)
    return engine


def _now() -> str:
    # Audit time is when the move happened (metadata), not a data timestamp.
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_actor() -> str:
    return (
        os.environ.get("AIRFLOW_CTX_DAG_ID", "")
        and f"airflow:{os.environ['AIRFLOW_CTX_DAG_ID']}"
        or f"user:{getpass.getuser()}"
    )


@dataclass
class Registry:
    """Alias moves for one registered model: MLflow for serving, the audit DB for truth and history."""

    settings: Settings

    def __post_init__(self) -> None:
        from mlflow import MlflowClient

        from propensity.training.train import configure_mlflow

        configure_mlflow(self.settings)
        self.name = self.settings.training.model_name
        self.client = MlflowClient()
        self.engine = _engine(self.settings.training.audit_db_url)

    # -- reads ---------------------------------------------------------------------------
    def alias_version(self, alias: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(aliases_table.c.version).where(
                    aliases_table.c.model_name == self.name, aliases_table.c.alias == alias
                )
            ).first()
        return row[0] if row else None

    def model_uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    def load_booster(self, version: str):
        import mlflow.xgboost

        return mlflow.xgboost.load_model(self.model_uri(version))

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit_table)
                .where(audit_table.c.model_name == self.name)
                .order_by(audit_table.c.id.desc())
                .limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    # -- writes --------------------------------------------------------------------------
    def register(
        self, model_uri: str, tags: dict[str, Any], *, logical_date: str, actor: str | None = None
    ) -> str:
        """Register a version (idempotent per training date and data hash) and point ``challenger`` at it."""
        existing = self._find_version(tags.get("training_as_of"), tags.get("data_hash"))
        if existing is not None:
            version = existing
            log.info(
                "version %s already registered for %s (data %s): reusing it",
                version,
                tags.get("training_as_of"),
                tags.get("data_hash"),
            )
        else:
            import mlflow

            version = str(mlflow.register_model(model_uri, self.name).version)
        for k, v in tags.items():
            self.client.set_model_version_tag(
                self.name, version, k, v if isinstance(v, str) else json.dumps(v, default=str)
            )
        why = Why("challenger", "registered for evaluation", logical_date, actor=actor)
        self._move(CHALLENGER, version, expected=None, why=why, compare=False)
        return version

    def _find_version(self, training_as_of: str | None, data_hash: str | None) -> str | None:
        if not training_as_of or not data_hash:
            return None
        for mv in self.client.search_model_versions(f"name='{self.name}'"):
            if mv.tags.get("training_as_of") == training_as_of and mv.tags.get("data_hash") == data_hash:
                return str(mv.version)
        return None

    def promote(
        self,
        version: str,
        *,
        expected_champion: str | None,
        report: dict[str, Any],
        reason: str,
        logical_date: str,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Move ``champion`` to ``version`` iff it still points at ``expected_champion``.

        Idempotent: promoting the version that is already champion changes nothing. Raises
        :class:`PromotionConflict` when another promotion moved the champion first.
        """
        current = self.alias_version(CHAMPION)
        if current == version:
            return {"promoted": False, "champion": version, "detail": "already champion"}
        why = Why("promote", reason, logical_date, report, actor)
        self._move(CHAMPION, version, expected=expected_champion, why=why)
        if expected_champion:
            self.client.set_model_version_tag(self.name, expected_champion, "archived", "true")
            self.client.set_model_version_tag(self.name, expected_champion, "archived_at", logical_date)
        self.client.set_model_version_tag(self.name, version, "promoted_at", logical_date)
        if self.alias_version(CHALLENGER) == version:
            self._clear(CHALLENGER)
        return {"promoted": True, "champion": version, "previous": expected_champion}

    def _clear(self, alias: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                aliases_table.update()
                .where(aliases_table.c.model_name == self.name, aliases_table.c.alias == alias)
                .values(version=None, updated_at=_now())
            )
        self.client.delete_registered_model_alias(self.name, alias)

    def record(
        self,
        action: str,
        *,
        version: str | None,
        reason: str,
        logical_date: str,
        report: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        """Append an audit row without moving an alias (a refused gate, a failed deploy)."""
        champion = self.alias_version(CHAMPION)
        with self.engine.begin() as conn:
            self._append_audit(
                conn, _now(), None, champion, version, Why(action, reason, logical_date, report, actor)
            )

    def _append_audit(
        self,
        conn: sa.Connection,
        at: str,
        alias: str | None,
        from_version: str | None,
        to_version: str | None,
        why: Why,
    ) -> None:
        """One audit row, inside the caller's transaction (with the alias move it records, if any)."""
        conn.execute(
            audit_table.insert().values(
                at=at,
                model_name=self.name,
                action=why.action,
                alias=alias,
                from_version=from_version,
                to_version=to_version,
                actor=why.actor or default_actor(),
                reason=why.reason,
                logical_date=why.logical_date,
                report=json.dumps(why.report, default=str) if why.report else None,
            )
        )

    def rollback(self, *, reason: str, logical_date: str, actor: str | None = None) -> dict[str, Any]:
        """Restore the champion before the current one (from the audit trail)."""
        current = self.alias_version(CHAMPION)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit_table.c.from_version, audit_table.c.to_version)
                .where(
                    audit_table.c.model_name == self.name,
                    audit_table.c.alias == CHAMPION,
                    audit_table.c.action.in_(["promote", "rollback"]),
                )
                .order_by(audit_table.c.id.desc())
            ).all()
        previous = next((r.from_version for r in rows if r.to_version == current and r.from_version), None)
        if current is None or previous is None:
            raise RuntimeError(
                f"nothing to roll back to: champion is {current}, no earlier champion in the audit log"
            )
        self._move(
            CHAMPION, previous, expected=current, why=Why("rollback", reason, logical_date, actor=actor)
        )
        self.client.set_model_version_tag(self.name, current, "rolled_back_at", logical_date)
        self.client.set_model_version_tag(self.name, previous, "archived", "false")
        return {"champion": previous, "previous": current}

    def _move(
        self, alias: str, version: str, *, expected: str | None, why: Why, compare: bool = True
    ) -> None:
        now = _now()
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(aliases_table.c.version).where(
                    aliases_table.c.model_name == self.name, aliases_table.c.alias == alias
                )
            ).first()
            if current is None:
                try:
                    conn.execute(
                        aliases_table.insert().values(
                            model_name=self.name, alias=alias, version=version, updated_at=now
                        )
                    )
                except sa.exc.IntegrityError as exc:
                    raise PromotionConflict(f"{alias} of {self.name} was set concurrently") from exc
                if compare and expected is not None:
                    raise PromotionConflict(f"expected {alias} v{expected}, but {self.name} had no {alias}")
                previous = None
            else:
                previous = current[0]
                stmt = aliases_table.update().where(
                    aliases_table.c.model_name == self.name, aliases_table.c.alias == alias
                )
                if compare:
                    # The compare-and-set: only the caller that saw the current version wins.
                    stmt = stmt.where(aliases_table.c.version.is_not_distinct_from(expected))
                res = conn.execute(stmt.values(version=version, updated_at=now))
                if res.rowcount != 1:
                    raise PromotionConflict(
                        f"{alias} of {self.name} is v{previous}, not v{expected}: another promotion won"
                    )
            self._append_audit(conn, now, alias, previous, version, why)
        # MLflow follows the table: serving and humans read aliases there.
        self.client.set_registered_model_alias(self.name, alias, version)
        log.info("%s: %s v%s -> v%s (%s)", self.name, alias, previous, version, why.reason)
