"""Batch scoring stage: every active customer of a day's feature snapshot, scored by the champion.

``score_day(settings, day)`` reads ``offline/customer_features/date=F/`` (F = the day, or the latest
snapshot at most ``batch.max_feature_age_days`` before it), scores it in Spark with the deployed
champion and replaces the day's rows of the predictions table (:mod:`propensity.predictions_db`).

* The model is the file the model server reads (``<repository>/<model>/<version>/xgboost.json``,
  found through the deployment manifest and checked against its sha256). The driver reads it once
  and broadcasts the bytes, so a deploy during the run cannot mix two versions; each Python worker
  loads it once (cached by hash: Spark reuses workers across tasks) into the API's own
  :class:`~propensity.backends.InProcessBackend`.
* Scoring is vectorised and done in the same pass as the write: one ``mapInArrow`` task per
  row group of the snapshot (no shuffle; the task's predict uses the cores the others leave),
  one ``inplace_predict`` per Arrow batch on the matrix built by :func:`propensity.train.matrix`
  with the champion's feature order (batch, API and training see identical inputs), and each
  scored batch goes straight into the task's COPY.
* Each partition stages its rows through the database's Python driver (COPY on Postgres); the
  driver then swaps the day in one transaction (:mod:`propensity.predictions_db`). Re-runs and
  backfills replace the day exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from propensity.backends import InProcessBackend, model_file_parts, repository_store
from propensity.collect import zone_store
from propensity.deploy import read_deployment
from propensity.features import ENTITY_KEY, MODEL_FEATURES, OFFLINE_ZONE, SNAPSHOTS
from propensity.predictions_db import (
    PredictionsDB,
    PredictionsDBError,
    PredictionsDBUnavailable,
    StagedBatch,
    db_from_settings,
    discard_batch,
    migrate,
    open_batch,
    publish_day,
    stage_rows,
    top_scores,
)
from propensity.storage import PART_FILE, list_partitions, partition_parts, read_partition
from propensity.train import matrix

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from propensity.settings import Settings

log = logging.getLogger(__name__)

_MIN_BLOCK_ROWS = 4096  # below this a thread hand-off costs more than it saves
# What each task reports back: its partition, rows written and where its time went.
STAGED_ARROW = pa.schema(
    [("part", pa.int32()), ("rows", pa.int64())]
    + [(k, pa.float64()) for k in ("input_s", "predict_s", "write_s", "started")]
)


class NoChampionDeployed(RuntimeError):
    """Nothing to score with: no champion in the deployment manifest (the DAG skips)."""


class BatchInputError(ValueError):
    """The day cannot be scored from what is stored (no snapshot, missing feature columns, bad scores)."""


@dataclass(frozen=True)
class ChampionModel:
    """The deployed champion as the batch job uses it: the served file's bytes and input order."""

    model_name: str
    version: str
    model_bytes: bytes
    feature_names: tuple[str, ...]
    sha256: str


def deployed_champion(settings: Settings) -> ChampionModel:
    """The champion the model server serves (raises :class:`NoChampionDeployed` when there is none)."""
    s = settings.serving
    state = read_deployment(settings)
    champ = state.get("champion")
    if not champ:
        raise NoChampionDeployed(
            f"no champion deployed in {s.repository}/{s.model_name}: nothing to score yet "
            "(the training DAG deploys one once a model passes the gate)"
        )
    version = str(champ["version"])
    store = repository_store(settings)
    parts = model_file_parts(s.model_name, version)
    if not store.exists(*parts):
        raise FileNotFoundError(
            f"champion v{version} is in the manifest but {store.uri_of(*parts)} is missing"
        )
    data = store.read_bytes(*parts)
    sha = hashlib.sha256(data).hexdigest()
    if champ.get("sha256") and champ["sha256"] != sha:
        raise BatchInputError(
            f"{store.uri_of(*parts)} has sha256 {sha[:12]}, the manifest says {champ['sha256'][:12]}: "
            "the model file changed after deploy; redeploy the champion"
        )
    names = tuple(champ.get("feature_names") or MODEL_FEATURES)
    return ChampionModel(state.get("model_name", s.model_name), version, data, names, sha)


def feature_date_for(settings: Settings, day: dt.date) -> dt.date:
    """The snapshot that scores ``day``: the latest one in ``[day - max_feature_age_days, day]``."""
    max_age = settings.batch.max_feature_age_days
    dates = list_partitions(zone_store(settings), OFFLINE_ZONE, SNAPSHOTS)
    usable = [d for d in dates if day - dt.timedelta(days=max_age) <= d <= day]
    if not usable:
        before = [d.isoformat() for d in dates if d <= day][-3:]
        raise BatchInputError(
            f"no feature snapshot for {day} (allowed age {max_age} day(s)); latest before it: "
            f"{before or 'none'}. Run the features DAG for {day} first."
        )
    return max(usable)


def read_features(
    spark: SparkSession, settings: Settings, feature_date: dt.date, columns: Iterable[str]
) -> tuple[DataFrame, int, int]:
    """The snapshot's ``columns`` as a DataFrame, its row count (from the Parquet footer) and how
    many partitions can hold rows (Spark reads a row group in one task: a snapshot of one row
    group is one task however many byte-range splits the file gets)."""
    import pyarrow.parquet as pq

    store = zone_store(settings)
    cols = [ENTITY_KEY, *columns]
    parts = (*partition_parts(OFFLINE_ZONE, SNAPSHOTS, feature_date), PART_FILE)
    if store.is_local:
        path = store.path(*parts)
        schema_names = pq.read_schema(path).names
        _check_columns(schema_names, cols, store.uri_of(*parts))
        meta = pq.read_metadata(path)
        return spark.read.parquet(path).select(*cols), meta.num_rows, max(1, meta.num_row_groups)
    table = read_partition(store, OFFLINE_ZONE, SNAPSHOTS, feature_date)
    _check_columns(table.column_names, cols, store.uri_of(*parts))
    return spark.createDataFrame(table.select(cols)), table.num_rows, spark.sparkContext.defaultParallelism


def _check_columns(have: list[str], want: list[str], where: str) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise BatchInputError(f"{where} lacks the champion's input column(s) {missing}")


# -- executor side ---------------------------------------------------------------------------
# sha256 -> backend, per Python worker process: Spark reuses workers, so a model loads once each.
_BACKENDS: dict[str, InProcessBackend] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


@dataclass(frozen=True)
class _Scorer:
    """What a task needs to score: the broadcast model and how many threads it may use."""

    model_bc: Any
    sha: str
    version: str
    features: tuple[str, ...]
    threads: int

    def backend(self) -> InProcessBackend:
        backend = _BACKENDS.get(self.sha)
        if backend is None:
            _BACKENDS.clear()  # one model per worker: a new champion evicts the old
            backend = _BACKENDS[self.sha] = InProcessBackend.from_bytes(self.model_bc.value, self.version)
            log.info("loaded champion v%s (%s) in this worker", self.version, self.sha[:12])
        return backend

    def scores(self, backend: InProcessBackend, batch: pa.RecordBatch) -> np.ndarray:
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


def _scorer(spark: SparkSession, model: ChampionModel, threads: int) -> _Scorer:
    model_bc = spark.sparkContext.broadcast(model.model_bytes)
    return _Scorer(model_bc, model.sha256, model.version, model.feature_names, threads)


def _checked(batch: pa.RecordBatch, scores: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        ids = batch.column(ENTITY_KEY).filter(pa.array(bad)).to_pylist()[:3]
        raise BatchInputError(f"{int(bad.sum())} score(s) outside [0, 1], e.g. customers {ids}")
    return scores


def _score_and_stage(
    batches: Iterator[pa.RecordBatch], *, scorer: _Scorer, db: PredictionsDB, staged: StagedBatch
) -> Iterator[pa.RecordBatch]:
    """One partition, one pass: score each Arrow batch and COPY it as it comes; yields one
    summary row (rows, and seconds spent waiting for input, predicting and writing)."""
    from pyspark import TaskContext

    started = time.time()  # wall clock, compared with the driver's: when Python got going
    part = TaskContext.get().partitionId()
    backend = scorer.backend()
    clock = {"input_s": 0.0, "predict_s": 0.0, "write_s": 0.0, "started": started}

    def scored() -> Iterator[pa.Table]:
        t0 = time.perf_counter()
        for batch in batches:
            t1 = time.perf_counter()
            scores = _checked(batch, scorer.scores(backend, batch))
            t2 = time.perf_counter()
            clock["input_s"] += t1 - t0
            clock["predict_s"] += t2 - t1
            yield pa.table({ENTITY_KEY: batch.column(ENTITY_KEY), "score": scores})
            t0 = time.perf_counter()  # the time in between went to writing the batch

    t_start = time.perf_counter()
    rows = stage_rows(db, staged, part, scored())
    # Writing: CSV and COPY of each batch, plus connecting and committing.
    clock["write_s"] = time.perf_counter() - t_start - clock["input_s"] - clock["predict_s"]
    yield pa.record_batch(
        {"part": [part], "rows": [rows], **{k: [v] for k, v in clock.items()}}, STAGED_ARROW
    )


# -- driver side -----------------------------------------------------------------------------
def score_day(
    settings: Settings,
    day: dt.date,
    *,
    run_id: str | None = None,
    spark: SparkSession | None = None,
    before_commit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Score every active customer for ``day`` and replace the day's predictions.

    Returns ``rows``, ``model_version``, ``top`` (``[(customer_id, score)]``, best first, as
    read back from the table), where the inputs came from and ``timings`` (seconds: ``prepare``,
    ``score_and_stage`` (the Spark job), ``publish``, ``summary``, ``task_start`` (from the job's
    submission to its first task running Python); and summed over the tasks, ``input`` (waiting
    for Spark's Arrow batches), ``predict``, ``write``). ``run_id`` is
    recorded on each row (the Airflow run id; default ``manual__<day>``). Raises
    :class:`NoChampionDeployed`, :class:`BatchInputError` or
    :class:`~propensity.predictions_db.PredictionsDBUnavailable`; on any failure the day's
    previous rows are left as they were.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    cfg = settings.batch
    t0 = time.perf_counter()
    model = deployed_champion(settings)
    feature_date = feature_date_for(settings, day)
    db = db_from_settings(settings)
    migrate(db)  # fails fast, before any Spark work, when the database is down
    staged = StagedBatch(
        batch_id=uuid.uuid4().hex,  # one attempt's staging key; retries get a fresh one
        model_name=model.model_name,
        model_version=model.version,
        feature_date=feature_date,
        scored_for_date=day,
        run_id=run_id or f"manual__{day.isoformat()}",
    )
    if spark is None:
        from propensity.spark import spark_session

        spark = spark_session(
            settings.spark.master,
            "propensity-batch",
            settings.spark.shuffle_partitions,
            settings.spark.driver_memory,
        )
    log.info(
        "scoring %s with %s v%s on the snapshot of %s -> %s",
        day, model.model_name, model.version, feature_date, db.safe_url,
    )  # fmt: skip
    arrow_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous_batch_rows = spark.conf.get(arrow_key)
    spark.conf.set(arrow_key, str(cfg.arrow_batch_rows))
    try:
        features, expected, slices = read_features(spark, settings, feature_date, model.feature_names)
        if cfg.partitions and slices < cfg.partitions:
            features, slices = features.repartition(cfg.partitions), cfg.partitions
        else:
            # No shuffle by default: it costs more than it buys (a snapshot is one row group, one
            # task, whose predict uses every core instead). Coalescing drops the empty splits,
            # each of which would start a Python worker (seconds of imports) for nothing.
            features = features.coalesce(slices)
        threads = max(1, spark.sparkContext.defaultParallelism // slices)
        open_batch(db, staged)
        t1, submitted = time.perf_counter(), time.time()
        stage = functools.partial(
            _score_and_stage, scorer=_scorer(spark, model, threads), db=db, staged=staged
        )
        parts = features.mapInArrow(stage, from_arrow_schema(STAGED_ARROW)).collect()
        t2 = time.perf_counter()
        rows = sum(int(r["rows"]) for r in parts)
        if rows != expected:
            raise BatchInputError(f"staged {rows} rows but the snapshot of {feature_date} has {expected}")
        publish_day(db, staged, rows, before_commit=before_commit)
        t3 = time.perf_counter()
    except Exception as exc:
        discard_batch(db, staged)
        raise _clear_error(exc, db) from exc
    finally:
        spark.conf.set(arrow_key, previous_batch_rows)
    top = top_scores(db, day, cfg.top_n)  # read back: what downstream readers now see
    timings = {
        "prepare": t1 - t0,
        "score_and_stage": t2 - t1,
        "publish": t3 - t2,
        "summary": time.perf_counter() - t3,
        # Job submitted -> first task in Python: worker start-up and imports (a cold session's cost).
        "task_start": min((float(r["started"]) for r in parts), default=submitted) - submitted,
        **{
            k.removesuffix("_s"): sum(float(r[k]) for r in parts) for k in ("input_s", "predict_s", "write_s")
        },
    }
    result = {
        "day": day.isoformat(),
        "feature_date": feature_date.isoformat(),
        "rows": rows,
        "model_name": model.model_name,
        "model_version": model.version,
        "run_id": staged.run_id,
        "database": db.safe_url,
        "top": top,
        "tasks": len(parts),
        "threads_per_task": threads,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info(
        "predictions for %s: %d rows by v%s in %d task(s), top %s; seconds %s",
        day, rows, model.version, len(parts), top[:3], result["timings"],
    )  # fmt: skip
    return result


def _clear_error(exc: Exception, db: PredictionsDB) -> Exception:
    """Spark wraps executor errors in a PythonException: surface the database's own message."""
    if isinstance(exc, PredictionsDBError | BatchInputError):
        return exc
    text = str(exc)
    for kind, cls in (
        ("PredictionsDBUnavailable", PredictionsDBUnavailable),
        ("BatchInputError", BatchInputError),
    ):
        if kind in text:
            line = next((ln for ln in text.splitlines() if kind in ln and ":" in ln), text)
            return cls(line.split(f"{kind}: ", 1)[-1].strip() or f"predictions database {db.safe_url} failed")
    return exc


def days_to_score(
    param_day: str | None, asset_as_of: Iterable[str], logical_date: dt.datetime | None
) -> list[dt.date]:
    """The days one ``batch_inference`` run scores, oldest first.

    The ``day`` Param (a run by hand) wins; else each ``as_of`` of the triggering
    ``customer_features`` events (several when events queued while a run was busy); else the
    logical date's UTC day.
    """
    if param_day:
        return [dt.date.fromisoformat(str(param_day))]
    days = sorted({dt.date.fromisoformat(str(d)) for d in asset_as_of})
    if days:
        return days
    if logical_date is not None:
        return [logical_date.astimezone(dt.UTC).date()]
    raise ValueError(
        "batch_inference needs a day: trigger it with the `day` Param, or let a customer_features "
        "event (extra as_of) trigger it"
    )
