"""Batch scoring stage: every active customer of a day's feature snapshot, scored by the champion.

``score_day(settings, day)`` reads ``offline/customer_features/date=F/`` (F = the day, or the latest
snapshot at most ``batch.max_feature_age_days`` before it), scores it in Spark with the deployed
champion and replaces the day's rows of the predictions table (:mod:`propensity.batch.predictions_db`).

* The model is the file the model server reads (``<repository>/<model>/<version>/xgboost.json``,
  found through the deployment manifest and checked against its sha256). The driver reads it once
  and broadcasts the bytes, so a deploy during the run cannot mix two versions; each Python worker
  loads it once (cached by hash: Spark reuses workers across tasks) into the API's own
  :class:`~propensity.serving.backends.InProcessBackend`.
* Scoring is vectorised and done in the same pass as the write (:mod:`propensity.batch.worker`):
  one Spark task per slice of the snapshot file (a row group, or a row range of one when
  ``batch.partitions`` asks for more tasks; no shuffle; a task's predict uses the cores the others
  leave). Each task reads its slice with pyarrow straight from the offline store (local or S3),
  so the JVM neither decodes the rows nor copies them to Python, then runs one ``inplace_predict``
  per Arrow batch on the matrix built by :func:`propensity.features.spec.matrix` with the champion's
  feature order (batch, API and training see identical inputs), and each scored batch goes
  straight into the task's COPY.
* Each partition stages its rows through the database's Python driver (COPY on Postgres); the
  driver then swaps the day in one transaction (:mod:`propensity.batch.predictions_db`). Re-runs and
  backfills replace the day exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from propensity.batch.predictions_db import (
    PredictionsDB,
    PredictionsDBError,
    PredictionsDBUnavailable,
    StagedBatch,
    db_from_settings,
    discard_batch,
    migrate,
    open_batch,
    publish_day,
    top_scores,
)
from propensity.batch.worker import (
    BatchInputError,
    ModelRef,
    Scorer,
    SnapshotSource,
    plan_slices,
    score_and_stage,
)
from propensity.core.storage import PART_FILE, list_partitions, partition_parts
from propensity.core.zones import SNAPSHOTS, zone_store
from propensity.features.spec import ENTITY_KEY, MODEL_FEATURES
from propensity.serving.manifest import (
    ModelIntegrityError,
    deployed_model,
    read_model_bytes,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from propensity.core.settings import Settings

log = logging.getLogger(__name__)


class NoChampionDeployed(RuntimeError):
    """Nothing to score with: no champion in the deployment manifest (the DAG skips)."""


@dataclass(frozen=True)
class ChampionModel:
    """The deployed champion as the batch job uses it: which model, and the served file's bytes."""

    ref: ModelRef
    model_bytes: bytes


def deployed_champion(settings: Settings) -> ChampionModel:
    """The champion the model server serves (raises :class:`NoChampionDeployed` when there is none)."""
    s = settings.serving
    champ = deployed_model(settings, "champion")
    if champ is None:
        raise NoChampionDeployed(
            f"no champion deployed in {s.repository}/{s.model_name}: nothing to score yet "
            "(the training DAG deploys one once a model passes the gate)"
        )
    try:
        data = read_model_bytes(settings, champ)
    except ModelIntegrityError as exc:
        raise BatchInputError(str(exc)) from exc
    sha = hashlib.sha256(data).hexdigest()
    ref = ModelRef(champ.model_name, champ.version, sha, champ.feature_names or MODEL_FEATURES)
    return ChampionModel(ref, data)


def feature_date_for(settings: Settings, day: dt.date) -> dt.date:
    """The snapshot that scores ``day``: the latest one in ``[day - max_feature_age_days, day]``."""
    max_age = settings.batch.max_feature_age_days
    dates = list_partitions(zone_store(settings), *SNAPSHOTS)
    usable = [d for d in dates if day - dt.timedelta(days=max_age) <= d <= day]
    if not usable:
        before = [d.isoformat() for d in dates if d <= day][-3:]
        raise BatchInputError(
            f"no feature snapshot for {day} (allowed age {max_age} day(s)); latest before it: "
            f"{before or 'none'}. Run the features DAG for {day} first."
        )
    return max(usable)


def snapshot_source(settings: Settings, feature_date: dt.date, columns: Iterable[str]) -> SnapshotSource:
    """Where tasks read the snapshot from (only the entity key and ``columns``), with its size and
    the row count of each row group, from the file's footer (local or S3 alike)."""
    cfg = settings.batch
    store = zone_store(settings)
    cols = (ENTITY_KEY, *columns)
    parts = (*partition_parts(*SNAPSHOTS, feature_date), PART_FILE)
    path = store.path(*parts)
    with store.fs.open_input_file(path) as fh:
        meta, size = pq.read_metadata(fh), fh.size()
    missing = [c for c in cols if c not in meta.schema.names]
    if missing:
        raise BatchInputError(f"{store.uri_of(*parts)} lacks the champion's input column(s) {missing}")
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return SnapshotSource(store, path, cols, cfg.arrow_batch_rows, size, groups)


# -- driver side -----------------------------------------------------------------------------
def _scorer(spark: SparkSession, model: ChampionModel, threads: int) -> Scorer:
    model_bc = spark.sparkContext.broadcast(model.model_bytes)
    return Scorer(model_bc, model.ref, threads)


def score_day(
    settings: Settings,
    day: dt.date,
    *,
    run_id: str | None = None,
    spark: SparkSession | None = None,
    before_commit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Score every active customer for ``day`` and replace the day's predictions.

    Returns ``rows``, ``model_version``, ``tasks``, ``slices`` (the snapshot's row ranges, one per
    task), ``top`` (``[(customer_id, score)]``, best first, as
    read back from the table), where the inputs came from and ``timings`` (seconds: ``prepare``,
    ``score_and_stage`` (the Spark job), ``publish``, ``summary``, ``task_start`` (from the job's
    submission to its first task running Python); and summed over the tasks, ``read`` (the
    snapshot's slices from the offline store), ``predict``, ``write``). ``run_id`` is
    recorded on each row (the Airflow run id; default ``manual__<day>``). Raises
    :class:`NoChampionDeployed`, :class:`BatchInputError` or
    :class:`~propensity.batch.predictions_db.PredictionsDBUnavailable`; on any failure the day's
    previous rows are left as they were.
    """
    cfg = settings.batch
    t0 = time.perf_counter()
    if spark is None:
        from pyspark.sql import SparkSession

        # A session already running in this driver is used as it is (re-applying the builder's
        # settings to it costs a quarter of a second); else one starts once the database answered.
        spark = SparkSession.getActiveSession()
    model = deployed_champion(settings)
    feature_date = feature_date_for(settings, day)
    db = db_from_settings(settings)
    migrate(db)  # fails fast, before any Spark work, when the database is down
    staged = StagedBatch(
        batch_id=uuid.uuid4().hex,  # one attempt's staging key; retries get a fresh one
        model_name=model.ref.model_name,
        model_version=model.ref.version,
        feature_date=feature_date,
        scored_for_date=day,
        run_id=run_id or f"manual__{day.isoformat()}",
    )
    if spark is None:
        from propensity.core.spark import configured_session

        spark = configured_session(settings, "propensity-batch")
    log.info(
        "scoring %s with %s v%s on the snapshot of %s -> %s",
        day, model.ref.model_name, model.ref.version, feature_date, db.safe_url,
    )  # fmt: skip
    source = snapshot_source(settings, feature_date, model.ref.feature_names)
    expected = sum(source.row_groups)
    # A task per slice: per row group by default (the snapshot's one row group up to 1 M
    # customers: one task, whose predict uses every core), or finer when configured.
    slices = tuple(plan_slices(list(source.row_groups), cfg.partitions))
    threads = max(1, spark.sparkContext.defaultParallelism // max(1, len(slices)))
    parts: list[Any] = []
    try:
        open_batch(db, staged)
        t1, submitted = time.perf_counter(), time.time()
        if slices:
            stage = functools.partial(
                score_and_stage,
                scorer=_scorer(spark, model, threads),
                source=source,
                slices=slices,
                db=db,
                staged=staged,
                top_n=cfg.top_n,
            )
            # An RDD job over the slice indexes: the tasks need no rows from the JVM, and a
            # fresh session's first RDD job reaches Python ~1.4 s sooner than a DataFrame one.
            ids = spark.sparkContext.parallelize(range(len(slices)), len(slices))
            parts = ids.mapPartitions(stage).collect()
        t2 = time.perf_counter()
        rows = sum(int(r["rows"]) for r in parts)
        if rows != expected:
            raise BatchInputError(f"staged {rows} rows but the snapshot of {feature_date} has {expected}")
        publish_day(db, staged, rows, before_commit=before_commit)
        t3 = time.perf_counter()
    except Exception as exc:
        discard_batch(db, staged)
        raise _clear_error(exc, db) from exc
    # Read back, what downstream readers now see: by key, among each task's best rows.
    top = top_scores(db, day, cfg.top_n, among=[c for r in parts for c, _ in r["top"]], written_by=staged)
    timings = {
        "prepare": t1 - t0,
        "score_and_stage": t2 - t1,
        "publish": t3 - t2,
        "summary": time.perf_counter() - t3,
        # Job submitted -> first task in Python: worker start-up and imports (a cold session's cost).
        "task_start": min((float(r["started"]) for r in parts), default=submitted) - submitted,
        **{k.removesuffix("_s"): sum(float(r[k]) for r in parts) for k in ("read_s", "predict_s", "write_s")},
    }
    result = {
        "day": day.isoformat(),
        "feature_date": feature_date.isoformat(),
        "rows": rows,
        "model_name": model.ref.model_name,
        "model_version": model.ref.version,
        "run_id": staged.run_id,
        "database": db.safe_url,
        "top": top,
        "tasks": len(parts),
        "slices": [vars(sl) for sl in slices],
        "threads_per_task": threads,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info(
        "predictions for %s: %d rows by v%s in %d task(s), top %s; seconds %s",
        day, rows, model.ref.version, len(parts), top[:3], result["timings"],
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
