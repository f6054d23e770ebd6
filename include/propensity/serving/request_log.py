"""The API's request log: every answered customer with its features as served, the score, the model
version and the shadow's score, as small Parquet files under the zone root (read by the shadow test
and the drift DAG)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.core.storage import Store
from propensity.serving.batching import Ticker

log = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
# Columns after ``customer_id`` and the features (those come first, in that order).
LOG_TYPES: dict[str, pa.DataType] = {
    "score": pa.float64(),
    "model_name": pa.string(),
    "model_version": pa.string(),
    "shadow_version": pa.string(),
    "shadow_score": pa.float64(),
    "feature_timestamp": _TS,
    "cold_start": pa.bool_(),
    "fallback": pa.bool_(),
    "latency_ms": pa.float64(),
}


@dataclass
class LogRows:
    """Rows of one scored batch, by column: cheap to hand over and to turn into Arrow."""

    request_id: list[str]
    logged_at: dt.datetime
    customer_id: list[str]
    feature_names: list[str]
    features: np.ndarray  # float32 [n, f] as served; NaN where the store had no value
    columns: dict[str, list[Any] | np.ndarray]  # LOG_TYPES' columns, n values each

    def __len__(self) -> int:
        return len(self.customer_id)

    def select(self, keep: np.ndarray) -> LogRows:
        """The rows where ``keep`` (bool [n]) is true."""
        idx = np.flatnonzero(keep)
        return LogRows(
            [self.request_id[i] for i in idx],
            self.logged_at,
            [self.customer_id[i] for i in idx],
            self.feature_names,
            self.features[idx],
            {k: [v[i] for i in idx] if isinstance(v, list) else v[idx] for k, v in self.columns.items()},
        )


def log_table(chunks: Sequence[LogRows]) -> pa.Table:
    """One flat table: request_id, logged_at, customer_id, one double column per feature (null
    where missing), then LOG_TYPES' columns."""
    names = chunks[0].feature_names
    features = np.concatenate([c.features for c in chunks]).astype(np.float64)
    cols: dict[str, pa.Array] = {
        "request_id": pa.array([r for c in chunks for r in c.request_id], pa.string()),
        "logged_at": pa.array([c.logged_at for c in chunks for _ in range(len(c))], _TS),
        "customer_id": pa.array([r for c in chunks for r in c.customer_id], pa.string()),
    }
    for j, name in enumerate(names):
        cols[name] = pa.array(features[:, j], pa.float64(), from_pandas=True)  # NaN -> null
    for name, typ in LOG_TYPES.items():
        parts = [c.columns[name] for c in chunks]
        if all(isinstance(v, np.ndarray) for v in parts):
            cols[name] = pa.array(np.concatenate(parts), typ)
        else:
            cols[name] = pa.array([x for v in parts for x in v], typ)
    return pa.table(cols)


class PredictionLog:
    """Rows buffered in memory, flushed as small Parquet files under the zone root.

    ``<zone_root>/<prediction_log_dir>/date=YYYY-MM-DD/part-<time>-<id>.parquet``, each written
    atomically, flushed every ``flush_rows`` rows or ``flush_s`` seconds, and on shutdown.
    Rows arrive as column chunks: turning them into Arrow holds the GIL for well under a
    millisecond, where a list of row dicts held it for several, stalling requests meanwhile.
    """

    def __init__(self, store: Store, folder: str, flush_rows: int, flush_s: float) -> None:
        self.store, self.folder = store, folder
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self._chunks: list[LogRows] = []
        self._rows = 0
        self._lock = threading.Lock()
        # Arrow's first tz-aware timestamp conversion loads its time zone support (tens of ms):
        # here, not in the middle of serving.
        pa.array([dt.datetime.now(dt.UTC)], _TS)
        self.files: list[str] = []
        self._ticker = Ticker(self.flush, flush_s, "prediction-log")

    def append(self, rows: LogRows) -> None:
        with self._lock:
            self._chunks.append(rows)
            self._rows += len(rows)
            full = self._rows >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> str | None:
        with self._lock:
            chunks, self._chunks, self._rows = self._chunks, [], 0
        chunks = [c for c in chunks if len(c)]
        if not chunks:
            return None
        buf = io.BytesIO()
        pq.write_table(log_table(chunks), buf, compression="zstd")
        now = dt.datetime.now(dt.UTC)
        name = f"part-{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            uri = self.store.write_bytes(buf.getvalue(), self.folder, f"date={now.date().isoformat()}", name)
        except Exception:
            rows = sum(len(c) for c in chunks)
            log.exception("prediction log flush of %d rows failed; rows kept for the next flush", rows)
            with self._lock:
                self._chunks[:0] = chunks
                self._rows += rows
            return None
        self.files.append(uri)
        return uri

    def close(self) -> None:
        self._ticker.close(timeout_s=5)
