"""The prediction API: online features from Feast, the champion's score, shadow scoring, a request log.

``create_app(settings)`` builds a FastAPI app; ``propensity serve`` (``make serve``)
runs it with uvicorn. The response path is: validate -> online features -> champion score ->
answer. Requests are read on the event loop (no thread-pool hop per request); the ones that
arrive while a lookup runs wait for it and then go together, one online-store read and one
model call for all of them, on one thread of their own (:class:`MicroBatcher`, Triton's dynamic
batching in-process). Everything else (the challenger's shadow score, the prediction log) runs
on one background thread that catches up every few tens of milliseconds
(:class:`OffPathWorker`), so it never adds to the champion's latency beyond a deque append.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.datastructures import Headers
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from pydantic_core import to_json

from propensity.core.storage import open_store
from propensity.serving.api_metrics import Metrics
from propensity.serving.auth import api_keys, key_ok, protected_paths
from propensity.serving.backends import BackendUnavailable, InProcessBackend, ModelBackend, backend_for
from propensity.serving.batching import Job, MicroBatcher, OffPathWorker
from propensity.serving.breaker import CircuitOpen
from propensity.serving.contract import API_KEY_HEADER, BatchPrediction, Contract, ErrorBody, Prediction
from propensity.serving.feature_source import FeatureSource, FeatureStoreUnavailable, feast_feature_source
from propensity.serving.hot_swap import DeploymentWatcher, deployment_key
from propensity.serving.manifest import deployed_model, read_deployment
from propensity.serving.request_log import LogRows, PredictionLog
from propensity.serving.starlette_compat import declared_too_large, install_direct_route
from propensity.serving.store_guard import StoreGuard

if TYPE_CHECKING:
    from propensity.core.settings import Settings

log = logging.getLogger(__name__)

MAX_PENDING_BACKGROUND = (
    10_000  # batches; past this, shadow scoring is skipped rather than queued without bound
)
OFF_PATH_INTERVAL_S = 0.05  # how often shadow scoring and logging catch up with the answers
MAX_ROWS_PER_LOOKUP = 256  # customers per merged lookup (a single request may still bring max_batch)


# -- the app ------------------------------------------------------------------------------
@dataclass
class _Models:
    name: str
    champion: ModelBackend | None
    shadow: ModelBackend | None
    feature_names: list[str] | None  # the champion's training order
    problem: str | None = None  # why there is no champion
    key: tuple[Any, ...] = ()  # the deployment record's versions and hashes these models serve
    order: np.ndarray | None = None  # feature source column -> the champion's column
    served_names: list[str] | None = None

    def ordered_for(self, source: FeatureSource) -> _Models:
        """These models with the feature order they need from ``source`` (refused if it lacks one)."""
        if self.feature_names:
            missing = [f for f in self.feature_names if f not in source.feature_names]
            if missing:
                raise RuntimeError(f"the feature service lacks the model's features {missing}")
            self.order = np.array([source.feature_names.index(f) for f in self.feature_names])
        else:
            self.order = np.arange(len(source.feature_names))
        self.served_names = [source.feature_names[i] for i in self.order]
        return self


def _load_models(settings: Settings, state: dict[str, Any] | None = None) -> _Models:
    """What the deployment record says to serve, loaded (each file checked against its sha256)."""
    s = settings.serving
    state = read_deployment(settings) if state is None else state
    key = deployment_key(state)
    champ = deployed_model(settings, "champion", state=state)
    if champ is None:
        problem = f"no champion deployed in {s.repository}/{s.model_name}"
        return _Models(s.model_name, None, None, None, problem, key)
    champion = backend_for(settings, champ.version, sha256=champ.sha256)
    shadow = None
    entry = deployed_model(settings, "shadow", state=state)
    if s.shadow_enabled and entry is not None:
        try:
            shadow = backend_for(settings, entry.version, sha256=entry.sha256)
        except Exception as exc:  # a broken shadow must never take the champion down
            log.error("shadow v%s not loaded: %s", entry.version, exc)
    names = list(champ.feature_names) if champ.feature_names else None
    return _Models(s.model_name, champion, shadow, names, key=key)


def _online_marker(settings: Settings) -> dict[str, Any] | None:
    from propensity.features.store import read_online_marker

    return read_online_marker(settings)


def create_app(
    settings: Settings,
    feature_source: FeatureSource | None = None,
    backend: ModelBackend | None = None,
    *,
    shadow: ModelBackend | None = None,
) -> FastAPI:
    """The prediction API. Defaults: Feast features, the deployed champion (and shadow) backends."""
    s = settings.serving
    keys = api_keys(settings)
    if s.auth_required and not keys:
        raise RuntimeError(
            f"API keys required (serving.auth_required) but ${s.api_keys_env} is empty: "
            "set it to a comma-separated list of keys"
        )
    contract = Contract.from_settings(settings)
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
    # The one reference the request path reads (once per batch): a deploy replaces it whole.
    live = [models.ordered_for(source)]
    guard = StoreGuard(
        source,
        failures=s.breaker_failures,
        reset_s=s.breaker_reset_s,
        marker=lambda: _online_marker(settings),
    )
    zone = open_store(
        settings.zone_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    plog = PredictionLog(zone, s.prediction_log_dir, s.prediction_log_flush_rows, s.prediction_log_flush_s)
    fallback: dict[str, ModelBackend] = {}  # by version, built on first need: the file Triton serves

    def _publish(new: _Models, old: _Models | None) -> None:
        for role in ("champion", "shadow"):
            was, now = getattr(old, role, None), getattr(new, role)
            if was is not None and (now is None or now.version != was.version):
                metrics.model.labels(role, was.version).set(0)
            if now is not None:
                metrics.model.labels(role, now.version).set(1)

    _publish(models, None)

    def _swap(new: _Models) -> None:
        old, live[0] = live[0], new
        _publish(new, old)
        log.info(
            "serving %s v%s (shadow %s), was v%s",
            new.name,
            new.champion.version if new.champion else None,
            new.shadow.version if new.shadow else None,
            old.champion.version if old.champion else None,
        )

    # Only models loaded from the deployment record follow it (given backends are the caller's).
    watcher = DeploymentWatcher(
        lambda: read_deployment(settings),
        lambda state: _load_models(settings, state).ordered_for(source),
        _swap,
        models.key if backend is None else deployment_key({}),
        s.reload_interval_s if backend is None else 0,
    )
    ok_requests = metrics.requests.labels("predict", "200")
    latency = metrics.latency.labels("predict")
    stage_features, stage_model = metrics.stage.labels("features"), metrics.stage.labels("model")

    def _score(m: _Models, x: np.ndarray, requests: int) -> tuple[np.ndarray, ModelBackend, bool]:
        champion = m.champion
        assert champion is not None
        try:
            return champion.predict(x), champion, False
        except BackendUnavailable as exc:
            metrics.errors.labels("backend_down").inc(requests)
            if not s.fallback_to_inprocess:
                raise
            log.warning("model server down, scoring in-process: %s", exc)
            if champion.version not in fallback:
                fallback[champion.version] = InProcessBackend.from_repository(settings, champion.version)
            local = fallback[champion.version]
            return local.predict(x), local, True

    def _after_response(batches: list[LogRows]) -> None:
        """Shadow scores for every queued batch in one model call, then the log."""
        m = live[0]
        shadow = m.shadow
        # Rows served before a deploy may be in another feature order than this shadow's: not scored.
        same = [rows for rows in batches if rows.feature_names == m.served_names]
        rows_queued = sum(len(rows) for rows in same)  # the counters count customers, not batches
        if shadow is not None and same:
            try:
                scores = shadow.predict(np.concatenate([rows.features for rows in same]))
                metrics.shadow.labels("scored").inc(rows_queued)
            except Exception as exc:
                scores = None
                metrics.shadow.labels("failed").inc(rows_queued)
                log.warning("shadow v%s failed: %s", shadow.version, exc)
            start = 0
            for rows in same:
                if scores is not None:
                    rows.columns["shadow_version"] = [shadow.version] * len(rows)
                    rows.columns["shadow_score"] = np.asarray(scores[start : start + len(rows)], np.float64)
                start += len(rows)
        for rows in batches:
            plog.append(rows)
            metrics.logged.inc(len(rows))

    # Off the response path: shadow scores and the log, a few times a second at most.
    background = OffPathWorker(_after_response, OFF_PATH_INTERVAL_S, MAX_PENDING_BACKGROUND)

    def _score_batch(jobs: list[Job]) -> list[Response | HTTPException]:
        """One lookup and one model call for every job; then each job's answer, and one log hand-over."""
        t0 = time.perf_counter()
        m = live[0]  # this batch is answered wholly by these models, whatever a deploy does meanwhile
        if m.champion is None:
            return [HTTPException(503, m.problem or "no model") for _ in jobs]
        ids = [cid for job in jobs for cid in job.ids]
        try:
            rows = guard.get(ids)
            # Nobody found: unknown customers, or a store that lost its contents (then 503, not 404s).
            empty = guard.empty_reason(missed=True) if ids and not rows.found.any() else None
        except FeatureStoreUnavailable as exc:
            metrics.errors.labels("feature_store_down").inc(len(jobs))
            return [HTTPException(503, str(exc)) for _ in jobs]
        if empty:
            metrics.errors.labels("feature_store_empty").inc(len(jobs))
            return [HTTPException(503, empty) for _ in jobs]
        t1 = time.perf_counter()
        x = np.ascontiguousarray(rows.values[:, m.order])
        try:
            scores, used, is_fallback = _score(m, x, len(jobs))
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
                    "model_name": m.name,
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
                m.served_names,
                x,
                {
                    "score": np.asarray(scores, dtype=np.float64),
                    "model_name": [m.name] * n,
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
        watcher.start()
        yield
        watcher.close()
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
    app.state.deployment_watcher = watcher

    protected = protected_paths(settings, app)
    if s.auth_required and protected:

        @app.middleware("http")
        async def _key_for_side_endpoints(request: Request, call_next: Callable[..., Any]) -> Response:
            # /predict never gets here: DirectRoute answers it first (and checks the key itself).
            if request.url.path in protected and not key_ok(request.headers.get(API_KEY_HEADER, ""), keys):
                metrics.errors.labels("unauthorized").inc()
                return JSONResponse({"detail": f"missing or invalid API key (header {API_KEY_HEADER})"}, 401)
            return await call_next(request)

    def _invalid_response(path: str, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid_request").inc()
        metrics.requests.labels(path.strip("/") or "root", "422").inc()
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid_response(request.url.path, exc)

    body_limit = contract.body_limit()

    def before_body(headers: Headers) -> Response | None:
        """401 from the headers alone: a request without a valid key is never read."""
        if s.auth_required and not key_ok(headers.get(API_KEY_HEADER, ""), keys):
            metrics.errors.labels("unauthorized").inc()
            metrics.requests.labels("predict", "401").inc()
            return JSONResponse({"detail": f"missing or invalid API key (header {API_KEY_HEADER})"}, 401)
        return None

    def too_large(size: int) -> Response:
        metrics.errors.labels("body_too_large").inc()
        metrics.requests.labels("predict", "413").inc()
        detail = f"request body over {body_limit} bytes (serving.max_body_bytes); not read past {size}"
        return JSONResponse({"detail": detail}, 413)

    async def answer_predict(raw: bytes, headers: Headers) -> Response:
        """The answer to one POST /predict whose key and size were checked (``before_body``, the
        body limit): 200, or 404/413/422/503 with its reason."""
        try:
            body = contract.parse(raw, headers.get("content-type"))
        except RequestValidationError as exc:
            return _invalid_response("/predict", exc)
        t0 = time.perf_counter()
        status = "200"
        try:
            ids = body.ids
            if len(ids) > s.max_batch:
                metrics.errors.labels("batch_too_large").inc()
                raise HTTPException(
                    413, f"batch of {len(ids)} customer ids exceeds the limit of {s.max_batch}"
                )
            if live[0].champion is None:
                metrics.errors.labels("no_model").inc()
                raise HTTPException(503, live[0].problem or "no model")
            outcome = await batcher.submit(Job(ids, body.single, t0))
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
        responses={
            401: {"model": ErrorBody, "description": f"missing or invalid API key ({API_KEY_HEADER})"},
            404: {"model": ErrorBody, "description": "unknown customer (serving.unknown_customer = 404)"},
            413: {
                "model": ErrorBody,
                "description": f"more than {s.max_batch} customer ids, or a body over {body_limit} bytes",
            },
            422: {"model": ErrorBody, "description": "not a valid request: what is wrong and where"},
            503: {"model": ErrorBody, "description": "the online store or the model server is down"},
        },
        openapi_extra={"requestBody": contract.request_body()},
    )
    async def predict(request: Request) -> Response:
        """Score one customer (``customer_id``) or a batch (``customer_ids``)."""
        # What OpenAPI documents; requests are answered by the DirectRoute middleware before
        # FastAPI's routing, with this same function's answer (and the same limits, here too).
        if (early := before_body(request.headers)) is not None:
            return early
        if (declared := declared_too_large(request.headers, body_limit)) is not None:
            return too_large(declared)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > body_limit:
                return too_large(len(raw))
        return await answer_predict(bytes(raw), request.headers)

    # Per request, Starlette's and FastAPI's routing, middleware and parameter solving cost
    # more than a batch's feature lookup: /predict skips them.
    # bench_adapters, concurrency 8: 595 us CPU/request vs 646 (plain Starlette Route), 698 (FastAPI route)
    install_direct_route(
        app,
        "POST",
        "/predict",
        answer_predict,
        before_body=before_body,
        max_body=body_limit,
        too_large=too_large,
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {}})
    def readyz() -> JSONResponse:
        """Ready: a champion is loaded and served, and the online store answers."""
        reasons = []
        m = live[0]
        if m.champion is None:
            reasons.append(m.problem or "no model")
        elif not m.champion.ready():
            reasons.append(f"model {m.name} v{m.champion.version} not ready on its backend")
        try:
            guard.check()
            empty = guard.empty_reason()
            if empty:
                reasons.append(empty)
        except (FeatureStoreUnavailable, CircuitOpen) as exc:
            reasons.append(str(exc))
        marker = guard.marker()
        body = {
            "status": "not ready" if reasons else "ready",
            "online_snapshot": marker.get("as_of") if marker else None,
            "model_version": m.champion.version if m.champion else None,
            "shadow_version": m.shadow.version if m.shadow else None,
            "reasons": reasons,
            # A newer deployment this process could not load (the versions above keep serving).
            "deployment_problem": watcher.problem,
        }
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
