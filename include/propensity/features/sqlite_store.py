"""Feast's SQLite online store with Redis's rule: a row never overwrites a newer one.

Feast's Redis store skips a write whose event timestamp is not newer than the stored row's; its
SQLite store replaces whatever is there. Re-running an old ``features`` day (a backfill, an
on-call re-run) would then put older features online, and the API would serve them with no error.
This store is Feast's SQLite store (same tables, same bytes) whose ``online_write_batch`` first
reads the stored timestamps of the incoming entities and drops the rows that are not newer, on
every write path: our batch engine's, Feast's ``materialize``, ``write_to_online_store`` and push.

Configured as ``online_store: {type: propensity.features.sqlite_store.NewerOnlySqliteOnlineStore}``
(``propensity.features.store`` does it for the ``sqlite`` profile setting).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.utils import to_naive_utc

log = logging.getLogger(__name__)

STORE_TYPE = "propensity.features.sqlite_store.NewerOnlySqliteOnlineStore"
_CHUNK = 900  # entity keys bound in one query (SQLite allows 999 parameters)


class NewerOnlySqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["propensity.features.sqlite_store.NewerOnlySqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


class NewerOnlySqliteOnlineStore(SqliteOnlineStore):
    def online_write_batch(
        self,
        config: Any,
        table: Any,
        data: list[tuple[Any, dict[str, Any], dt.datetime, dt.datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        keep = newer_rows(self._get_conn(config), config, table, data)
        if len(keep) < len(data):
            log.info(
                "online write of %s: %d of %d rows kept back, the stored row is as new or newer",
                table.name,
                len(data) - len(keep),
                len(data),
            )
        super().online_write_batch(config, table, keep, progress)
        if progress and len(keep) < len(data):
            progress(len(data) - len(keep))  # the rows kept back are done too


def newer_rows(conn: Any, config: Any, table: Any, data: list[tuple]) -> list[tuple]:
    """The rows of ``data`` whose event time is newer than the stored row of their entity (or that
    have none). Within ``data`` the last row of an entity wins, as in Feast's own write."""
    if not data:
        return data
    name = compute_table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
    version = config.entity_key_serialization_version
    keys = [serialize_entity_key(row[0], entity_key_serialization_version=version) for row in data]
    # Compared as Feast stores them: int(naive UTC datetime .timestamp()) (its sqlite3 adapter).
    stored: dict[bytes, int] = {}
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    if exists:
        distinct = list(dict.fromkeys(keys))
        quoted = '"' + name.replace('"', '""') + '"'
        for i in range(0, len(distinct), _CHUNK):
            chunk = distinct[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT entity_key, MAX(event_ts) FROM {quoted} WHERE entity_key IN ({marks}) GROUP BY entity_key",
                chunk,
            ).fetchall()
            stored.update({bytes(k): _as_epoch(ts) for k, ts in rows if ts is not None})
    return [
        row
        for key, row in zip(keys, data, strict=True)
        if key not in stored or int(to_naive_utc(row[2]).timestamp()) > stored[key]
    ]


def _as_epoch(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text) if text.lstrip("-").isdigit() else int(dt.datetime.fromisoformat(text).timestamp())
