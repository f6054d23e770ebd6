"""Batch scoring stage: every active customer of a day's feature snapshot, scored by the champion.

``score_day(settings, day)`` reads ``offline/customer_features/date=F/`` (F = the day, or the latest
snapshot at most ``batch.max_feature_age_days`` before it), scores it in Spark with the deployed
champion and replaces the day's rows of the predictions table (:mod:`propensity.predictions_db`).

* The model is the file the model server reads (``<repository>/<model>/<version>/xgboost.json``,
  found through the deployment manifest and checked against its sha256). The driver reads it once
  and broadcasts the bytes, so a deploy during the run cannot mix two versions; each Python worker
  loads it once (cached by hash: Spark reuses workers across tasks) into the API's own
  :class:`~propensity.backends.InProcessBackend`.
* Scoring is vectorised (``mapInPandas``, one ``inplace_predict`` per Arrow batch) on the matrix
  built by :func:`propensity.train.matrix` with the champion's feature order: batch, API and
  training see identical inputs.
* Each partition stages its rows through the database's Python driver (COPY on Postgres); the
  driver then swaps the day in one transaction. Re-runs and backfills replace the day exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from propensity.backends import InProcessBackend, model_file_parts, repository_store
from propensity.collect import zone_store
from propensity.deploy import read_deployment
from propensity.features import ENTITY_KEY, MODEL_FEATURES, OFFLINE_ZONE, SNAPSHOTS
from propensity.predictions_db import (
    PredictionsDB,
    PredictionsDBError,
    PredictionsDBUnavailable,
    day_summary,
    db_from_settings,
    discard_batch,
    migrate,
    publish_day,
    stage_rows,
)
from propensity.storage import PART_FILE, list_partitions, partition_parts, read_partition
from propensity.train import matrix

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from propensity.settings import Settings

log = logging.getLogger(__name__)

SCORED_SCHEMA = "customer_id string, score double"
STAGED_SCHEMA = "part int, rows long, score_sum double"


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
) -> tuple[DataFrame, int]:
    """The snapshot's ``columns`` as a DataFrame, and its row count (from the Parquet footer)."""
    import pyarrow.parquet as pq

    store = zone_store(settings)
    cols = [ENTITY_KEY, *columns]
    parts = (*partition_parts(OFFLINE_ZONE, SNAPSHOTS, feature_date), PART_FILE)
    if store.is_local:
        path = store.path(*parts)
        schema_names = pq.read_schema(path).names
        _check_columns(schema_names, cols, store.uri_of(*parts))
        return spark.read.parquet(path).select(*cols), pq.read_metadata(path).num_rows
    table = read_partition(store, OFFLINE_ZONE, SNAPSHOTS, feature_date)
    _check_columns(table.column_names, cols, store.uri_of(*parts))
    return spark.createDataFrame(table.select(cols)), table.num_rows


def _check_columns(have: list[str], want: list[str], where: str) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise BatchInputError(f"{where} lacks the champion's input column(s) {missing}")


# -- executor side ---------------------------------------------------------------------------
# sha256 -> backend, per Python worker process: Spark reuses workers, so a model loads once each.
_BACKENDS: dict[str, InProcessBackend] = {}


def _backend(model_bc: Any, sha: str, version: str) -> InProcessBackend:
    backend = _BACKENDS.get(sha)
    if backend is None:
        _BACKENDS.clear()  # one model per worker: a new champion evicts the old
        backend = _BACKENDS[sha] = InProcessBackend.from_bytes(model_bc.value, version)
        log.info("loaded champion v%s (%s) in this worker", version, sha[:12])
    return backend


def _score_batches(
    batches: Iterator[pd.DataFrame], *, model_bc: Any, sha: str, version: str, features: tuple[str, ...]
) -> Iterator[pd.DataFrame]:
    backend = _backend(model_bc, sha, version)
    for frame in batches:
        scores = backend.predict(matrix(frame, features))
        yield pd.DataFrame({ENTITY_KEY: frame[ENTITY_KEY].to_numpy(), "score": scores})


def score_frame(features: DataFrame, model: ChampionModel) -> DataFrame:
    """``customer_id, score`` for every row of ``features`` (pure: nothing is written)."""
    sc = features.sparkSession.sparkContext
    model_bc = sc.broadcast(model.model_bytes)
    fn = functools.partial(
        _score_batches,
        model_bc=model_bc,
        sha=model.sha256,
        version=model.version,
        features=model.feature_names,
    )
    return features.mapInPandas(fn, SCORED_SCHEMA)


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    bad = ~np.isfinite(frame["score"].to_numpy()) | (frame["score"] < 0) | (frame["score"] > 1)
    if bad.any():
        raise BatchInputError(
            f"{int(bad.sum())} score(s) outside [0, 1], e.g. customers {frame.loc[bad, ENTITY_KEY].head(3).tolist()}"
        )
    return frame


def _stage_batches(
    batches: Iterator[pd.DataFrame], *, db: PredictionsDB, batch_id: str, meta: dict[str, str]
) -> Iterator[pd.DataFrame]:
    from pyspark import TaskContext

    part = TaskContext.get().partitionId()
    totals = {"rows": 0, "score_sum": 0.0}

    def rows() -> Iterator[pd.DataFrame]:
        for frame in batches:
            frame = _checked(frame)
            totals["rows"] += len(frame)
            totals["score_sum"] += float(frame["score"].sum())
            yield frame.assign(**meta)

    stage_rows(db, batch_id, part, rows())
    yield pd.DataFrame({"part": [part], "rows": [totals["rows"]], "score_sum": [totals["score_sum"]]})


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
    read back from the table) and where the inputs came from. ``run_id`` is recorded on each row
    (the Airflow run id; default ``manual__<day>``). Raises :class:`NoChampionDeployed`,
    :class:`BatchInputError` or :class:`~propensity.predictions_db.PredictionsDBUnavailable`;
    on any failure the day's previous rows are left as they were.
    """
    cfg = settings.batch
    model = deployed_champion(settings)
    feature_date = feature_date_for(settings, day)
    db = db_from_settings(settings)
    migrate(db)  # fails fast, before any Spark work, when the database is down
    run_id = run_id or f"manual__{day.isoformat()}"
    batch_id = uuid.uuid4().hex  # one attempt's staging key; retries get a fresh one
    if spark is None:
        from propensity.spark import spark_session

        spark = spark_session(
            settings.spark.master,
            "propensity-batch",
            settings.spark.shuffle_partitions,
            settings.spark.driver_memory,
        )
    meta = {
        "model_name": model.model_name,
        "model_version": model.version,
        "feature_date": feature_date.isoformat(),
        "scored_for_date": day.isoformat(),
        "run_id": run_id,
    }
    log.info(
        "scoring %s with %s v%s on the snapshot of %s -> %s",
        day, model.model_name, model.version, feature_date, db.safe_url,
    )  # fmt: skip
    arrow_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous_batch_rows = spark.conf.get(arrow_key)
    spark.conf.set(arrow_key, str(cfg.arrow_batch_rows))
    try:
        features, expected = read_features(spark, settings, feature_date, model.feature_names)
        partitions = cfg.partitions or spark.sparkContext.defaultParallelism
        if features.rdd.getNumPartitions() < partitions:
            # A snapshot is one Parquet row group: without this one core would score it all.
            features = features.repartition(partitions)
        stage = functools.partial(_stage_batches, db=db, batch_id=batch_id, meta=meta)
        staged = score_frame(features, model).mapInPandas(stage, STAGED_SCHEMA).collect()
        rows = sum(int(r["rows"]) for r in staged)
        if rows != expected:
            raise BatchInputError(f"staged {rows} rows but the snapshot of {feature_date} has {expected}")
        publish_day(db, day, batch_id, rows, before_commit=before_commit)
    except Exception as exc:
        discard_batch(db, batch_id)
        raise _clear_error(exc, db) from exc
    finally:
        spark.conf.set(arrow_key, previous_batch_rows)
    summary = day_summary(db, day, cfg.top_n)
    result = {
        "day": day.isoformat(),
        "feature_date": feature_date.isoformat(),
        "rows": rows,
        "model_name": model.model_name,
        "model_version": model.version,
        "run_id": run_id,
        "database": db.safe_url,
        "top": summary["top"],
    }
    log.info("predictions for %s: %d rows by v%s, top %s", day, rows, model.version, summary["top"][:3])
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
