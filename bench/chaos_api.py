"""Chaos: the prediction API under load through a Redis kill, an empty restart, a new snapshot, an old
re-run and a deploy. What it prints is what on-call needs to know about each fault.

Real processes only: ``propensity serve`` (uvicorn) as a subprocess, a private ``redis-server`` on
a free port as its Feast online store (killed with SIGKILL, restarted empty), the product's own
Feast writes and online marker, ``deploy_model`` into the repository the API watches. ``--seconds``
of closed-loop load at ``--concurrency`` (keep-alive connections, one thread each) run through:

    10%  Redis killed (SIGKILL)                  -> 503 "unreachable", then the breaker's fast 503s
    25%  Redis restarted, empty                  -> 503 "holds none of ... re-run the features DAG"
    35%  features re-materialized: a newer day   -> 200 again, newer feature_timestamp
    50%  an older day's features re-run          -> nothing changes (never overwrite a newer row)
    60%  model v2 deployed                       -> the running API swaps to v2, no restart

Every 200 is checked against the model its ``model_version`` names and the features that version
would have seen: a wrong version, a score from another model, or an older snapshot after a newer
one answered, is counted. Printed: requests, answers by status and cause, p50/p99 (all, and of
the errors), time to recover after the empty restart, time from the deploy to the first v2 answer,
versions that answered, and peak RSS of the API.

    .venv/bin/python bench/chaos_api.py [--seconds 60] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the tests' redis-server
from bench_api import KEY, PY, free_port, make_model_and_features, serving_env, stop, wait_http  # noqa: E402
from redis_process import RedisServer  # noqa: E402


@dataclass
class Answer:
    at: float  # seconds since the load started
    status: int
    ms: float
    body: dict[str, Any]


def snapshot_frame(rows: dict[str, np.ndarray], day: dt.date, shift: float):
    """The customers' features as of ``day`` (``shift`` moves every value: each day is distinct)."""
    import pandas as pd

    from propensity.features.spec import INT_FEATURES, MODEL_FEATURES

    ts = pd.Timestamp(day.isoformat(), tz="UTC")
    frame = pd.DataFrame({"customer_id": list(rows), "as_of": ts, "event_timestamp": ts})
    for j, name in enumerate(MODEL_FEATURES):
        cast = int if name in INT_FEATURES else float
        frame[name] = [cast(v[j] + shift) for v in rows.values()]
    # The service's string fields are stored and read, never fed to the model: any value.
    frame["country"] = "unknown"
    return frame


def materialize(settings: Any, store: Any, rows: dict[str, np.ndarray], day: dt.date, shift: float) -> None:
    """What the features DAG leaves behind for ``day``: the snapshot, the online rows, the marker."""
    import pyarrow as pa

    from propensity.core.storage import write_partition
    from propensity.core.zones import SNAPSHOTS, zone_store
    from propensity.features.spec import FEATURE_VIEW
    from propensity.features.store import write_online_marker

    write_partition(zone_store(settings), *SNAPSHOTS, day, pa.table({"customer_id": list(rows)}))
    store.write_to_online_store(FEATURE_VIEW, snapshot_frame(rows, day, shift))
    write_online_marker(settings, day)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_loop(port: int, ids: list[str], t0: float, stop_at: float, out: list[Answer], seed: int) -> None:
    rng = np.random.default_rng(seed)
    headers = {"content-type": "application/json", "X-API-Key": KEY}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < stop_at:
        body = json.dumps({"customer_id": ids[int(rng.integers(len(ids)))]})
        start = time.monotonic()
        try:
            conn.request("POST", "/predict", body=body, headers=headers)
            r = conn.getresponse()
            status, payload = r.status, json.loads(r.read() or b"{}")
        except (OSError, http.client.HTTPException) as exc:
            status, payload = 0, {"detail": f"connection: {exc}"}
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out.append(Answer(start - t0, status, (time.monotonic() - start) * 1e3, payload))


def cause(a: Answer) -> str:
    if a.status == 200:
        return "ok"
    detail = str(a.body.get("detail", ""))
    for key, name in (
        ("unreachable", "store down"),
        ("not retried", "store down (breaker open)"),
        ("holds none", "store empty"),
        ("unknown customer", "unknown customer"),
        ("connection", "connection error"),
    ):
        if key in detail:
            return name
    return detail[:60]


def run(seconds: float, concurrency: int, work: Path) -> dict[str, Any]:
    """One chaos run; returns the figures (also used by tests/reliability)."""

    from propensity.core.settings import get_settings

    redis = RedisServer(persist=False, port=free_port())
    environ = dict(os.environ)  # the scenario sets PROPENSITY_* for its settings: put them back after
    try:
        redis.start()
        return _scenario(redis, seconds, concurrency, work)
    finally:
        redis.kill()
        os.environ.clear()
        os.environ.update(environ)
        get_settings.cache_clear()


def _scenario(redis: RedisServer, seconds: float, concurrency: int, work: Path) -> dict[str, Any]:
    from propensity.core.settings import Settings, get_settings
    from propensity.features.spec import MODEL_FEATURES
    from propensity.features.store import feature_store
    from propensity.serving.deploy import deploy_model

    env = serving_env(work, f"127.0.0.1:{redis.port}", 0, "chaos")
    # The product's own defaults for the API's Redis connection (bounded timeouts, no retries).
    env["PROPENSITY_FEATURES__REDIS_CONNECTION"] = f"127.0.0.1:{redis.port},db=0"
    env["PROPENSITY_SERVING__RELOAD_INTERVAL_S"] = "0.5"
    os.environ.update({k: v for k, v in env.items() if k.startswith("PROPENSITY_")})
    get_settings.cache_clear()
    settings = Settings()  # type: ignore[call-arg]

    boosters, rows = {}, {}
    boosters[1], rows = make_model_and_features(MODEL_FEATURES)
    import xgboost as xgb

    x_all = np.stack(list(rows.values()))
    y = (x_all[:, 0] < np.median(x_all[:, 0])).astype(int)  # v2: another model on the same features
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1, "seed": 2}
    boosters[2] = xgb.train(params, xgb.DMatrix(x_all, label=y, feature_names=list(MODEL_FEATURES)), 50)
    deploy_model(settings, boosters[1], 1, "champion")
    store = feature_store(settings, apply=True)
    old_day, new_day = dt.date(2000, 1, 1), dt.date(2000, 1, 2)  # the bench's own synthetic days
    materialize(settings, store, rows, old_day, 0.0)

    port = free_port()
    api = subprocess.Popen(
        [PY, "-m", "propensity.cli", "serve"],
        env={**env, "PROPENSITY_SERVING__PORT": str(port)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "api.log", "wb"),
    )
    events: dict[str, float] = {}
    answers: list[list[Answer]] = [[] for _ in range(concurrency)]
    try:
        wait_http(port, "/readyz", api)
        ids = list(rows)
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=load_loop, args=(port, ids, t0, t0 + seconds, answers[k], k))
            for k in range(concurrency)
        ]
        for t in threads:
            t.start()

        def at(share: float, name: str) -> None:
            time.sleep(max(0.0, t0 + share * seconds - time.monotonic()))
            events[name] = time.monotonic() - t0

        at(0.10, "redis killed")
        redis.kill()
        at(0.25, "redis restarted empty")
        redis.start()
        at(0.35, "newer day materialized")
        materialize(settings, store, rows, new_day, 1.0)
        events["newer day materialized (returned)"] = time.monotonic() - t0
        at(0.50, "older day re-run")
        from propensity.features.spec import FEATURE_VIEW

        store.write_to_online_store(FEATURE_VIEW, snapshot_frame(rows, old_day, 0.0))
        at(0.60, "v2 deployed")
        deploy_model(settings, boosters[2], 2, "champion")
        events["v2 deploy returned"] = time.monotonic() - t0
        for t in threads:
            t.join()
        api_rss = rss_mb(api.pid)
    finally:
        stop(api)
        redis.kill()
    return summarize([a for part in answers for a in part], events, rows, boosters, new_day, api_rss)


def summarize(answers, events, rows, boosters, new_day, api_rss) -> dict[str, Any]:
    from propensity.features.spec import MODEL_FEATURES

    answers.sort(key=lambda a: a.at)
    wrong_version = wrong_score = older_features = 0
    newest_seen: str | None = None
    versions: Counter[str] = Counter()
    for a in answers:
        if a.status != 200:
            continue
        version, ts = a.body["model_version"], a.body["feature_timestamp"]
        versions[version] += 1
        if version not in ("1", "2") or (a.at < events["v2 deployed"] and version == "2"):
            wrong_version += 1
        if newest_seen is not None and ts < newest_seen:
            older_features += 1
        newest_seen = max(newest_seen or ts, ts)
        shift = 1.0 if ts.startswith(new_day.isoformat()) else 0.0
        x = (rows[a.body["customer_id"]] + shift).astype(np.float32)
        from propensity.features.spec import INT_FEATURES

        for j, name in enumerate(MODEL_FEATURES):
            if name in INT_FEATURES:
                x[j] = np.floor(x[j])
        want = float(boosters[int(version)].inplace_predict(x.reshape(1, -1), validate_features=False)[0])
        if abs(want - a.body["score"]) > 1e-6:
            wrong_score += 1
    ok = [a for a in answers if a.status == 200]
    errors = [a for a in answers if a.status != 200]
    restart, fresh = events["redis restarted empty"], events["newer day materialized"]
    during_empty = [a for a in answers if restart + 0.5 < a.at < fresh]
    recovered = next((a.at for a in ok if a.at > fresh), None)
    first_v2 = next((a.at for a in ok if a.body["model_version"] == "2"), None)
    last_v1 = max((a.at for a in ok if a.body["model_version"] == "1"), default=None)

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    return {
        "requests": len(answers),
        "by_status": dict(sorted(Counter(a.status for a in answers).items())),
        "by_cause": dict(Counter(cause(a) for a in answers).most_common()),
        "p50_ms": pct([a.ms for a in answers], 50),
        "p99_ms": pct([a.ms for a in answers], 99),
        "p99_ok_ms": pct([a.ms for a in ok], 99),
        "p99_errors_ms": pct([a.ms for a in errors], 99),
        "max_errors_ms": max((a.ms for a in errors), default=None),
        "404_while_store_empty": sum(a.status == 404 for a in during_empty),
        "404_at_s": [round(a.at, 2) for a in answers if a.status == 404][:8],
        "503_while_store_empty": sum(a.status == 503 for a in during_empty),
        "recovery_s_after_materialize": None
        if recovered is None
        else recovered - events["newer day materialized (returned)"],
        "outage_s_redis_killed_to_recovered": None
        if recovered is None
        else recovered - events["redis killed"],
        "v2_first_answer_s_after_deploy": None if first_v2 is None else first_v2 - events["v2 deployed"],
        "v1_last_answer_s_after_deploy_returned": None
        if last_v1 is None
        else last_v1 - events["v2 deploy returned"],
        "versions": dict(sorted(versions.items())),
        "wrong_version_answers": wrong_version,
        "score_not_from_named_version": wrong_score,
        "older_feature_answers": older_features,
        "api_peak_rss_mb": api_rss,
        "events_s": {k: round(v, 2) for k, v in events.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaos_api_") as tmp:
        result = run(args.seconds, args.concurrency, Path(tmp))
    width = max(len(k) for k in result)
    print(
        f"chaos: {args.seconds:.0f} s of load at concurrency {args.concurrency} (peer: none; faults injected)"
    )
    for key, value in result.items():
        shown = f"{value:.1f}" if isinstance(value, float) else json.dumps(value)
        print(f"  {key:<{width}}  {shown}")
    bad = (
        result["wrong_version_answers"]
        + result["score_not_from_named_version"]
        + result["older_feature_answers"]
    )
    bad += result["404_while_store_empty"]
    print("verdict:", "PASS" if bad == 0 and result["recovery_s_after_materialize"] is not None else "FAIL")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
