"""What the running cluster holds: S3 objects, prediction rows, MLflow runs, Spark applications and
which worker ran their tasks, task instances and their Celery workers, the Triton index, an API answer. Read by
``make cluster-demo`` (printed) and by tests/e2e/test_cluster.py (asserted)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from propensity.cluster.config import ClusterSettings


def s3_client(cfg: ClusterSettings, secrets: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://{cfg.host}:{cfg.ports.s3}",
        region_name="us-east-1",
        aws_access_key_id=secrets["S3_ACCESS_KEY"],
        aws_secret_access_key=secrets["S3_SECRET_KEY"],
    )


def s3_objects(cfg: ClusterSettings, secrets: dict[str, str], prefix: str = "") -> dict[str, str]:
    """Key -> ETag (MD5 of the content for single-part uploads) of every object under ``prefix``."""
    s3, out = s3_client(cfg, secrets), {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["ETag"].strip('"')
    return out


def content_hashes(cfg: ClusterSettings, secrets: dict[str, str], prefix: str) -> dict[str, str]:
    """Key -> sha256 of the object's bytes."""
    s3, out = s3_client(cfg, secrets), {}
    for key in s3_objects(cfg, secrets, prefix):
        out[key] = hashlib.sha256(s3.get_object(Bucket=cfg.bucket, Key=key)["Body"].read()).hexdigest()
    return out


def zone_summary(objects: dict[str, str]) -> dict[str, int]:
    """Object count per top-level area (``zones/raw/events``, ``models``, ``mlflow`` ...)."""
    counts: Counter[str] = Counter()
    for key in objects:
        parts = key.split("/")
        counts["/".join(parts[:3] if parts[0] == "zones" else parts[:1])] += 1
    return dict(sorted(counts.items()))


def prediction_rows(cfg: ClusterSettings) -> dict[str, int]:
    """Rows of the predictions table per scored day (empty when the table does not exist yet)."""
    import psycopg

    pg = cfg.postgres
    with psycopg.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.predictions_db) as conn:
        exists = conn.execute("SELECT to_regclass('predictions')").fetchone()[0]
        if not exists:
            return {}
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name='predictions'"
            )
        }
        day = "scored_for_date" if "scored_for_date" in cols else next(iter(sorted(cols)))
        rows = conn.execute(f"SELECT {day}::text, count(*) FROM predictions GROUP BY 1 ORDER BY 1").fetchall()
    return {d: n for d, n in rows}


def top_customer(cfg: ClusterSettings) -> str | None:
    import psycopg

    pg = cfg.postgres
    with psycopg.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.predictions_db) as conn:
        row = conn.execute("SELECT customer_id FROM predictions ORDER BY score DESC LIMIT 1").fetchone()
    return row[0] if row else None


def spark_applications(cfg: ClusterSettings) -> list[dict[str, Any]]:
    """Applications the standalone master ran (completed and active)."""
    master = httpx.get(f"http://{cfg.host}:{cfg.ports.spark_master_ui}/json/", timeout=10).json()
    return [*master.get("activeapps", []), *master.get("completedapps", [])]


def tasks_per_worker(cfg: ClusterSettings) -> dict[str, dict[str, int]]:
    """Application id -> {worker web UI address: tasks it ran}, from the applications' event logs.

    An executor's log URLs name the worker that launched it (its web UI port): every worker here
    shares one host, so that is what tells them apart."""
    out: dict[str, dict[str, int]] = {}
    folder = cfg.logs / "spark-events"
    for path in sorted([*folder.glob("app-*"), *folder.glob("eventlog_v2_*/events_*")]):
        executors: dict[str, str] = {}
        counts: defaultdict[str, int] = defaultdict(int)
        app = path.name.split(".")[0]
        for line in _event_lines(path):
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerApplicationStart":
                app = event.get("App ID", app)
            elif kind == "SparkListenerExecutorAdded":
                urls = event["Executor Info"].get("Log Urls", {})
                url = next(iter(urls.values()), "")
                executors[event["Executor ID"]] = url.split("/logPage")[0]
            elif kind == "SparkListenerTaskEnd":
                counts[executors.get(event["Task Info"]["Executor ID"], "driver")] += 1
        out[app] = dict(counts)
    return out


def _event_lines(path: Path) -> list[str]:
    """An event log's JSON lines; Spark 4 writes rolling, zstd-compressed files by default."""
    import pyarrow as pa

    if path.suffix in (".zstd", ".lz4", ".snappy"):
        codec = {".zstd": "zstd", ".lz4": "lz4", ".snappy": "snappy"}[path.suffix]
        with pa.CompressedInputStream(pa.OSFile(str(path)), codec) as stream:
            return stream.read().decode(errors="replace").splitlines()
    return path.read_text(errors="replace").splitlines()


def task_instances(airflow, dag_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for dag_id in dag_ids:
        for run in airflow.runs(dag_id):
            out += airflow.task_instances(dag_id, run["dag_run_id"])
    return out


def mlflow_runs(cfg: ClusterSettings, experiment: str) -> list[dict[str, Any]]:
    base = f"http://{cfg.host}:{cfg.ports.mlflow}/api/2.0/mlflow"
    exp = httpx.get(f"{base}/experiments/get-by-name", params={"experiment_name": experiment}, timeout=10)
    if exp.status_code != 200:
        return []
    exp_id = exp.json()["experiment"]["experiment_id"]
    found = httpx.post(
        f"{base}/runs/search", json={"experiment_ids": [exp_id], "max_results": 50}, timeout=10
    )
    return found.json().get("runs", [])


def registered_versions(cfg: ClusterSettings, model: str) -> list[dict[str, Any]]:
    base = f"http://{cfg.host}:{cfg.ports.mlflow}/api/2.0/mlflow"
    r = httpx.get(f"{base}/model-versions/search", params={"filter": f"name='{model}'"}, timeout=10)
    return r.json().get("model_versions", []) if r.status_code == 200 else []


def champion_version(cfg: ClusterSettings, model: str) -> str | None:
    """The version the registry's ``champion`` alias points at (None: no champion)."""
    base = f"http://{cfg.host}:{cfg.ports.mlflow}/api/2.0/mlflow"
    r = httpx.get(f"{base}/registered-models/alias", params={"name": model, "alias": "champion"}, timeout=10)
    return r.json()["model_version"]["version"] if r.status_code == 200 else None


def triton_index(cfg: ClusterSettings) -> list[dict[str, Any]]:
    """The Triton server's repository index: name, version, state (READY / UNAVAILABLE) per model."""
    from propensity.serving.triton_server import repository_index

    return repository_index(f"{cfg.host}:{cfg.ports.triton_http}", "http")


def api_answer(cfg: ClusterSettings, secrets: dict[str, str], customer_id: str) -> tuple[int, Any]:
    key = secrets["PROPENSITY_API_KEYS"].split(",")[0]
    r = httpx.post(
        f"http://{cfg.host}:{cfg.ports.api}/predict",
        json={"customer_id": customer_id},
        headers={"X-API-Key": key},
        timeout=10,
    )
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def logs_dir(cfg: ClusterSettings) -> Path:
    return cfg.logs
