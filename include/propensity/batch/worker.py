"""Batch scoring, executor side: what each Spark task of :func:`propensity.batch.scoring.score_day` runs.

Imported by Spark's Python workers (and preloaded by :mod:`propensity.batch.spark_daemon`), so it
imports only what a task needs: Arrow, numpy, xgboost (through the API's backend) and the
predictions database's driver.

A task is given slices of the day's snapshot file (a row group, or a row range of one). It reads
them straight from the offline store with pyarrow (a local folder or S3, only the champion's
columns), scores each Arrow batch with the API's :class:`~propensity.serving.backends.InProcessBackend`
on the matrix :func:`~propensity.features.spec.matrix` builds, and COPYs each scored batch as it
comes. The JVM never decodes the snapshot's rows or ships them to Python: for a model this
small, that copy cost as much as the predictions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.batch.predictions_db import PredictionsDB, StagedBatch, stage_rows
from propensity.core.errors import DataError
from propensity.core.storage import Store
from propensity.features.spec import ENTITY_KEY, matrix
from propensity.serving.backends import InProcessBackend

log = logging.getLogger(__name__)

_MIN_BLOCK_ROWS = 4096  # below this a thread hand-off costs more than it saves


class BatchInputError(DataError, ValueError):
    """The day cannot be scored from what is stored (no snapshot, missing feature columns, bad scores)."""


@dataclass(frozen=True)
class SnapshotSlice:
    """Rows ``[offset, offset + length)`` of one row group of the snapshot file."""

    row_group: int
    offset: int
    length: int


@dataclass(frozen=True)
class SnapshotSource:
    """The snapshot file a job scores: its store (picklable: pyarrow filesystems are), path,
    the columns tasks read (the entity key, then the champion's features) and Arrow batch size."""

    store: Store
    path: str
    columns: tuple[str, ...]
    batch_rows: int
    # The file as the driver planned the slices: a task refuses another version of it (rewritten
    # by a backfill of the features mid-job), which could otherwise mix two snapshots in one day.
    size: int = -1
    row_groups: tuple[int, ...] = ()

    def check(self, fh: Any, parquet: pq.ParquetFile) -> None:
        meta = parquet.metadata
        found = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        if (self.size >= 0 and fh.size() != self.size) or (self.row_groups and found != self.row_groups):
            raise BatchInputError(
                f"the snapshot {self.path} changed while it was being scored ({fh.size()} bytes, row groups "
                f"{found}; planned {self.size} bytes, {self.row_groups}): nothing was published, re-run the task"
            )

    def batches(self, piece: SnapshotSlice) -> Iterator[pa.RecordBatch]:
        """The slice's rows in batches of at most ``batch_rows``, decoded as they are asked for
        (the first batch is scored while the next ones are read)."""
        start, stop, seen = piece.offset, piece.offset + piece.length, 0
        with self.store.fs.open_input_file(self.path) as fh:
            parquet = pq.ParquetFile(fh)
            self.check(fh, parquet)
            for batch in parquet.iter_batches(
                batch_size=self.batch_rows, row_groups=[piece.row_group], columns=list(self.columns)
            ):
                lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
                seen += batch.num_rows
                if hi > lo:
                    yield batch.slice(lo, hi - lo)
                if seen >= stop:
                    return


def plan_slices(row_groups: list[int], wanted: int) -> list[SnapshotSlice]:
    """Cut row groups of these sizes into at least ``wanted`` slices of near-equal length (a row
    group is never merged with another: a task reads whole row groups or parts of one)."""
    groups = [(i, n) for i, n in enumerate(row_groups) if n]
    if not groups:
        return []
    total = sum(n for _, n in groups)
    out = []
    for i, n in groups:
        # This group's share of the wanted slices, at least one.
        k = max(1, math.ceil(wanted * n / total)) if wanted > len(groups) else 1
        bounds = np.linspace(0, n, k + 1).astype(int)
        out.extend(
            SnapshotSlice(i, int(a), int(b - a)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a
        )
    return out


# sha256 -> backend, per Python worker process: Spark reuses workers, so a model loads once each.
_BACKENDS: dict[str, InProcessBackend] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


@dataclass(frozen=True)
class ModelRef:
    """Which model a batch job scores with, as every task and every row names it."""

    model_name: str
    version: str
    sha256: str
    feature_names: tuple[str, ...]  # the champion's input order


@dataclass(frozen=True)
class Scorer:
    """What a task needs to score: the broadcast model file, which model it is, and how many
    threads the task may use."""

    model_bc: Any
    model: ModelRef
    threads: int

    @property
    def sha(self) -> str:
        return self.model.sha256

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def features(self) -> tuple[str, ...]:
        return self.model.feature_names

    def backend(self) -> InProcessBackend:
        backend = _BACKENDS.get(self.sha)
        if backend is None:
            _BACKENDS.clear()  # one model per worker: a new champion evicts the old
            backend = _BACKENDS[self.sha] = InProcessBackend.from_bytes(self.model_bc.value, self.version)
            log.info("loaded champion v%s (%s) in this worker", self.version, self.sha[:12])
        return backend

    def scores(self, backend: InProcessBackend, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The API's predict on the training matrix (only the feature columns go through pandas).

        A task with several cores predicts row blocks on as many threads, each one-threaded as
        in the API (xgboost predicts thread-safely and frees the GIL): unlike xgboost's own
        OpenMP threads, these do not stall at a barrier when other work holds a core.
        """
        x = matrix(batch.select(list(self.features)).to_pandas(), self.features)
        if self.threads == 1 or len(x) < 2 * _MIN_BLOCK_ROWS:
            return backend.predict(x)
        pool = _POOLS.get(self.threads) or _POOLS.setdefault(self.threads, ThreadPoolExecutor(self.threads))
        blocks = np.array_split(x, min(self.threads, len(x) // _MIN_BLOCK_ROWS))
        return np.concatenate(list(pool.map(backend.predict, blocks)))


def checked(batch: pa.RecordBatch | pa.Table, scores: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        ids = batch.column(ENTITY_KEY).filter(pa.array(bad)).to_pylist()[:3]
        raise BatchInputError(f"{int(bad.sum())} score(s) outside [0, 1], e.g. customers {ids}")
    return scores


def best_rows(
    ids: list[str] | pa.Array | pa.ChunkedArray, scores: np.ndarray, n: int
) -> tuple[list[str], np.ndarray]:
    """The rows whose score is at least the ``n``-th largest, ties included (none for ``n <= 0``).

    Kept per task, their union holds every row of the day's top ``n`` whatever the tie-break: a
    row left out of its task's set has ``n`` rows of that task strictly above it.
    """
    if n <= 0:
        return [], scores[:0]
    if len(scores) > n:
        threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
        keep = np.flatnonzero(scores >= threshold)
    else:
        keep = np.arange(len(scores))
    if isinstance(ids, list):
        return [ids[i] for i in keep], scores[keep]
    return ids.take(pa.array(keep)).to_pylist(), scores[keep]


def ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced on a thread, up to ``depth`` ahead of the consumer: here the next
    batches are read and predicted while this one is written. The producer's exception is
    raised in the consumer; a consumer that stops early stops the producer."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((done, exc))
        finally:
            if hasattr(items, "close"):  # a generator: run its cleanup (files, nested threads) now
                items.close()

    worker = threading.Thread(target=produce, name="score-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)


def timed(items: Iterable[Any], clock: dict[str, float], key: str) -> Iterator[Any]:
    """``items``, adding the time spent getting each to ``clock[key]``."""
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        item = next(it, _END)
        clock[key] += time.perf_counter() - t0
        if item is _END:
            return
        yield item


_END = object()


def score_and_stage(
    ids: Iterator[int],
    *,
    scorer: Scorer,
    source: SnapshotSource,
    slices: tuple[SnapshotSlice, ...],
    db: PredictionsDB,
    staged: StagedBatch,
    top_n: int,
) -> Iterator[dict[str, Any]]:
    """One Spark partition (``ids``: the indexes of its slices), one pass: read each slice, score
    it batch by batch and COPY each batch as it comes (the next batches are read and predicted
    meanwhile); yields one summary: ``part``, ``rows``, ``top`` (its :func:`best_rows` for
    ``top_n``, as ``[customer_id, score]``), the seconds spent reading, predicting and writing,
    and ``started`` (wall clock)."""
    from pyspark import TaskContext

    started = time.time()  # wall clock, compared with the driver's: when Python got going
    part = TaskContext.get().partitionId()
    mine = [slices[i] for i in ids]
    backend = scorer.backend()
    # Seconds on each of the three threads (they overlap): decoding the snapshot, predicting, writing.
    clock = {"read_s": 0.0, "predict_s": 0.0, "write_s": 0.0, "waited_s": 0.0, "started": started}
    best: tuple[list[str], np.ndarray] = ([], np.empty(0))

    def scored() -> Iterator[pa.Table]:
        nonlocal best
        # The next batches are decoded on their own thread while this one is predicted.
        for batch in ahead(timed((b for piece in mine for b in source.batches(piece)), clock, "read_s")):
            t0 = time.perf_counter()
            scores = checked(batch, scorer.scores(backend, batch))
            clock["predict_s"] += time.perf_counter() - t0
            keys = batch.column(ENTITY_KEY)
            top_ids, top_scores = best_rows(keys, scores, top_n)
            best = best_rows(best[0] + top_ids, np.concatenate([best[1], top_scores]), top_n)
            yield pa.table({ENTITY_KEY: keys, "score": scores})

    t_start = time.perf_counter()
    # ... and the next batches are predicted while this one is COPYed.
    rows = stage_rows(db, staged, part, timed(ahead(scored()), clock, "waited_s"))
    # Writing: CSV and COPY of each batch, plus connecting and committing (not the waits for batches).
    clock["write_s"] = time.perf_counter() - t_start - clock.pop("waited_s")
    yield {"part": part, "rows": rows, "top": [[c, float(v)] for c, v in zip(*best, strict=True)], **clock}
