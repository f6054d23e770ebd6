"""The prediction API: online features from Feast, the champion's score, shadow scoring, a request log.

``create_app(settings)`` builds a FastAPI app; ``python -m propensity.serve`` (``make serve``)
runs it with uvicorn. The response path is: validate -> online features -> champion score ->
answer. Everything else (the challenger's shadow score, the prediction log) runs on one
background thread after the answer is built, so it never adds to the champion's latency
beyond handing a job over.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import Depends, FastAPI, HTTPException, Request
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
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from propensity.backends import BackendUnavailable, InProcessBackend, ModelBackend, backend_for
from propensity.deploy import read_deployment
from propensity.storage import Store, open_store

if TYPE_CHECKING:
    from propensity.settings import Settings

log = logging.getLogger(__name__)

ENTITY_KEY = "customer_id"
API_KEY_HEADER = "X-API-Key"
MAX_PENDING_BACKGROUND = 10_000  # past this, shadow scoring is skipped rather than queued without bound


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
    """Features through the model's Feast FeatureService (the same definitions as training)."""

    def __init__(self, store: Any, feature_service: str, entity_key: str = ENTITY_KEY) -> None:
        self.store = store
        self.entity_key = entity_key
        # Resolved once: a registry read per request would cost more than the lookup itself.
        self.service = store.get_feature_service(feature_service)
        from feast.types import Bytes, String

        # Model inputs are the service's numeric fields; strings (e.g. ``country``, kept in the
        # service for evaluation segments) are not fed to the model.
        self.feature_names = [
            f.name
            for proj in self.service.feature_view_projections
            for f in proj.features
            if f.dtype not in (String, Bytes)
        ]
        self.kind = type(store.config.online_store).__name__
        conn = getattr(store.config.online_store, "connection_string", None)
        if conn is not None and "retry=" not in conn:
            # redis-py 7 retries a refused connection with backoff for ~5 s: a down store would
            # answer 503 only after that, far past the SLA.
            log.warning(
                "Redis connection string lacks 'retry=null,socket_timeout=...': a down store will stall requests"
            )

    def get(self, customer_ids: Sequence[str]) -> FeatureRows:
        rows = [{self.entity_key: cid} for cid in customer_ids]
        try:
            data = self.store.get_online_features(features=self.service, entity_rows=rows).to_dict(
                include_event_timestamps=True
            )
        except Exception as exc:  # redis, sqlite and network errors alike: the store is down
            raise FeatureStoreUnavailable(
                f"online store ({self.kind}) unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        n = len(customer_ids)
        values = np.full((n, len(self.feature_names)), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        ts = np.zeros(n, dtype=np.int64)
        for j, name in enumerate(self.feature_names):
            col = data[name]
            for i, v in enumerate(col):
                if v is not None:
                    values[i, j] = v
                    found[i] = True
            ts = np.maximum(ts, np.asarray(data.get(f"{name}__ts", [0] * n), dtype=np.int64))
        stamps = [dt.datetime.fromtimestamp(int(t), dt.UTC) if t > 0 else None for t in ts]
        return FeatureRows(values, found, stamps)

    def check(self) -> None:
        self.get(["__readiness_probe__"])


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
class PredictionLog:
    """Rows buffered in memory, flushed as small Parquet files under the zone root.

    ``<zone_root>/<prediction_log_dir>/date=YYYY-MM-DD/part-<time>-<id>.parquet``, each written
    atomically, flushed every ``flush_rows`` rows or ``flush_s`` seconds, and on shutdown.
    """

    def __init__(self, store: Store, folder: str, flush_rows: int, flush_s: float) -> None:
        self.store, self.folder = store, folder
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._timer, name="prediction-log", daemon=True)
        self._thread.start()
        self.files: list[str] = []

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> str | None:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return None
        table = pa.Table.from_pylist(rows)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        now = dt.datetime.now(dt.UTC)
        name = f"part-{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            uri = self.store.write_bytes(buf.getvalue(), self.folder, f"date={now.date().isoformat()}", name)
        except Exception:
            log.exception("prediction log flush of %d rows failed; rows kept for the next flush", len(rows))
            with self._lock:
                self._rows[:0] = rows
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
            "Time per stage of a prediction",
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
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow-and-log")
    # Slots for jobs handed to the background thread; none free: shadow is skipped, never queued.
    slots = threading.BoundedSemaphore(MAX_PENDING_BACKGROUND)
    fallback: list[ModelBackend] = []  # built on first need: the same file Triton serves
    if models.champion is not None:
        metrics.model.labels("champion", models.champion.version).set(1)
    if models.shadow is not None:
        metrics.model.labels("shadow", models.shadow.version).set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        yield
        background.shutdown(wait=True)
        plog.close()

    app = FastAPI(
        title="Purchase propensity",
        description="How likely is a customer to buy in the next 30 days.",
        version="1",
        lifespan=lifespan,
    )
    app.state.prediction_log = plog
    app.state.metrics = metrics
    app.state.background = background

    def require_key(request: Request) -> None:
        if not s.auth_required:
            return
        given = request.headers.get(API_KEY_HEADER, "").encode()
        if not any(hmac.compare_digest(given, k) for k in keys):
            metrics.errors.labels("unauthorized").inc()
            metrics.requests.labels("predict", "401").inc()
            raise HTTPException(401, f"missing or invalid API key (header {API_KEY_HEADER})")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_request").inc()
        metrics.requests.labels(request.url.path.strip("/") or "root", "422").inc()
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    def _score(x: np.ndarray) -> tuple[np.ndarray, ModelBackend, bool]:
        assert models.champion is not None
        try:
            return models.champion.predict(x), models.champion, False
        except BackendUnavailable as exc:
            metrics.errors.labels("backend_down").inc()
            if not s.fallback_to_inprocess:
                raise HTTPException(503, f"model server unavailable: {exc}") from exc
            log.warning("model server down, scoring in-process: %s", exc)
            if not fallback:
                fallback.append(InProcessBackend.from_repository(settings, models.champion.version))
            return fallback[0].predict(x), fallback[0], True

    def _after_response(rows: list[dict[str, Any]], x: np.ndarray) -> None:
        try:
            if models.shadow is not None:
                try:
                    scores = models.shadow.predict(x)
                    for row, sc in zip(rows, scores, strict=True):
                        row["shadow_version"], row["shadow_score"] = models.shadow.version, float(sc)
                    metrics.shadow.labels("scored").inc()
                except Exception as exc:
                    metrics.shadow.labels("failed").inc()
                    log.warning("shadow v%s failed: %s", models.shadow.version, exc)
            plog.append(rows)
            metrics.logged.inc(len(rows))
        except Exception:
            log.exception("prediction log append failed")
        finally:
            slots.release()

    @app.post(
        "/predict",
        response_model=Prediction | BatchPrediction,
        dependencies=[Depends(require_key)],
        responses={401: {}, 404: {}, 413: {}, 422: {}, 503: {}},
    )
    def predict(body: PredictRequest, response: Response) -> Prediction | BatchPrediction:
        """Score one customer (``customer_id``) or a batch (``customer_ids``)."""
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
            try:
                rows = source.get(ids)
            except FeatureStoreUnavailable as exc:
                metrics.errors.labels("feature_store_down").inc()
                raise HTTPException(503, str(exc)) from exc
            t1 = time.perf_counter()
            unknown = [cid for cid, ok in zip(ids, rows.found, strict=True) if not ok]
            if unknown and s.unknown_customer == "404":
                metrics.errors.labels("unknown_customer").inc()
                raise HTTPException(404, f"unknown customer id(s): {unknown[:10]}")
            x = np.ascontiguousarray(rows.values[:, order])
            scores, used, is_fallback = _score(x)
            t2 = time.perf_counter()
            metrics.stage.labels("features").observe(t1 - t0)
            metrics.stage.labels("model").observe(t2 - t1)
            response.headers["Server-Timing"] = (
                f"features;dur={(t1 - t0) * 1e3:.3f}, model;dur={(t2 - t1) * 1e3:.3f}"
            )
            preds = [
                Prediction(
                    customer_id=cid,
                    score=float(sc),
                    model_name=models.name,
                    model_version=used.version,
                    feature_timestamp=ts,
                    cold_start=not ok,
                    fallback=is_fallback,
                )
                for cid, sc, ts, ok in zip(ids, scores, rows.timestamps, rows.found, strict=True)
            ]
            request_id = uuid.uuid4().hex
            now = dt.datetime.now(dt.UTC)
            latency_ms = (time.perf_counter() - t0) * 1e3
            log_rows = [
                {
                    "request_id": request_id,
                    "logged_at": now,
                    "customer_id": p.customer_id,
                    **{
                        name: (None if np.isnan(v) else float(v))
                        for name, v in zip(served_names, x[i], strict=True)
                    },
                    "score": p.score,
                    "model_name": models.name,
                    "model_version": p.model_version,
                    "shadow_version": None,
                    "shadow_score": None,
                    "feature_timestamp": p.feature_timestamp,
                    "cold_start": p.cold_start,
                    "fallback": p.fallback,
                    "latency_ms": latency_ms,
                }
                for i, p in enumerate(preds)
            ]
            if slots.acquire(blocking=False):
                background.submit(_after_response, log_rows, x if models.shadow is not None else x[:0])
            else:
                metrics.shadow.labels("dropped").inc()
                plog.append(log_rows)
            if body.customer_id is not None:
                return preds[0]
            return BatchPrediction(predictions=preds)
        except HTTPException as exc:
            status = str(exc.status_code)
            raise
        finally:
            metrics.requests.labels("predict", status).inc()
            metrics.latency.labels("predict").observe(time.perf_counter() - t0)

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
