"""Bench: the prediction API vs ``mlflow models serve`` of the same model, side by side in one run.

Ours: ``propensity serve`` (uvicorn, one process) on loopback, reading each customer's
features from Feast with Redis as the online store (the real ``feature_repo/`` definitions and
FeatureService), scoring the deployed champion in-process, logging the request. The peer:
``mlflow models serve`` (one uvicorn worker) of the same booster, registered in MLflow, which only
runs the model: the client sends it the features inline. Goals (issue 6): p99 <= 10 ms at
concurrency 8, and throughput >= 2x the peer's.

Ours through Triton (issue 17): the same API with ``serving.backend: triton``, scoring on a real
Triton Inference Server (propensity.serving.triton_server, gRPC, the FIL stand-in backend) that
serves the same repository. Goals: p99 <= 10 ms at concurrency 8, throughput >= 5x the peer's.
Triton alone: tritonclient gRPC requests of 1 and 64 rows, one at a time, against the peer's
answers to the same rows sent inline.

The load generator is the same for both: a closed loop of ``concurrency`` keep-alive
connections on one asyncio event loop (uvloop where installed) in this process, each sending
its next request as soon as the previous answer is in. Requests are pre-built bytes and answers
are parsed only as far as the status line, Content-Length and Server-Timing, so the client
costs the two shared cores far less than http.client threads did (those also queued answers
behind the GIL, inflating every latency they measured). Each concurrency level runs
``--rounds`` times, alternating ours and the peer; the figures pool every round's requests
(p50/p99 over all of them, throughput = requests / time). The client's garbage collector is off
while it measures (this process holds MLflow, Feast and pandas: a full collection would stall
every request in flight). The load average and the CPU pressure (Linux PSI) are printed with the
figures: other work on the machine shows up in the p99 first.

The time split of one request comes from the API's Server-Timing header (feature lookup and
model, per batch of requests scored together; queue = waiting for that batch to start) and the
client's wall time (the rest: HTTP, validation, JSON, logging hand-off).

    .venv/bin/python bench/bench_api.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
KEY = "bench-key"
CUSTOMERS = 4372  # as many as the Online Retail history has
MODEL_NAME = "bench_propensity"
FEAST_PROJECT = "bench_api"
REDIS = os.environ.get("BENCH_REDIS", "127.0.0.1:6379")
REDIS_DB = 14  # away from the tests' db 0; the project's keys are torn down at the end
P99_GOAL_MS = 10.0
THROUGHPUT_GOAL = 2.0
TRITON_THROUGHPUT_GOAL = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model_and_features(features: tuple[str, ...]) -> tuple[Any, dict[str, np.ndarray]]:
    """A booster of the project's shape (depth 4, hundreds of trees) on customer-like features."""
    import xgboost as xgb

    rng = np.random.default_rng(7)
    n = CUSTOMERS
    x = np.column_stack(
        [rng.gamma(1.5, 30.0, n) if "days" in f or "spend" in f else rng.poisson(2.0, n) for f in features]
    ).astype(np.float32)
    from propensity.features.spec import INT_FEATURES

    for j, f in enumerate(features):
        if f in INT_FEATURES:  # stored as Int64 in Feast: the peer must get the same whole numbers
            x[:, j] = np.floor(x[:, j])
    logit = -0.03 * x[:, 0] + 0.4 * np.log1p(x[:, features.index("orders_90d")]) + rng.normal(0, 1, n)
    y = (logit > np.median(logit)).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.05, "nthread": 1, "seed": 7}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(features)), num_boost_round=300)
    ids = [str(12346 + i) for i in range(n)]
    return booster, {cid: x[i] for i, cid in enumerate(ids)}


def serving_env(work: Path, redis: str, db: int, project: str) -> dict[str, str]:
    """The environment of an API server on the loopback Redis with its files under ``work``."""
    return {
        **os.environ,
        "PROPENSITY_HOME": str(ROOT),
        "PROPENSITY_PROFILE": "local",
        "PROPENSITY_ZONE_ROOT": str(work / "zones"),
        "PROPENSITY_CACHE_DIR": str(work / "cache"),
        "PROPENSITY_FEATURES__ONLINE_STORE": "redis",
        "PROPENSITY_FEATURES__REDIS_CONNECTION": f"{redis},db={db},retry=null,socket_timeout=1",
        "PROPENSITY_FEATURES__REGISTRY": str(work / "registry.db"),
        "PROPENSITY_FEATURES__FEAST_PROJECT": project,
        "PROPENSITY_FEATURES__TTL_DAYS": "36500",  # the bench's snapshot must not expire
        "PROPENSITY_SERVING__REPOSITORY": str(work / "models"),
        "PROPENSITY_SERVING__SHADOW_ENABLED": "false",
        "PROPENSITY_API_KEYS": KEY,
    }


def write_online(store: Any, rows: dict[str, np.ndarray]) -> None:
    """The customers' features as one snapshot in the online store (what materialize would write)."""
    import pandas as pd

    from propensity.features.spec import FEATURE_VIEW, INT_FEATURES, MODEL_FEATURES

    ts = pd.Timestamp("2011-12-09", tz="UTC")
    frame = pd.DataFrame({"customer_id": list(rows), "as_of": ts, "event_timestamp": ts})
    for j, name in enumerate(MODEL_FEATURES):
        cast = int if name in INT_FEATURES else float
        frame[name] = [cast(v[j]) for v in rows.values()]
    # A string field of the service, as in production: stored and read, never fed to the model.
    frame["country"] = "unknown"
    store.write_to_online_store(FEATURE_VIEW, frame)


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on :{port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server on :{port} not ready in {timeout_s:.0f} s")


def stop(proc: subprocess.Popen | None) -> None:
    """End the server and its children: each was started as the leader of its own group."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request in flight, its answer parsed minimally."""

    def __init__(self) -> None:
        self.buffer = b""
        self.need: int | None = None  # bytes of the whole answer, once its head is in
        self.head: tuple[int, str] = (0, "")
        self.answer: asyncio.Future[tuple[int, str]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            length, timing = 0, ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "server-timing":
                    timing = value.strip()
            self.head = (int(lines[0].split(" ", 2)[1]), timing)
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            self.buffer, self.need = self.buffer[self.need :], None
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(self.head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"connection closed: {exc}"))


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{head}content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def _closed_loop(port: int, requests: list[bytes], concurrency: int) -> dict:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    timings: list[str] = []
    errors: list[int] = []

    async def connection(chunk: list[bytes]) -> None:
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        assert conn.transport is not None
        try:
            for request in chunk:
                conn.answer = loop.create_future()
                t = time.perf_counter()
                conn.transport.write(request)
                status, timing = await conn.answer
                lat.append((time.perf_counter() - t) * 1e3)
                timings.append(timing)
                if status != 200:
                    errors.append(status)
        finally:
            conn.transport.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection(requests[i::concurrency]) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests on :{port}, e.g. HTTP {errors[0]}")
    return {"lat": lat, "timings": timings, "wall": wall}


def load(port: int, requests: list[bytes], concurrency: int) -> dict:
    """Send every request once over ``concurrency`` keep-alive connections, closed loop; ms."""
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # the stdlib loop: slower, the same for both servers
        run = asyncio.run
    # This process holds MLflow, Feast and pandas: a full collection here would stall every
    # request in flight for a hundred milliseconds or more and be counted as the server's latency.
    gc.collect()
    gc.disable()
    try:
        return run(_closed_loop(port, requests, concurrency))
    finally:
        gc.enable()


def pooled(rounds: list[dict]) -> dict:
    """p50/p99 over every request of every round; throughput = requests / time."""
    lat = [x for r in rounds for x in r["lat"]]
    q = np.percentile(lat, [50, 99])
    return {
        "p50": float(q[0]),
        "p99": float(q[1]),
        "rps": len(lat) / sum(r["wall"] for r in rounds),
        "lat": lat,
        "timings": [t for r in rounds for t in r["timings"]],
        "rounds_p99": [float(np.percentile(r["lat"], 99)) for r in rounds],
        "cpu_ms": {  # mean over the rounds (each round has the same number of requests)
            k: statistics.mean(r["cpu_ms"][k] for r in rounds) for k in rounds[0].get("cpu_ms", {})
        },
    }


def cpu_pressure() -> float | None:
    """Linux PSI: % of the last 10 s in which some runnable task waited for a CPU (None: no PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(dict(kv.split("=") for kv in line.split()[1:])["avg10"])


def batch_counts(port: int) -> tuple[float, float]:
    """(lookups, requests) so far, from the API's propensity_api_batch_requests histogram."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    found = dict(re.findall(r"^propensity_api_batch_requests_(count|sum) ([\d.e+]+)$", text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


def cpu_seconds(proc: subprocess.Popen | None) -> float:
    """User + system CPU of a process and its children so far (tritonserver's backend stubs too)."""
    import psutil

    if proc is None or proc.poll() is not None:
        return 0.0
    total = 0.0
    root = psutil.Process(proc.pid)
    for p in (root, *root.children(recursive=True)):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def timed_load(port: int, reqs: list[bytes], c: int, procs: dict[str, Any]) -> dict:
    """``load`` plus each process's CPU ms per request over it (the client is this process)."""
    before = {k: cpu_seconds(p) for k, p in procs.items()}
    t = os.times()
    result = load(port, reqs, c)
    t2 = os.times()
    n = len(result["lat"])
    cpu = {k: (cpu_seconds(p) - before[k]) * 1e3 / n for k, p in procs.items()}
    cpu["client"] = ((t2.user - t.user) + (t2.system - t.system)) * 1e3 / n
    result["cpu_ms"] = cpu
    return result


def split_of(result: dict) -> dict[str, float]:
    """Median feature lookup, model and queue time (Server-Timing) and the rest of the client's wall time."""
    parts = [dict(re.findall(r"(\w+);dur=([\d.]+)", header)) for header in result["timings"]]
    f = statistics.median(float(p["features"]) for p in parts)
    m = statistics.median(float(p["model"]) for p in parts)
    q = statistics.median(float(p.get("queue", 0.0)) for p in parts)
    total = statistics.median(result["lat"])
    inside = [float(p["features"]) + float(p["model"]) + float(p.get("queue", 0.0)) for p in parts]
    return {
        "features": f,
        "model": m,
        "queue": q,
        "framework": total - f - m - q,
        "total": total,
        "inside_p99": float(np.percentile(inside, 99)),
    }


def peak_rss_mb(proc: subprocess.Popen | None) -> float | None:
    """The process's peak resident memory (VmHWM), MB; None once it has exited."""
    try:
        text = Path(f"/proc/{proc.pid}/status").read_text() if proc else ""
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) / 1024 if found else None


def triton_alone(url: str, model: str, x: np.ndarray, rows: int, n: int) -> dict:
    """``n`` tritonclient gRPC requests of ``rows`` rows, one at a time: ms per request, rows/s."""
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(url)
    inputs = []
    for i in range(min(n, 200)):
        inp = tg.InferInput("input__0", [rows, x.shape[1]], "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(x[np.arange(i * rows, (i + 1) * rows) % len(x)]))
        inputs.append(inp)
    outputs = [tg.InferRequestedOutput("output__0")]
    for inp in inputs[:50]:  # warm
        client.infer(model, [inp], model_version="1", outputs=outputs)
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        client.infer(model, [inputs[i % len(inputs)]], model_version="1", outputs=outputs)
        lat.append((time.perf_counter() - t) * 1e3)
    wall = time.perf_counter() - t0
    q = np.percentile(lat, [50, 99])
    return {"p50": float(q[0]), "p99": float(q[1]), "rows_s": n * rows / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per concurrency level, server and round"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per level, alternating ours and the peer"
    )
    args = parser.parse_args()

    import pandas as pd

    from propensity.core.settings import Settings
    from propensity.features.spec import MODEL_FEATURES
    from propensity.features.store import feature_store
    from propensity.serving.deploy import deploy_model

    work = Path(tempfile.mkdtemp(prefix="bench_api_"))
    env = {
        **serving_env(work, REDIS, REDIS_DB, FEAST_PROJECT),
        "PROPENSITY_TRAINING__MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
        "PROPENSITY_TRAINING__MLFLOW_ARTIFACT_ROOT": str(work / "mlartifacts"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        # mlflow models serve execs `uvicorn` by name: the venv's, not whatever PATH finds first.
        "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DO_NOT_TRACK": "1",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith(("PROPENSITY_", "MLFLOW_"))})
    settings = Settings()  # type: ignore[call-arg]

    booster, rows = make_model_and_features(MODEL_FEATURES)
    deploy_model(settings, booster, 1, "champion")  # no server yet: Triton loads it at start-up
    from propensity.serving.triton_server import TritonServer

    t_http, t_grpc, t_metrics = free_port(), free_port(), free_port()
    triton_env = {
        "PROPENSITY_SERVING__BACKEND": "triton",
        "PROPENSITY_SERVING__TRITON_PROTOCOL": "grpc",
        "PROPENSITY_SERVING__TRITON_HTTP_PORT": str(t_http),
        "PROPENSITY_SERVING__TRITON_GRPC_PORT": str(t_grpc),
        "PROPENSITY_SERVING__TRITON_METRICS_PORT": str(t_metrics),
        # The bench measures how long answers take: a slow one must count in the p99, not turn into
        # a 503 at the SLA's per-call timeout (0.09 s) when other work holds the shared cores.
        "PROPENSITY_SERVING__REQUEST_TIMEOUT_S": "2",
    }
    t_serving = settings.serving.model_copy(
        update={"triton_http_port": t_http, "triton_grpc_port": t_grpc, "triton_metrics_port": t_metrics}
    )
    triton = TritonServer(settings.model_copy(update={"serving": t_serving}), log_path=work / "triton.log")
    store = feature_store(settings, apply=True)
    write_online(store, rows)

    import mlflow
    import mlflow.xgboost

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bench_api")
    example = pd.DataFrame([rows[next(iter(rows))]], columns=list(MODEL_FEATURES))
    with mlflow.start_run():
        mlflow.xgboost.log_model(
            booster, name="model", registered_model_name=MODEL_NAME, input_example=example
        )

    rng = np.random.default_rng(1)
    ids = list(rows)
    pick = [ids[i] for i in rng.integers(0, len(ids), args.requests)]
    ours_bodies = [json.dumps({"customer_id": cid}).encode() for cid in pick]
    peer_bodies = [
        json.dumps(
            {"dataframe_split": {"columns": list(MODEL_FEATURES), "data": [rows[cid].tolist()]}}
        ).encode()
        for cid in pick
    ]
    api_port, mlflow_port = free_port(), free_port()
    api = api_t = peer = None
    results: dict[str, dict[int, dict]] = {"ours": {}, "triton": {}, "peer": {}}
    api_t_port = free_port()
    x_all = np.stack([rows[cid] for cid in ids]).astype(np.float32)
    peer64 = [
        json.dumps(
            {
                "dataframe_split": {
                    "columns": list(MODEL_FEATURES),
                    "data": x_all[i * 64 : (i + 1) * 64].tolist(),
                }
            }
        ).encode()
        for i in range(min(args.requests // 4, len(ids) // 64))
    ]
    alone: dict[str, dict] = {}
    rss: dict[str, float | None] = {}
    batching: dict[int, float] = {}
    batching_t: dict[int, float] = {}
    load_avg = [os.getloadavg()]
    pressure = [cpu_pressure()]
    try:
        triton.start()
        api_t = subprocess.Popen(
            [PY, "-m", "propensity.cli", "serve"],
            env={**env, **triton_env, "PROPENSITY_SERVING__PORT": str(api_t_port)},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "api_triton.log", "wb"),
        )
        api = subprocess.Popen(
            [PY, "-m", "propensity.cli", "serve"],
            env={**env, "PROPENSITY_SERVING__PORT": str(api_port)},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "api.log", "wb"),
        )
        peer = subprocess.Popen(
            [
                str(Path(PY).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{MODEL_NAME}/1",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "-w",
                "1",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "mlflow.log", "wb"),
        )
        wait_http(api_port, "/readyz", api)
        wait_http(api_t_port, "/readyz", api_t)
        wait_http(mlflow_port, "/ping", peer)
        ours_h = {"content-type": "application/json", "X-API-Key": KEY}
        peer_h = {"content-type": "application/json"}
        # Same answers first: the bench compares two servings of one model, not two models.
        conn = http.client.HTTPConnection("127.0.0.1", api_port)
        conn.request("POST", "/predict", body=ours_bodies[0], headers=ours_h)
        ours_score = json.loads(conn.getresponse().read())["score"]
        conn = http.client.HTTPConnection("127.0.0.1", mlflow_port)
        conn.request("POST", "/invocations", body=peer_bodies[0], headers=peer_h)
        peer_score = json.loads(conn.getresponse().read())["predictions"][0]
        if abs(ours_score - peer_score) > 1e-6:
            raise RuntimeError(f"the two servers disagree: {ours_score} vs {peer_score}")
        conn = http.client.HTTPConnection("127.0.0.1", api_t_port)
        conn.request("POST", "/predict", body=ours_bodies[0], headers=ours_h)
        answer = json.loads(conn.getresponse().read())
        if abs(answer["score"] - peer_score) > 1e-6 or answer["model_version"] != "1":
            raise RuntimeError(f"the API through Triton disagrees: {answer} vs {peer_score}")
        ours_reqs = [http_request("/predict", b, ours_h) for b in ours_bodies]
        peer_reqs = [http_request("/invocations", b, peer_h) for b in peer_bodies]
        for c in (1, 8):
            warm = min(200, args.requests)
            load(api_port, ours_reqs[:warm], c)
            load(api_t_port, ours_reqs[:warm], c)
            load(mlflow_port, peer_reqs[:warm], c)
            ours_rounds, triton_rounds, peer_rounds = [], [], []
            before, before_t = batch_counts(api_port), batch_counts(api_t_port)
            for _ in range(args.rounds):
                ours_rounds.append(timed_load(api_port, ours_reqs, c, {"API": api}))
                triton_rounds.append(
                    timed_load(api_t_port, ours_reqs, c, {"API": api_t, "tritonserver": triton.proc})
                )
                peer_rounds.append(timed_load(mlflow_port, peer_reqs, c, {"mlflow": peer}))
            after, after_t = batch_counts(api_port), batch_counts(api_t_port)
            batching[c] = (after[1] - before[1]) / max(after[0] - before[0], 1)
            batching_t[c] = (after_t[1] - before_t[1]) / max(after_t[0] - before_t[0], 1)
            results["ours"][c], results["peer"][c] = pooled(ours_rounds), pooled(peer_rounds)
            results["triton"][c] = pooled(triton_rounds)
            load_avg.append(os.getloadavg())
            pressure.append(cpu_pressure())
        alone["1"] = triton_alone(triton.grpc_url, settings.serving.model_name, x_all, 1, args.requests)
        alone["64"] = triton_alone(
            triton.grpc_url, settings.serving.model_name, x_all, 64, max(len(peer64), 1) * 2
        )
        load(mlflow_port, [http_request("/invocations", b, peer_h) for b in peer64[:20]], 1)
        p64 = load(mlflow_port, [http_request("/invocations", b, peer_h) for b in peer64], 1)
        alone["peer64"] = {
            "p50": float(np.percentile(p64["lat"], 50)),
            "p99": float(np.percentile(p64["lat"], 99)),
            "rows_s": len(p64["lat"]) * 64 / p64["wall"],
        }
        rss = {
            "ours": peak_rss_mb(api),
            "ours via Triton": peak_rss_mb(api_t),
            "tritonserver": peak_rss_mb(triton.proc),
            "peer": peak_rss_mb(peer),
        }
    finally:
        stop(api)
        stop(api_t)
        triton.stop()
        stop(peer)
        try:
            store.teardown()  # removes this project's keys from Redis
        except Exception as exc:  # a bench must not hide its figures behind a cleanup failure
            print(f"feast teardown failed: {exc}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"API bench: {args.requests} single-customer requests x {args.rounds} rounds per level and server, "
        f"loopback, {os.cpu_count()} cores"
    )
    print("ours: propensity serve (uvicorn, 1 process) + Feast/Redis features + in-process XGBoost")
    print("peer: mlflow models serve (1 worker), features sent inline (model only)")
    print("client: asyncio closed loop, keep-alive, pre-built requests (the same for both)")
    print(
        "load average (1/5/15 min) before, after c=1, after c=8: "
        + "; ".join("/".join(f"{x:.2f}" for x in la) for la in load_avg)
    )
    if pressure[0] is not None:
        print(
            "CPU pressure (share of the last 10 s in which some task waited for a core) before, "
            "after c=1, after c=8: " + "; ".join(f"{x:.0f}%" for x in pressure if x is not None)
        )
    print()
    print("ours via Triton: the same API, serving.backend triton (gRPC to tritonserver 2.51.0, FIL stand-in)")
    print(f"{'server':<8}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}   p99 per round")
    for who in ("ours", "triton", "peer"):
        for c in (1, 8):
            r = results[who][c]
            per_round = " ".join(f"{x:.1f}" for x in r["rounds_p99"])
            print(f"{who:<8}{c:>5}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['rps']:>9.0f}   {per_round}")
    print("\nTriton alone (tritonclient gRPC, one request at a time) vs the peer (same rows inline):")
    print(f"{'rows':<16}{'p50 ms':>9}{'p99 ms':>9}{'rows/s':>10}")
    p1 = results["peer"][1]
    for label, r in (
        ("triton 1", alone["1"]),
        ("peer 1", {"p50": p1["p50"], "p99": p1["p99"], "rows_s": p1["rps"]}),
        ("triton 64", alone["64"]),
        ("peer 64", alone["peer64"]),
    ):
        print(f"{label:<16}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['rows_s']:>10.0f}")
    print("peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items() if v is not None))
    print("\nCPU ms per request (user + system, each process with its children; the client is the bench):")
    for who in ("ours", "triton", "peer"):
        for c in (1, 8):
            cpu = results[who][c]["cpu_ms"]
            print(f"  {who:<7} c={c}: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    for who, batches in (("ours", batching), ("ours via Triton", batching_t)):
        for c in (1, 8):
            s = split_of(results["ours" if who == "ours" else "triton"][c])
            print(
                f"\n{who} at concurrency {c} (medians): feature lookup {s['features']:.2f} ms and model "
                f"{s['model']:.2f} ms per batch of {batches[c]:.1f} requests on average, waiting for the "
                f"batch {s['queue']:.2f} ms, framework + HTTP {s['framework']:.2f} ms, total {s['total']:.2f} ms; "
                f"p99 of queue + lookup + model {s['inside_p99']:.2f} ms"
            )
    o8, p8 = results["ours"][8], results["peer"][8]
    lines = [
        {
            "figure": "API p99 latency, 1 customer, concurrency 8",
            "ours": round(o8["p99"], 2),
            "peer": round(p8["p99"], 2),
            "ratio": round(o8["p99"] / p8["p99"], 2),
            "goal": f"ours <= {P99_GOAL_MS:g} ms",
            "met": o8["p99"] <= P99_GOAL_MS,
            "unit": "ms",
        },
        {
            "figure": "API throughput, 1 customer, concurrency 8",
            "ours": round(o8["rps"], 1),
            "peer": round(p8["rps"], 1),
            "ratio": round(o8["rps"] / p8["rps"], 2),
            "goal": f"ratio >= {THROUGHPUT_GOAL:g}",
            "met": o8["rps"] / p8["rps"] >= THROUGHPUT_GOAL,
            "unit": "req/s",
        },
        {
            "figure": "API p50 latency, 1 customer, concurrency 1",
            "ours": round(results["ours"][1]["p50"], 2),
            "peer": round(results["peer"][1]["p50"], 2),
            "ratio": round(results["ours"][1]["p50"] / results["peer"][1]["p50"], 2),
            "goal": None,
            "met": None,
            "unit": "ms",
        },
    ]
    t8, t1 = results["triton"][8], results["triton"][1]
    lines += [
        {
            "figure": "API via Triton p99 latency, 1 customer, concurrency 8",
            "ours": round(t8["p99"], 2),
            "peer": round(p8["p99"], 2),
            "ratio": round(t8["p99"] / p8["p99"], 2),
            "goal": f"ours <= {P99_GOAL_MS:g} ms",
            "met": t8["p99"] <= P99_GOAL_MS,
            "unit": "ms",
        },
        {
            "figure": "API via Triton throughput, 1 customer, concurrency 8",
            "ours": round(t8["rps"], 1),
            "peer": round(p8["rps"], 1),
            "ratio": round(t8["rps"] / p8["rps"], 2),
            "goal": f"ratio >= {TRITON_THROUGHPUT_GOAL:g}",
            "met": t8["rps"] / p8["rps"] >= TRITON_THROUGHPUT_GOAL,
            "unit": "req/s",
        },
        {
            "figure": "API via Triton p50 latency, 1 customer, concurrency 1",
            "ours": round(t1["p50"], 2),
            "peer": round(results["peer"][1]["p50"], 2),
            "ratio": round(t1["p50"] / results["peer"][1]["p50"], 2),
            "goal": None,
            "met": None,
            "unit": "ms",
        },
        {
            "figure": "Triton alone (tritonclient gRPC) p50, 1 row",
            "ours": round(alone["1"]["p50"], 3),
            "peer": round(results["peer"][1]["p50"], 3),
            "ratio": round(alone["1"]["p50"] / results["peer"][1]["p50"], 3),
            "goal": None,
            "met": None,
            "unit": "ms",
        },
        {
            "figure": "Triton alone (tritonclient gRPC) throughput, 64 rows per request",
            "ours": round(alone["64"]["rows_s"], 0),
            "peer": round(alone["peer64"]["rows_s"], 0),
            "ratio": round(alone["64"]["rows_s"] / alone["peer64"]["rows_s"], 2),
            "goal": None,
            "met": None,
            "unit": "rows/s",
        },
    ]
    for line in lines:
        print("BENCH " + json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
