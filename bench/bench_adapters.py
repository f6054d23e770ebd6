"""Bench: each fast path resting on a dependency's internals against its public path, from one run.

Issue 15 keeps a private path only where it clearly wins. Sections (``--only`` picks some):

* ``feast``: online read of 1 and 8 customers through the model's FeatureService on the real Redis
  (a synthetic snapshot of ``--customers`` rows materialized by the project's engine). Three
  readers: Feast's private request helpers (``feast.utils._get_online_request_context``,
  ``_get_unique_entities``, ``_get_entity_key_protos``: what the API read with before issue 15,
  kept here only to re-measure), the public resolution + ``provider.online_read`` the API reads
  with now (``feast_compat.ProviderReader``), and ``get_online_features().to_dict()`` (its
  fallback, ``ServiceReader``). The three must return the same rows (checked first).
* ``materialize``: rows/s into Redis, the project's engine (``ArrowRedisEngine``) vs Feast's stock
  local engine on the same snapshot; every hash must be byte-identical.
* ``ge``: the validation suite on a real small day (Online Retail, collected at run time): GE's
  internal V1 ``Validator`` vs ``Batch.validate`` vs ``ValidationDefinition.run``; same results.
* ``spark``: a fresh ``local[1]`` session's first Python task (the batch worker's imports) with
  PySpark's worker daemon, with the project's preloading daemon, and with it but scikit-learn
  left visible to xgboost; each in its own process (a fresh JVM), alternating, ``--spark-rounds``.
* ``api``: ``POST /predict`` p50/p99 and the server's CPU per request at concurrency 1 and 8
  (bench_api.py's client), the same app answering through the ``DirectRoute`` middleware, a plain
  Starlette ``Route`` and FastAPI's route; one server process each, alternating rounds; same
  answers checked first. Then the routing alone, in-process, with a constant answer.

    .venv/bin/python bench/bench_adapters.py [--only feast,materialize,ge,spark,api]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchline import bench_line

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SECTIONS = ("feast", "materialize", "ge", "spark", "api")


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(samples, q))


def loopback(redis: str) -> tuple[str, int]:
    host, port = redis.split(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback Redis only")
    return host, int(port)


# -- Feast: online read ---------------------------------------------------------------------


class PrivateReader:
    """The API's read before issue 15, on Feast's private request helpers (re-measured here only)."""

    path = "private request context"

    def __init__(self, store: Any, service: Any, columns: Sequence[str], entity_key: str) -> None:
        from feast import utils as feast_utils

        self.store, self.entity_key, self.fu = store, entity_key, feast_utils
        column = {name: j for j, name in enumerate(columns)}
        (_, _, join_keys, entity_types, _, grouped_refs, *_) = feast_utils._get_online_request_context(
            store.registry, store.project, service, False
        )
        self.join_keys, self.entity_type = join_keys, entity_types[entity_key]
        self.views = [
            (view, list(names), [(n, column[n]) for n in names if n in column])
            for view, names in grouped_refs
        ]
        self.provider = store._get_provider()
        self.n_columns = len(columns)

    def read(self, keys: Sequence[str]) -> Any:
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        from propensity.features.feast_compat import _Rows

        out = _Rows(len(keys), self.n_columns)
        protos = {self.entity_key: python_values_to_proto_values(list(keys), self.entity_type)}
        for view, requested, columns in self.views:
            entities, destinations, _ = self.fu._get_unique_entities(view, protos, self.join_keys)
            read = self.provider.online_read(
                config=self.store.config,
                table=view,
                entity_keys=self.fu._get_entity_key_protos(entities),
                requested_features=list(requested),
            )
            out.merge(read, destinations, columns, feast_value_type_to_python_type)
        return out.rows()


def same_rows(a: Any, b: Any) -> bool:
    return (
        np.array_equal(a.values, b.values, equal_nan=True)
        and np.array_equal(a.found, b.found)
        and a.timestamps == b.timestamps
    )


def feast_settings(work: Path, project: str, redis: str, db: int) -> Any:
    from propensity.core.settings import committed_settings

    return committed_settings(
        zone_root=str(work / "zones"),
        cache_dir=str(work / "cache"),
        features={
            "online_store": "redis",
            "redis_connection": f"{redis},db={db},retry=null,socket_timeout=1",
            "feast_project": project,
            "registry": str(work / f"{project}-registry.db"),
        },
    )


def materialize_section(args: argparse.Namespace, work: Path, client: Any, tag: str) -> list[dict]:
    """Our engine vs Feast's stock local engine, rows/s, on the same snapshot; same bytes."""
    from propensity.features.store import feature_store, materialize_dates

    ours, stock = (feast_settings(work, f"{p}_{tag}", args.redis, args.db) for p in ("adp", "adp_stock"))
    feature_store(ours, apply=True)
    feature_store(stock, apply=True, engine="stock")
    t0 = time.perf_counter()
    result = materialize_dates(ours, [AS_OF])
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    materialize_dates(stock, [AS_OF], engine="stock")
    stock_s = time.perf_counter() - t0
    if result["write_path"] != "arrow-redis":
        raise SystemExit(f"our engine took the {result['write_path']} path")
    # Guard: byte for byte what Feast's own write produced, key for key.
    suffix, stock_suffix = ours.features.feast_project.encode(), stock.features.feast_project.encode()
    keys = sorted(client.scan_iter(match=b"*" + suffix, count=10_000))
    stock_keys = sorted(client.scan_iter(match=b"*" + stock_suffix, count=10_000))
    if len(keys) != args.customers or [k[: -len(suffix)] for k in keys] != [
        k[: -len(stock_suffix)] for k in stock_keys
    ]:
        raise SystemExit(f"the engines wrote other keys ({len(keys)} vs {len(stock_keys)})")
    for i in range(0, len(keys), 1000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[i : i + 1000] + stock_keys[i : i + 1000]:
                pipe.hgetall(key)
            got = pipe.execute()
        half = len(got) // 2
        if got[:half] != got[half:]:
            raise SystemExit("our engine's hashes differ from Feast's stock path")
    ours_rate, stock_rate = args.customers / ours_s, args.customers / stock_s
    print(
        f"materialize {args.customers:,} rows: ArrowRedisEngine {ours_s:.2f} s ({ours_rate:,.0f} rows/s), "
        f"Feast's stock engine {stock_s:.2f} s ({stock_rate:,.0f} rows/s); all hashes byte-identical"
    )
    feature_store(stock, engine="stock").teardown()
    return [
        {
            "what": f"materialize {args.customers:,} rows (rows/s)",
            "fast": ours_rate,
            "other": stock_rate,
            "unit": "rows/s",
            "higher_is_better": True,
        }
    ]


def feast_section(args: argparse.Namespace, work: Path, client: Any, tag: str) -> list[dict]:
    from propensity.features.feast_compat import ProviderReader, ServiceReader
    from propensity.features.spec import ENTITY_KEY, FEATURE_SERVICE
    from propensity.features.store import feature_store, materialize_dates
    from propensity.serving.feature_source import FeastFeatureSource

    settings = feast_settings(work, f"adp_{tag}", args.redis, args.db)
    store = feature_store(settings, apply=True)
    if not any(True for _ in client.scan_iter(match=f"*{settings.features.feast_project}", count=1000)):
        materialize_dates(settings, [AS_OF])
    source = FeastFeatureSource(store, FEATURE_SERVICE)
    if source.path != "online_read":
        raise SystemExit(f"the API reads through {source.path}, not online_read")
    columns = source.feature_names
    readers = [
        cls(store, source.service, columns, ENTITY_KEY)
        for cls in (PrivateReader, ProviderReader, ServiceReader)
    ]
    rng = random.Random(0)
    ids = [f"B{i:07d}" for i in range(args.customers)]
    # Guard: the same rows from the three (unknown ids and repeats included).
    for batch in [rng.sample(ids, 8) + ["nobody", ids[0], ids[0]] for _ in range(50)]:
        first = readers[0].read(batch)
        for reader in readers[1:]:
            if not same_rows(first, reader.read(batch)):
                raise SystemExit(f"{reader.path} reads other rows than {readers[0].path} for {batch}")
    print(f"correctness guard: the three readers return the same rows ({len(columns)} model features)")
    lines = []
    for n in (1, 8):
        batches = [rng.sample(ids, n) for _ in range(args.calls)]
        times: dict[str, list[float]] = {r.path: [] for r in readers}
        for batch in batches[:200]:  # warm-up: connections, registry cache
            for reader in readers:
                reader.read(batch)
        for k, batch in enumerate(batches):
            for reader in readers[k % 3 :] + readers[: k % 3]:  # rotate who goes first
                t0 = time.perf_counter()
                reader.read(batch)
                times[reader.path].append((time.perf_counter() - t0) * 1e3)
        for path, ms in times.items():
            print(
                f"  online read {n} customer(s), {path:<26} p50 {pct(ms, 50):.3f} ms  p99 {pct(ms, 99):.3f} ms"
            )
        private, public, service = (times[r.path] for r in readers)
        for q in (50, 99):
            lines.append(
                {
                    "what": f"Feast online read {n} customer(s) p{q}: private context vs public online_read",
                    "fast": pct(private, q),
                    "other": pct(public, q),
                    "unit": "ms",
                }
            )
            lines.append(
                {
                    "what": f"Feast online read {n} customer(s) p{q}: public online_read vs get_online_features",
                    "fast": pct(public, q),
                    "other": pct(service, q),
                    "unit": "ms",
                }
            )
    store.teardown()
    return lines


# -- Great Expectations ---------------------------------------------------------------------


def ge_section(args: argparse.Namespace, work: Path) -> list[dict]:
    from bench_validate import REAL_DAY, real_day, synthetic_day

    from propensity.core.settings import committed_settings
    from propensity.ingest.expectations import build_checks
    from propensity.ingest.ge_compat import quiet_great_expectations
    from propensity.ingest.ge_runner import _cached_batch_definition
    from propensity.ingest.validate import learn_bands

    quiet_great_expectations()
    settings = committed_settings(zone_root=str(work / "ge-zones"), cache_dir=str(work / "ge-cache"))
    days = [(f"real day {REAL_DAY}", real_day(settings), REAL_DAY, args.ge_repeat)]
    if args.ge_rows:
        day = REAL_DAY + dt.timedelta(days=1)
        days.append(("synthetic day", synthetic_day(settings, args.ge_rows, day), day, 3))
    context, batch = _cached_batch_definition("pandas")
    lines = []
    for label, frame, day, repeat in days:
        checks = build_checks(settings, learn_bands(settings, day, [], rows=len(frame)))
        times = ge_paths(context, batch, frame, checks, repeat)
        print(
            f"GE suite ({len(checks)} expectations), {label} ({len(frame):,} lines), same results from each path:"
        )
        for p, t in times.items():
            print(f"  {p:<26} median {statistics.median(t) * 1e3:.0f} ms  best {min(t) * 1e3:.0f} ms")
        private = statistics.median(times["V1 Validator"])
        lines += [
            {
                "what": f"GE suite, {label} ({len(frame):,} lines): Validator vs {p}",
                "fast": private * 1e3,
                "other": statistics.median(times[p]) * 1e3,
                "unit": "ms",
            }
            for p in ("Batch.validate", "ValidationDefinition.run")
        ]
    return lines


def ge_paths(context: Any, batch: Any, frame: Any, checks: list[Any], repeat: int) -> dict[str, list[float]]:
    """Seconds per run of each path (rotating which goes first), after checking they agree."""
    import great_expectations as gx
    import pandas as pd

    from propensity.ingest.ge_compat import validate_suite
    from propensity.ingest.ge_runner import RESULT_FORMAT, STRING_STORAGE

    def suite(name: str = "events") -> Any:
        return gx.ExpectationSuite(name=name, expectations=[copy.copy(c.expectation) for c in checks])

    def via_definition() -> Any:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        stored = context.suites.add(suite(name))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=stored)
        )
        try:
            return definition.run(
                batch_parameters={"dataframe": frame}, result_format=copy.deepcopy(RESULT_FORMAT)
            )
        finally:
            context.validation_definitions.delete(name)
            context.suites.delete(name)

    paths: dict[str, Callable[[], Any]] = {
        "V1 Validator": lambda: validate_suite(
            batch, frame, suite(), copy.deepcopy(RESULT_FORMAT), via="validator"
        ),
        "Batch.validate": lambda: validate_suite(
            batch, frame, suite(), copy.deepcopy(RESULT_FORMAT), via="batch"
        ),
        "ValidationDefinition.run": via_definition,
    }

    def summary(validation: Any) -> list[tuple]:
        out = []
        for r in validation.results:
            res = r.result or {}
            out.append(
                (
                    r.expectation_config.meta["check"],
                    bool(r.success),
                    res.get("unexpected_count"),
                    json.dumps(res.get("observed_value"), default=str, sort_keys=True),
                    json.dumps(res.get("unexpected_index_list"), default=str, sort_keys=True),
                )
            )
        return sorted(out)

    times: dict[str, list[float]] = {p: [] for p in paths}
    with pd.option_context("mode.string_storage", STRING_STORAGE):
        answers = {p: summary(fn()) for p, fn in paths.items()}  # also the warm-up
        if len({json.dumps(a) for a in answers.values()}) != 1:
            raise SystemExit("the GE paths give different results")
        order = list(paths)
        for k in range(repeat):
            for p in order[k % 3 :] + order[: k % 3]:
                t0 = time.perf_counter()
                paths[p]()
                times[p].append(time.perf_counter() - t0)
    return times


# -- Spark: the first Python task ------------------------------------------------------------

SKLEARN_DAEMON = "bench_daemon_sklearn_visible"


def _first_task(_: Any) -> list[dict]:
    import os
    import sys
    import time

    t0 = time.perf_counter()
    preloaded = "propensity.batch.worker" in sys.modules
    import xgboost  # noqa: F401

    import propensity.batch.worker  # noqa: F401

    return [
        {
            "pid": os.getpid(),
            "preloaded": preloaded,
            "sklearn": "sklearn" in sys.modules,
            "imports_s": time.perf_counter() - t0,
        }
    ]


def spark_child(variant: str, folder: str) -> None:
    """One fresh session: how long its first and second Python task take (JSON on stdout)."""
    from propensity.core.spark import PYTHON_DAEMON, spark_session

    daemon = {"pyspark": None, "ours": PYTHON_DAEMON, "ours-sklearn": SKLEARN_DAEMON}[variant]
    if daemon == SKLEARN_DAEMON:
        Path(folder, f"{SKLEARN_DAEMON}.py").write_text(
            "import sklearn  # noqa: F401  (visible: xgboost imports its scikit-learn wrappers)\n"
            "from propensity.batch.spark_daemon import main\n\nmain()\n"
        )
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, os.environ.get("PYTHONPATH", "")])
    spark = spark_session(master="local[1]", app_name=f"bench-adapters-{variant}", python_daemon=daemon)
    spark.sparkContext.setLogLevel("ERROR")
    sc = spark.sparkContext
    spark.range(1).count()  # the JVM's first job, no Python worker: not what is measured
    t0 = time.perf_counter()
    (first,) = sc.parallelize([0], 1).mapPartitions(_first_task).collect()
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    (second,) = sc.parallelize([0], 1).mapPartitions(_first_task).collect()
    second_s = time.perf_counter() - t0
    spark.stop()
    print(
        "RESULT " + json.dumps({"first_s": first_s, "second_s": second_s, "first": first, "second": second})
    )


def spark_section(args: argparse.Namespace, work: Path) -> list[dict]:
    variants = ("pyspark", "ours", "ours-sklearn")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for k in range(args.spark_rounds):
        for v in variants[k % 3 :] + variants[: k % 3]:
            done = subprocess.run(
                [PY, __file__, "--spark-child", v, "--work", str(work)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYSPARK_PYTHON": PY, "PYSPARK_DRIVER_PYTHON": PY},
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                raise SystemExit(f"spark child {v} failed: {done.stderr[-3000:]}")
            runs[v].append(json.loads(line[len("RESULT ") :]))
    ours = runs["ours"][0]["first"]
    if not ours["preloaded"] or ours["sklearn"] or runs["pyspark"][0]["first"]["preloaded"]:
        raise SystemExit(f"the daemon setting was not honoured: {runs}")
    print(
        f"Spark local[1], a fresh session's Python tasks (the batch worker's imports), {args.spark_rounds} rounds "
        "(first: the daemon starts; second: a new worker forked from it):"
    )
    med: dict[tuple[str, str], float] = {}
    for v in variants:
        for which in ("first", "second"):
            med[v, which] = statistics.median(r[f"{which}_s"] for r in runs[v])
        print(
            f"  {v:<14} first task median {med[v, 'first']:.2f} s "
            f"(runs {', '.join(format(r['first_s'], '.2f') for r in runs[v])}), second {med[v, 'second']:.2f} s; "
            f"imports inside a task {statistics.median(r['second']['imports_s'] for r in runs[v]):.2f} s"
        )
    lines = []
    for which, what in (("first", "first task (daemon start)"), ("second", "task on a new worker")):
        lines.append(
            {
                "what": f"Spark {what}: preloading daemon vs PySpark's",
                "fast": med["ours", which],
                "other": med["pyspark", which],
                "unit": "s",
            }
        )
        lines.append(
            {
                "what": f"Spark {what}: daemon with sklearn hidden vs visible",
                "fast": med["ours", which],
                "other": med["ours-sklearn", which],
                "unit": "s",
            }
        )
    return lines


# -- the API: DirectRoute vs Starlette Route vs FastAPI route --------------------------------


def serve_child(variant: str, port: int) -> None:
    """The prediction app with /predict answered by ``variant``; uvicorn as ``propensity serve`` runs it."""
    import logging

    import uvicorn
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from propensity.core.settings import get_settings
    from propensity.serving.app import create_app
    from propensity.serving.starlette_compat import DirectRoute

    logging.basicConfig(level=logging.WARNING)
    app = create_app(get_settings())
    (api_route,) = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path == "/predict"]
    # Start from FastAPI's route alone: whatever answers /predict before it goes.
    app.user_middleware = [m for m in app.user_middleware if m.cls is not DirectRoute]
    app.router.routes[:] = [
        r for r in app.router.routes if isinstance(r, APIRoute) or getattr(r, "path", None) != "/predict"
    ]
    endpoint = api_route.endpoint  # async (request) -> Response: what every variant answers with
    if variant == "route":
        app.router.routes.insert(0, Route("/predict", endpoint, methods=["POST"]))
    elif variant == "direct":

        async def answer(raw: bytes, headers: Any) -> Any:
            return await endpoint(_Buffered(raw, headers))

        app.add_middleware(DirectRoute, method="POST", path="/predict", answer=answer)
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


class _Buffered:
    """What the /predict endpoint reads of a request: its body and headers."""

    def __init__(self, raw: bytes, headers: Any) -> None:
        self.raw, self.headers = raw, headers

    async def body(self) -> bytes:
        return self.raw

    async def stream(self) -> Any:  # the endpoint reads the body as a stream (its size limit)
        yield self.raw


def framework_overhead(calls: int = 5000, repeat: int = 7) -> dict[str, float]:
    """Microseconds per POST /predict of the routing alone: each variant in-process, a constant answer."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from starlette.routing import Route

    from propensity.serving.starlette_compat import install_direct_route

    async def answer(raw: bytes, headers: Any) -> Response:
        return Response(b'{"score": 0.5}', media_type="application/json")

    def build(variant: str) -> FastAPI:
        app = FastAPI()

        @app.post("/predict")
        async def predict(request: Request) -> Response:
            return await answer(await request.body(), request.headers)

        @app.get("/healthz")
        def healthz() -> dict:
            return {}

        if variant == "direct":
            install_direct_route(app, "POST", "/predict", answer)
        elif variant == "route":
            app.router.routes.insert(0, Route("/predict", predict, methods=["POST"]))
        return app

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api"), (b"content-type", b"application/json"), (b"content-length", b"24")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    message = {"type": "http.request", "body": b'{"customer_id": "17850"}', "more_body": False}

    async def receive() -> dict:
        return message

    async def send(_: dict) -> None:
        return None

    async def per_call(app: FastAPI, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    async def run() -> dict[str, float]:
        apps = {v: build(v) for v in ("direct", "route", "fastapi")}
        for app in apps.values():
            await per_call(app, 1000)
        samples: dict[str, list[float]] = {v: [] for v in apps}
        for _ in range(repeat):
            for v, app in apps.items():
                samples[v].append(await per_call(app, calls))
        return {v: statistics.median(x) for v, x in samples.items()}

    return asyncio.run(run())


def api_section(args: argparse.Namespace, work: Path) -> list[dict]:
    import http.client

    from bench_api import (
        KEY,
        cpu_seconds,
        free_port,
        http_request,
        load,
        make_model_and_features,
        pooled,
        serving_env,
        stop,
        wait_http,
        write_online,
    )

    from propensity.core.settings import Settings
    from propensity.features.spec import MODEL_FEATURES
    from propensity.features.store import feature_store
    from propensity.serving.deploy import deploy_model

    env = serving_env(work / "api", args.redis, args.db, f"adp_api_{uuid.uuid4().hex[:8]}")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("PROPENSITY_")})
    try:
        settings = Settings()  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    booster, rows = make_model_and_features(MODEL_FEATURES)
    deploy_model(settings, booster, 1, "champion")
    store = feature_store(settings, apply=True)
    write_online(store, rows)

    variants = ("direct", "route", "fastapi")
    ports = {v: free_port() for v in variants}
    procs: dict[str, subprocess.Popen] = {}
    rng = np.random.default_rng(1)
    ids = list(rows)
    headers = {"content-type": "application/json", "X-API-Key": KEY}
    bodies = [json.dumps({"customer_id": ids[i]}).encode() for i in rng.integers(0, len(ids), args.requests)]
    requests = [http_request("/predict", b, headers) for b in bodies]
    results: dict[str, dict[int, dict]] = {v: {} for v in variants}
    try:
        for v in variants:
            procs[v] = subprocess.Popen(
                [PY, __file__, "--serve", v, "--port", str(ports[v])],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=open(work / f"api-{v}.log", "wb"),  # noqa: SIM115 - closed with the process
            )
        for v in variants:
            wait_http(ports[v], "/readyz", procs[v])
        # Same answers first, including the error statuses the answer path produces itself.
        probes = [
            (bodies[0], headers),
            (b'{"customer_ids": ["%s", "%s"]}' % (ids[1].encode(), ids[2].encode()), headers),
            (b'{"customer_id": 12}', headers),
            (b"not json", headers),
            (bodies[0], {"content-type": "application/json", "X-API-Key": "wrong"}),
        ]
        statuses = []
        for body, hdrs in probes:
            seen = set()
            for v in variants:
                conn = http.client.HTTPConnection("127.0.0.1", ports[v], timeout=10)
                conn.request("POST", "/predict", body=body, headers=hdrs)
                r = conn.getresponse()
                seen.add((r.status, r.getheader("content-type"), r.read()))
            if len(seen) != 1:
                raise SystemExit(f"the variants answer {body!r} differently: {seen}")
            statuses.append(next(iter(seen))[0])
        print(f"correctness guard: the three variants answer {len(probes)} probes identically ({statuses})")
        for c in (1, 8):
            for v in variants:
                load(ports[v], requests[: min(300, len(requests))], c)
            rounds: dict[str, list[dict]] = {v: [] for v in variants}
            cpu = dict.fromkeys(variants, 0.0)
            for k in range(args.rounds):
                for v in variants[k % 3 :] + variants[: k % 3]:
                    before = cpu_seconds(procs[v])
                    rounds[v].append(load(ports[v], requests, c))
                    cpu[v] += cpu_seconds(procs[v]) - before
            for v in variants:
                results[v][c] = pooled(rounds[v])
                results[v][c]["cpu_us"] = cpu[v] / (args.rounds * len(requests)) * 1e6
    finally:
        for proc in procs.values():
            stop(proc)
        store.teardown()
    print(f"API POST /predict, {args.requests} requests x {args.rounds} rounds per level and variant:")
    print(f"  {'variant':<10}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'server CPU us/req':>19}")
    for v in variants:
        for c in (1, 8):
            r = results[v][c]
            print(f"  {v:<10}{c:>5}{r['p50']:>9.3f}{r['p99']:>9.3f}{r['rps']:>9.0f}{r['cpu_us']:>19.0f}")
    routing = framework_overhead()
    print(
        "  routing alone, in-process (a constant answer): "
        + ", ".join(f"{v} {us:.1f} us" for v, us in routing.items())
        + " per request"
    )
    lines = [
        {
            "what": f"API routing alone per request: DirectRoute vs {other}",
            "fast": routing["direct"],
            "other": routing[other],
            "unit": "us",
        }
        for other in ("route", "fastapi")
    ]
    for other in ("route", "fastapi"):
        for c in (1, 8):
            for q in ("p50", "p99", "cpu_us"):
                lines.append(
                    {
                        "what": f"API {q.replace('cpu_us', 'server CPU per request')} at concurrency {c}: "
                        f"DirectRoute vs {other}",
                        "fast": results["direct"][c][q],
                        "other": results[other][c][q],
                        "unit": "us" if q == "cpu_us" else "ms",
                    }
                )
    return lines


# -- main -----------------------------------------------------------------------------------

AS_OF = dt.date(2011, 12, 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--customers", type=int, default=50_000, help="snapshot rows (materialize, feast)")
    parser.add_argument("--calls", type=int, default=2000, help="online reads per batch size and reader")
    parser.add_argument("--ge-repeat", type=int, default=9, help="GE runs per path on the real day")
    parser.add_argument("--ge-rows", type=int, default=1_000_000, help="synthetic day's lines (0: none)")
    parser.add_argument("--spark-rounds", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=2000, help="API requests per level, variant and round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="API rounds per level")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--db", type=int, default=10)
    parser.add_argument("--spark-child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spark_child:
        spark_child(args.spark_child, args.work)
        return 0
    if args.serve:
        serve_child(args.serve, args.port)
        return 0

    import redis

    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}")
    host, port = loopback(args.redis)
    client = redis.Redis(host=host, port=port, db=args.db)
    work = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    tag = uuid.uuid4().hex[:8]
    print(f"bench_adapters: {os.cpu_count()} cores, load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    lines: list[dict] = []
    try:
        if {"materialize", "feast"} & set(only):
            from bench_feast import synthetic_snapshot

            from propensity.core.storage import write_partition
            from propensity.core.zones import SNAPSHOTS, zone_store

            s = feast_settings(work, f"adp_{tag}", args.redis, args.db)
            write_partition(zone_store(s), *SNAPSHOTS, AS_OF, synthetic_snapshot(args.customers))
        if "materialize" in only:
            lines += materialize_section(args, work, client, tag)
        if "feast" in only:
            lines += feast_section(args, work, client, tag)
        if "ge" in only:
            lines += ge_section(args, work)
        if "spark" in only:
            lines += spark_section(args, work)
        if "api" in only:
            lines += api_section(args, work)
    finally:
        for key in client.scan_iter(match=f"*adp*{tag}", count=10_000):
            client.delete(key)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'figure (A vs B)':<90}{'A':>12}{'B':>12}{'A/B':>7}")
    for line in lines:
        ratio = line["fast"] / line["other"]
        print(f"{line['what']:<90}{line['fast']:>12.3f}{line['other']:>12.3f}{ratio:>7.2f}")
    for line in lines:
        goal = "higher is better" if line.get("higher_is_better", False) else "lower is better"
        print(bench_line(line["what"], line["fast"], line["other"], goal, None, line["unit"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
