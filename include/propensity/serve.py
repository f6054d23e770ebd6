"""The prediction API: online features from Feast, the champion's score, shadow scoring, a request log.

``create_app(settings)`` builds a FastAPI app; ``python -m propensity.serve`` (``make serve``)
runs it with uvicorn. The response path is: validate -> online features -> champion score ->
answer. Requests are read on the event loop (no thread-pool hop per request); the ones that
arrive while a lookup runs wait for it and then go together, one online-store read and one
model call for all of them, on one thread of their own (:class:`MicroBatcher`, Triton's dynamic
batching in-process). Everything else (the challenger's shadow score, the prediction log) runs
on one background thread that catches up every few tens of milliseconds
(:class:`OffPathWorker`), so it never adds to the champion's latency beyond a deque append.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hmac
import io
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, HTTPException, Request
from fastapi.datastructures import Headers
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator
from pydantic_core import to_json

from propensity.backends import BackendUnavailable, InProcessBackend, ModelBackend, backend_for
from propensity.deploy import read_deployment
from propensity.storage import Store, open_store

if TYPE_CHECKING:
    from propensity.settings import Settings

log = logging.getLogger(__name__)

ENTITY_KEY = "customer_id"
API_KEY_HEADER = "X-API-Key"
MAX_PENDING_BACKGROUND = (
    10_000  # batches; past this, shadow scoring is skipped rather than queued without bound
)
OFF_PATH_INTERVAL_S = 0.05  # how often shadow scoring and logging catch up with the answers
MAX_ROWS_PER_LOOKUP = 256  # customers per merged lookup (a single request may still bring max_batch)


# -- feature source -----------------------------------------------------------------------
class FeatureStoreUnavailable(RuntimeError):
    """The online store cannot be read (maps to HTTP 503, naming the cause)."""


@dataclass(frozen=True)
class FeatureRows:
    """Online features of a list of customers, in the source's column order."""

    values: np.ndarray  # float32 [n, f]; NaN where the store has no value
    found: np.ndarray  # bool [n]: the store knows the customer
    timestamps: list[dt.datetime | None]  # when each customer's features were computed


class FeatureSource(Protocol):
    """Where the API reads a customer's features from (Feast in every deployment)."""

    feature_names: list[str]

    def get(self, customer_ids: Sequence[str]) -> FeatureRows: ...

    def check(self) -> None:
        """Raise :class:`FeatureStoreUnavailable` unless the store answers."""
        ...


class FeastFeatureSource:
    """Features through the model's Feast FeatureService (the same definitions as training).

    Reads with the provider's ``online_read``, one call per feature view of the service: the
    views, requested features, join keys and entity value types are resolved once, by Feast's
    own request resolution, instead of on every request as ``FeatureStore.get_online_features``
    does (a fifth of its cost for one customer, a seventh for eight). Values and timestamps are
    converted as ``OnlineResponse.to_dict`` converts them, so both paths give the same rows.
    """

    def __init__(self, store: Any, feature_service: str, entity_key: str = ENTITY_KEY) -> None:
        from feast import utils as feast_utils
        from feast.types import Bytes, String

        self.store = store
        self.entity_key = entity_key
        # Resolved once: a registry read per request would cost more than the lookup itself.
        self.service = store.get_feature_service(feature_service)
        # Model inputs are the service's numeric fields; strings (e.g. ``country``, kept in the
        # service for evaluation segments) are not fed to the model.
        self.feature_names = [
            f.name
            for proj in self.service.feature_view_projections
            for f in proj.features
            if f.dtype not in (String, Bytes)
        ]
        column = {name: j for j, name in enumerate(self.feature_names)}
        (_, on_demand, join_keys, entity_types, _, grouped_refs, *_) = (
            feast_utils._get_online_request_context(store.registry, store.project, self.service, False)
        )
        if on_demand:
            raise ValueError(f"feature service {feature_service} has on-demand views: not served here")
        if entity_key not in entity_types:
            raise ValueError(f"feature service {feature_service} is not keyed by {entity_key!r}")
        self._join_keys: dict[str, str] = join_keys
        self._entity_type = entity_types[entity_key]
        # (view, every feature it serves, [(feature, model column)] of the numeric ones)
        self._views = [
            (view, list(names), [(n, column[n]) for n in names if n in column])
            for view, names in grouped_refs
        ]
        self._provider = store._get_provider()
        self._feast_utils = feast_utils
        self.kind = type(store.config.online_store).__name__
        conn = getattr(store.config.online_store, "connection_string", None)
        if conn is not None and "retry=" not in conn:
            # redis-py 7 retries a refused connection with backoff for ~5 s: a down store would
            # answer 503 only after that, far past the SLA.
            log.warning(
                "Redis connection string lacks 'retry=null,socket_timeout=...': a down store will stall requests"
            )

    def get(self, customer_ids: Sequence[str]) -> FeatureRows:
        try:
            return self._read(customer_ids)
        except Exception as exc:  # redis, sqlite and network errors alike: the store is down
            raise FeatureStoreUnavailable(
                f"online store ({self.kind}) unreachable: {type(exc).__name__}: {exc}"
            ) from exc

    def _read(self, customer_ids: Sequence[str]) -> FeatureRows:
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
        from google.protobuf.timestamp_pb2 import Timestamp

        fu = self._feast_utils
        n = len(customer_ids)
        values = np.full((n, len(self.feature_names)), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        seconds = [0] * n
        keys = {self.entity_key: python_values_to_proto_values(list(customer_ids), self._entity_type)}
        for view, requested, columns in self._views:
            entities, destinations, _ = fu._get_unique_entities(view, keys, self._join_keys)
            read = self._provider.online_read(
                config=self.store.config,
                table=view,
                entity_keys=fu._get_entity_key_protos(entities),
                # a copy: online stores append their timestamp field to the list they are given
                requested_features=list(requested),
            )
            for (row_ts, data), rows in zip(read, destinations, strict=True):
                if row_ts is not None:
                    stamp = Timestamp()
                    stamp.FromDatetime(row_ts)  # to_dict's ``__ts``: whole seconds
                    for i in rows:
                        seconds[i] = max(seconds[i], stamp.seconds)
                if data is None:
                    continue
                for name, j in columns:
                    proto = data.get(name)
                    if proto is None:
                        continue
                    kind = proto.WhichOneof("val")
                    if kind is None:  # the store has no value
                        continue
                    v = getattr(proto, kind) if kind in _SCALARS else feast_value_type_to_python_type(proto)
                    if v is None:
                        continue
                    for i in rows:
                        values[i, j] = v
                        found[i] = True
        stamps = [dt.datetime.fromtimestamp(t, dt.UTC) if t > 0 else None for t in seconds]
        return FeatureRows(values, found, stamps)

    def check(self) -> None:
        self.get(["__readiness_probe__"])


# Value kinds whose proto field is already the Python value to_dict answers.
_SCALARS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "bool_val"})


def feast_feature_source(settings: Settings) -> FeastFeatureSource:
    """The Feast store and the FeatureService the model was trained on.

    Uses ``propensity.feature_store`` (issue 4: the same store and service name as training)
    when it is installed; otherwise the Feast repo at ``serving.feature_repo``.
    """
    try:
        from propensity.feature_store import FEATURE_SERVICE, feature_store
    except ImportError:
        from feast import FeatureStore

        return FeastFeatureSource(
            FeatureStore(repo_path=settings.serving.feature_repo), settings.serving.feature_service
        )
    return FeastFeatureSource(feature_store(settings), FEATURE_SERVICE)


# -- prediction log -----------------------------------------------------------------------
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
        self._stop = threading.Event()
        # Arrow's first tz-aware timestamp conversion loads its time zone support (tens of ms):
        # here, not in the middle of serving.
        pa.array([dt.datetime.now(dt.UTC)], _TS)
        self._thread = threading.Thread(target=self._timer, name="prediction-log", daemon=True)
        self._thread.start()
        self.files: list[str] = []

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

    def _timer(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


# -- request and response bodies ----------------------------------------------------------
class PredictRequest(BaseModel):
    """One customer (``customer_id``) or a batch (``customer_ids``), not both."""

    model_config = ConfigDict(extra="forbid")

    customer_id: StrictStr | None = Field(default=None, min_length=1, max_length=64, examples=["17850"])
    customer_ids: list[StrictStr] | None = Field(default=None, min_length=1, examples=[["17850", "13047"]])

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.customer_id is None) == (self.customer_ids is None):
            raise ValueError("give exactly one of customer_id (a string) or customer_ids (a list of strings)")
        return self


class Prediction(BaseModel):
    customer_id: str
    score: float = Field(description="probability of a purchase in the next 30 days")
    model_name: str
    model_version: str
    feature_timestamp: dt.datetime | None = Field(description="when the customer's features were computed")
    cold_start: bool = Field(default=False, description="unknown customer: scored on empty features")
    fallback: bool = Field(default=False, description="scored in-process: the model server was down")


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


# The body /predict documents (it parses it itself, see parse_predict_request).
PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
}


def parse_predict_request(raw: bytes, content_type: str | None) -> PredictRequest:
    """The body as ``PredictRequest``, or a RequestValidationError shaped as FastAPI's (loc starts with "body")."""
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    if not _is_json(content_type):
        msg = f"expected a JSON object with content-type application/json, got {content_type or 'none'}"
        raise RequestValidationError([{"type": "model_type", "loc": ("body",), "msg": msg, "input": None}])
    try:
        return PredictRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters aside (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


# -- metrics ------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "propensity_api_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "propensity_api_request_seconds",
            "Request latency inside the app",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.stage = Histogram(
            "propensity_api_stage_seconds",
            "Time per stage of one lookup (a batch of concurrent requests)",
            ["stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.errors = Counter("propensity_api_errors", "Errors by kind", ["kind"], registry=r)
        self.model = Gauge(
            "propensity_model_info", "Served model versions (value 1)", ["role", "version"], registry=r
        )
        self.shadow = Counter("propensity_shadow_scores", "Shadow scoring outcomes", ["outcome"], registry=r)
        self.logged = Counter(
            "propensity_prediction_log_rows", "Rows handed to the prediction log", registry=r
        )
        self.batch = Histogram(
            "propensity_api_batch_requests",
            "Requests served by one feature lookup and model call",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )


# -- work after the answer ---------------------------------------------------------------
class OffPathWorker:
    """One thread that wakes every ``interval_s`` and handles everything queued since, at once.

    Handing a job over is a deque append: no thread wake-up (and GIL hand-off) per request,
    which cost more than the rest of a request's own work. Past ``max_pending`` queued
    items, :meth:`submit` refuses and the caller decides (the API logs without shadow scores).
    """

    def __init__(self, handle: Callable[[list[Any]], None], interval_s: float, max_pending: int) -> None:
        self.handle, self.interval_s, self.max_pending = handle, interval_s, max_pending
        self._items: deque[Any] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow-and-log", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        if len(self._items) >= self.max_pending:
            return False
        self._items.append(item)
        return True

    def _drain(self) -> None:
        items = []
        while self._items:
            items.append(self._items.popleft())
        if items:
            try:
                self.handle(items)
            except Exception:
                log.exception("off-path work on %d items failed", len(items))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._drain()

    def close(self) -> None:
        """Stop the thread, then handle what is left."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._drain()


# -- micro-batching -----------------------------------------------------------------------
@dataclass
class _Job:
    """One request waiting for its batch."""

    ids: list[str]
    single: bool  # answered as one Prediction, not a BatchPrediction
    started: float  # perf_counter when the request reached the endpoint
    queued: float = 0.0
    future: asyncio.Future[Any] | None = None


class MicroBatcher:
    """Concurrent requests share one feature lookup and one model call.

    A request that finds no batch running starts one at once: nothing is added at concurrency 1.
    Requests that arrive while a batch runs queue, and the next batch takes them all (up to
    ``max_rows`` customers; a request is never split). Triton's dynamic batching with no queue
    delay: under load a batch is whatever queued during the previous one, so the cost of a
    Redis round trip and a model call is shared instead of paid per request.

    ``run`` answers one outcome per job (a response, or the HTTPException to raise) on one
    thread of its own: one hop per batch, not per request, and the event loop goes on reading
    requests while a batch waits on Redis or runs the model (both release the GIL), and while a
    slow store or model server runs into its timeout.
    """

    def __init__(self, run: Callable[[list[_Job]], list[Any]], max_rows: int) -> None:
        self.run, self.max_rows = run, max_rows
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup-and-score")
        self._pending: deque[_Job] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: _Job) -> Any:
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        job.queued = time.perf_counter()
        self._pending.append(job)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await job.future

    def _next_batch(self) -> list[_Job]:
        jobs = [self._pending.popleft()]
        rows = len(jobs[0].ids)
        while self._pending and rows + len(self._pending[0].ids) <= self.max_rows:
            rows += len(self._pending[0].ids)
            jobs.append(self._pending.popleft())
        return jobs

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        jobs: list[_Job] = []
        try:
            while self._pending:
                jobs = self._next_batch()
                try:
                    outcomes = await loop.run_in_executor(self._thread, self.run, jobs)
                    if len(outcomes) != len(jobs):
                        raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(jobs)} requests")
                except Exception as exc:  # a bug, not a known fault: every request of the batch fails
                    log.exception("batch of %d requests failed", len(jobs))
                    _fail(jobs, exc)
                    continue
                for job, outcome in zip(jobs, outcomes, strict=True):
                    if job.future is not None and not job.future.done():  # done: the client went away
                        job.future.set_result(outcome)
        finally:
            self._task = None
            # Stopped early (cancelled at shutdown, or a bug above): no request may wait forever.
            _fail([*jobs, *self._pending], RuntimeError("the request batcher stopped"))
            self._pending.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def _fail(jobs: Sequence[_Job], exc: BaseException) -> None:
    """Fail every job still waiting for its answer."""
    for job in jobs:
        if job.future is not None and not job.future.done():
            job.future.set_exception(exc)


# -- the fast path ------------------------------------------------------------------------
class DirectRoute:
    """ASGI middleware: one method and path answered by ``answer(body, headers)`` directly.

    Everything else goes on to the app. Unexpected errors propagate to Starlette's
    ServerErrorMiddleware, outside this one, as a route's would.
    """

    def __init__(
        self,
        app: Any,
        method: str,
        path: str,
        answer: Callable[[bytes, Headers], Awaitable[Response]],
    ) -> None:
        self.app, self.method, self.path, self.answer = app, method, path, answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = await self.answer(b"".join(chunks), Headers(scope=scope))
        await response(scope, receive, send)


# -- the app ------------------------------------------------------------------------------
@dataclass
class _Models:
    name: str
    champion: ModelBackend | None
    shadow: ModelBackend | None
    feature_names: list[str] | None  # the champion's training order
    problem: str | None = None  # why there is no champion


def _load_models(settings: Settings) -> _Models:
    s = settings.serving
    state = read_deployment(settings)
    champ = state.get("champion")
    if not champ:
        return _Models(
            s.model_name, None, None, None, f"no champion deployed in {s.repository}/{s.model_name}"
        )
    champion = backend_for(settings, champ["version"])
    shadow = None
    if s.shadow_enabled and state.get("shadow"):
        try:
            shadow = backend_for(settings, state["shadow"]["version"])
        except Exception as exc:  # a broken shadow must never take the champion down
            log.error("shadow v%s not loaded: %s", state["shadow"]["version"], exc)
    return _Models(s.model_name, champion, shadow, champ.get("feature_names"))


def _api_keys(settings: Settings) -> list[bytes]:
    raw = os.environ.get(settings.serving.api_keys_env, "")
    return [k.strip().encode() for k in raw.split(",") if k.strip()]


def create_app(
    settings: Settings,
    feature_source: FeatureSource | None = None,
    backend: ModelBackend | None = None,
    *,
    shadow: ModelBackend | None = None,
) -> FastAPI:
    """The prediction API. Defaults: Feast features, the deployed champion (and shadow) backends."""
    s = settings.serving
    keys = _api_keys(settings)
    if s.auth_required and not keys:
        raise RuntimeError(
            f"API keys required (serving.auth_required) but ${s.api_keys_env} is empty: "
            "set it to a comma-separated list of keys"
        )
    metrics = Metrics()
    if backend is not None:
        # A server-side backend does not know its feature names: the deployment manifest does.
        names = getattr(backend, "feature_names", None) or (
            read_deployment(settings).get("champion") or {}
        ).get("feature_names")
        models = _Models(s.model_name, backend, shadow, names)
    else:
        models = _load_models(settings)
    source = feature_source if feature_source is not None else feast_feature_source(settings)
    if models.feature_names:
        missing = [f for f in models.feature_names if f not in source.feature_names]
        if missing:
            raise RuntimeError(f"the feature service lacks the model's features {missing}")
        order = np.array([source.feature_names.index(f) for f in models.feature_names])
    else:
        order = np.arange(len(source.feature_names))
    served_names = [source.feature_names[i] for i in order]
    zone = open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    plog = PredictionLog(zone, s.prediction_log_dir, s.prediction_log_flush_rows, s.prediction_log_flush_s)
    fallback: list[ModelBackend] = []  # built on first need: the same file Triton serves
    if models.champion is not None:
        metrics.model.labels("champion", models.champion.version).set(1)
    if models.shadow is not None:
        metrics.model.labels("shadow", models.shadow.version).set(1)
    ok_requests = metrics.requests.labels("predict", "200")
    latency = metrics.latency.labels("predict")
    stage_features, stage_model = metrics.stage.labels("features"), metrics.stage.labels("model")

    def _score(x: np.ndarray, requests: int) -> tuple[np.ndarray, ModelBackend, bool]:
        assert models.champion is not None
        try:
            return models.champion.predict(x), models.champion, False
        except BackendUnavailable as exc:
            metrics.errors.labels("backend_down").inc(requests)
            if not s.fallback_to_inprocess:
                raise
            log.warning("model server down, scoring in-process: %s", exc)
            if not fallback:
                fallback.append(InProcessBackend.from_repository(settings, models.champion.version))
            return fallback[0].predict(x), fallback[0], True

    def _after_response(batches: list[LogRows]) -> None:
        """Shadow scores for every queued batch in one model call, then the log."""
        rows_queued = sum(len(rows) for rows in batches)  # the counters count customers, not batches
        if models.shadow is not None:
            try:
                scores = models.shadow.predict(np.concatenate([rows.features for rows in batches]))
                metrics.shadow.labels("scored").inc(rows_queued)
            except Exception as exc:
                scores = None
                metrics.shadow.labels("failed").inc(rows_queued)
                log.warning("shadow v%s failed: %s", models.shadow.version, exc)
            start = 0
            for rows in batches:
                if scores is not None:
                    rows.columns["shadow_version"] = [models.shadow.version] * len(rows)
                    rows.columns["shadow_score"] = np.asarray(scores[start : start + len(rows)], np.float64)
                start += len(rows)
        for rows in batches:
            plog.append(rows)
            metrics.logged.inc(len(rows))

    # Off the response path: shadow scores and the log, a few times a second at most.
    background = OffPathWorker(_after_response, OFF_PATH_INTERVAL_S, MAX_PENDING_BACKGROUND)

    def _score_batch(jobs: list[_Job]) -> list[Response | HTTPException]:
        """One lookup and one model call for every job; then each job's answer, and one log hand-over."""
        t0 = time.perf_counter()
        ids = [cid for job in jobs for cid in job.ids]
        try:
            rows = source.get(ids)
        except FeatureStoreUnavailable as exc:
            metrics.errors.labels("feature_store_down").inc(len(jobs))
            return [HTTPException(503, str(exc)) for _ in jobs]
        t1 = time.perf_counter()
        x = np.ascontiguousarray(rows.values[:, order])
        try:
            scores, used, is_fallback = _score(x, len(jobs))
        except BackendUnavailable as exc:
            return [HTTPException(503, f"model server unavailable: {exc}") for _ in jobs]
        t2 = time.perf_counter()
        stage_features.observe(t1 - t0)
        stage_model.observe(t2 - t1)
        metrics.batch.observe(len(jobs))
        timing = f"features;dur={(t1 - t0) * 1e3:.3f}, model;dur={(t2 - t1) * 1e3:.3f}"
        n = len(ids)
        served = np.ones(n, dtype=bool)
        request_ids = [""] * n  # one id per request, on each of its rows
        latency_ms = np.zeros(n)
        outcomes: list[Response | HTTPException] = []
        start = 0
        for job in jobs:
            end = start + len(job.ids)
            found = rows.found[start:end]
            if s.unknown_customer == "404" and not found.all():
                metrics.errors.labels("unknown_customer").inc()
                unknown = [cid for cid, ok in zip(job.ids, found, strict=True) if not ok]
                outcomes.append(HTTPException(404, f"unknown customer id(s): {unknown[:10]}"))
                served[start:end] = False
                start = end
                continue
            preds = [
                {
                    "customer_id": cid,
                    "score": float(scores[i]),
                    "model_name": models.name,
                    "model_version": used.version,
                    "feature_timestamp": rows.timestamps[i],
                    "cold_start": not rows.found[i],
                    "fallback": is_fallback,
                }
                for i, cid in zip(range(start, end), job.ids, strict=True)
            ]
            body = preds[0] if job.single else {"predictions": preds}
            headers = {"Server-Timing": f"{timing}, queue;dur={(t0 - job.queued) * 1e3:.3f}"}
            outcomes.append(Response(to_json(body), media_type="application/json", headers=headers))
            request_ids[start:end] = [uuid.uuid4().hex] * len(job.ids)
            latency_ms[start:end] = (time.perf_counter() - job.started) * 1e3
            start = end
        if served.any():
            logged = LogRows(
                request_ids,
                dt.datetime.now(dt.UTC),
                ids,
                served_names,
                x,
                {
                    "score": np.asarray(scores, dtype=np.float64),
                    "model_name": [models.name] * n,
                    "model_version": [used.version] * n,
                    "shadow_version": [None] * n,
                    "shadow_score": [None] * n,
                    "feature_timestamp": rows.timestamps,
                    "cold_start": ~rows.found,
                    "fallback": np.full(n, is_fallback),
                    "latency_ms": latency_ms,
                },
            )
            if not served.all():
                logged = logged.select(served)
            if not background.submit(logged):
                metrics.shadow.labels("dropped").inc(len(logged))
                plog.append(logged)
        return outcomes

    batcher = MicroBatcher(_score_batch, max_rows=max(s.max_batch, MAX_ROWS_PER_LOOKUP))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        # What is alive now (Feast, MLflow, pandas, the model: ~270k objects) lives as long as the
        # process. Left to the collector, every full collection walks it all, 100-400 ms during
        # which no request is answered; frozen, a full collection walks only what serving made.
        gc.collect()
        gc.freeze()
        yield
        batcher.close()
        background.close()
        plog.close()
        gc.unfreeze()  # several apps may live in one process (tests): give the collector back its objects

    app = FastAPI(
        title="Purchase propensity",
        description="How likely is a customer to buy in the next 30 days.",
        version="1",
        lifespan=lifespan,
    )
    app.state.prediction_log = plog
    app.state.metrics = metrics
    app.state.background = background

    def _invalid_response(path: str, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_request").inc()
        metrics.requests.labels(path.strip("/") or "root", "422").inc()
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid_response(request.url.path, exc)

    async def answer_predict(raw: bytes, headers: Headers) -> Response:
        """The answer to one POST /predict: 200, or 401/404/413/422/503 with its reason."""
        if s.auth_required:
            given = headers.get(API_KEY_HEADER, "").encode()
            if not any(hmac.compare_digest(given, k) for k in keys):
                metrics.errors.labels("unauthorized").inc()
                metrics.requests.labels("predict", "401").inc()
                return JSONResponse({"detail": f"missing or invalid API key (header {API_KEY_HEADER})"}, 401)
        try:
            body = parse_predict_request(raw, headers.get("content-type"))
        except RequestValidationError as exc:
            return _invalid_response("/predict", exc)
        t0 = time.perf_counter()
        status = "200"
        try:
            ids = [body.customer_id] if body.customer_id is not None else list(body.customer_ids or [])
            if len(ids) > s.max_batch:
                metrics.errors.labels("batch_too_large").inc()
                raise HTTPException(
                    413, f"batch of {len(ids)} customer ids exceeds the limit of {s.max_batch}"
                )
            if models.champion is None:
                metrics.errors.labels("no_model").inc()
                raise HTTPException(503, models.problem or "no model")
            outcome = await batcher.submit(_Job(ids, body.customer_id is not None, t0))
            if isinstance(outcome, HTTPException):
                raise outcome
            return outcome
        except HTTPException as exc:
            status = str(exc.status_code)
            return JSONResponse({"detail": exc.detail}, exc.status_code)
        except Exception:  # answered 500 by Starlette's error middleware: counted as such
            status = "500"
            raise
        finally:
            (ok_requests if status == "200" else metrics.requests.labels("predict", status)).inc()
            latency.observe(time.perf_counter() - t0)

    @app.post(
        "/predict",
        response_model=Prediction | BatchPrediction,
        responses={401: {}, 404: {}, 413: {}, 422: {}, 503: {}},
        openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
    )
    async def predict(request: Request) -> Response:
        """Score one customer (``customer_id``) or a batch (``customer_ids``)."""
        # What OpenAPI documents; requests are answered by the DirectRoute middleware before
        # FastAPI's routing, with this same function's answer.
        return await answer_predict(await request.body(), request.headers)

    # Per request, Starlette's and FastAPI's routing, middleware and parameter solving cost
    # more than a batch's feature lookup: /predict skips them.
    app.add_middleware(DirectRoute, method="POST", path="/predict", answer=answer_predict)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {}})
    def readyz() -> JSONResponse:
        """Ready: a champion is loaded and served, and the online store answers."""
        reasons = []
        if models.champion is None:
            reasons.append(models.problem or "no model")
        elif not models.champion.ready():
            reasons.append(f"model {models.name} v{models.champion.version} not ready on its backend")
        try:
            source.check()
        except FeatureStoreUnavailable as exc:
            reasons.append(str(exc))
        body = {
            "status": "not ready" if reasons else "ready",
            "model_version": models.champion.version if models.champion else None,
            "shadow_version": models.shadow.version if models.shadow else None,
            "reasons": reasons,
        }
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def main() -> None:  # pragma: no cover - exercised by `make serve`
    """Run the API with uvicorn on the configured host and port."""
    import uvicorn

    from propensity.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    uvicorn.run(
        create_app(settings), host=settings.serving.host, port=settings.serving.port, access_log=False
    )


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = [
    "BatchPrediction",
    "FeastFeatureSource",
    "FeatureRows",
    "FeatureSource",
    "FeatureStoreUnavailable",
    "PredictRequest",
    "Prediction",
    "PredictionLog",
    "create_app",
    "feast_feature_source",
]
