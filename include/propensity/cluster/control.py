"""``make cluster-up`` / ``cluster-status`` / ``cluster-down``: the spec run under supervisord.

``up`` is idempotent: it creates what is missing (folders, secrets, databases, the bucket, Airflow's
schema, the Feast registry), (re)writes supervisord.conf, starts supervisord when it is not running
and every program that is not, phase by phase, and waits until each answers. S3 is moto's server,
which keeps its objects in memory: when ``up`` finds the bucket missing (a first start, or after a
``down``), the deployment is new, so the databases and the Redis it owns are reset with it and the
metadata never points at objects that are gone.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from propensity.cluster.config import ClusterSettings, cluster_settings
from propensity.cluster.spec import SECRET_NAMES, Service, build_spec, native_target, spark_home
from propensity.cluster.supervisor import render
from propensity.core.settings import committed_settings, project_home


def log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


# -- files ------------------------------------------------------------------------------------
def load_secrets(cfg: ClusterSettings) -> dict[str, str]:
    """The deployment's secrets, generated once into ``<state>/secrets.json`` (0600)."""
    from cryptography.fernet import Fernet

    path = cfg.state / "secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    for name in SECRET_NAMES:
        if name not in values:
            values[name] = (
                Fernet.generate_key().decode() if name == "AIRFLOW_FERNET_KEY" else secrets.token_urlsafe(24)
            )
    values.setdefault("AIRFLOW_ADMIN_PASSWORD", secrets.token_urlsafe(16))
    _write_private(path, json.dumps(values, indent=2))
    _write_private(cfg.state / "passwords.json", json.dumps({"admin": values["AIRFLOW_ADMIN_PASSWORD"]}))
    return values


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def spec(cfg: ClusterSettings | None = None) -> tuple[ClusterSettings, dict[str, str], list[Service]]:
    cfg = cfg or cluster_settings()
    values = load_secrets(cfg)
    source = committed_settings().source
    return cfg, values, build_spec(cfg, native_target(cfg, values), source.path, source.name)


def conf_path(cfg: ClusterSettings) -> Path:
    return cfg.state / "supervisord.conf"


# -- supervisord ------------------------------------------------------------------------------
def _supervisor_env() -> dict[str, str]:
    """supervisord's own environment: a clean one, so nothing of the caller's shell leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "JAVA_HOME", "TZ", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def ctl(cfg: ClusterSettings, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("supervisorctl"))
    return subprocess.run(
        [exe, "-c", str(conf_path(cfg)), *args], capture_output=True, text=True, check=check
    )


def supervisord_running(cfg: ClusterSettings) -> bool:
    sock = cfg.state / "supervisor.sock"
    if not sock.exists() or not conf_path(cfg).exists():
        return False
    return ctl(cfg, "pid").stdout.strip().isdigit()


def program_states(cfg: ClusterSettings) -> dict[str, str]:
    out = {}
    for line in ctl(cfg, "status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


# -- readiness --------------------------------------------------------------------------------
def is_ready(svc: Service) -> bool:
    if svc.ready is None:
        return True
    kind, where = svc.ready
    try:
        if kind == "tcp":
            host, port = where.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        with urllib.request.urlopen(where, timeout=5) as r:  # noqa: S310 - loopback URLs of the spec
            return r.status < 500
    except OSError:
        return False


def wait_ready(cfg: ClusterSettings, services: list[Service], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [s for s in services if s.enabled]
    while pending and time.monotonic() < deadline:
        states = program_states(cfg)
        dead = [s.name for s in pending if states.get(s.name) in ("FATAL", "EXITED", "BACKOFF")]
        if dead:
            raise RuntimeError(f"{dead} failed to start: see {cfg.logs}/<name>.log")
        pending = [s for s in pending if not (states.get(s.name) == "RUNNING" and is_ready(s))]
        if pending:
            time.sleep(1)
    if pending:
        raise RuntimeError(
            f"not ready after {timeout:.0f}s: {[s.name for s in pending]} (logs in {cfg.logs})"
        )


# -- one-shot set-up --------------------------------------------------------------------------
def ensure_databases(cfg: ClusterSettings, reset: bool) -> None:
    import psycopg

    pg = cfg.postgres
    names = (pg.airflow_db, pg.mlflow_db, pg.predictions_db)
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, dbname="postgres", autocommit=True
    ) as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in names:
            if reset and name in existing:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                existing.discard(name)
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')
                log(f"database {name} created")


def bucket_exists(cfg: ClusterSettings, values: dict[str, str], endpoint: str) -> bool:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=values["S3_ACCESS_KEY"],
        aws_secret_access_key=values["S3_SECRET_KEY"],
    )
    try:
        s3.head_bucket(Bucket=cfg.bucket)
        return True
    except ClientError:
        return False


def init_deployment(cfg: ClusterSettings, services: list[Service]) -> None:
    """docker/init_deployment.py with the scheduler's environment: the compose ``init`` service."""
    env = next(s for s in services if s.name == "airflow-scheduler").env
    source = committed_settings().source.path
    env = _supervisor_env() | env | {"PROPENSITY_IMPORT_DIR": str(Path(source).parent)}
    script = project_home() / "docker" / "init_deployment.py"
    with open(cfg.logs / "init.log", "a") as out:
        done = subprocess.run([sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"init failed: see {cfg.logs}/init.log")


def flush_redis(cfg: ClusterSettings) -> None:
    import redis

    redis.Redis(host=cfg.host, port=cfg.ports.redis).flushall()


# -- commands ---------------------------------------------------------------------------------
def up(timeout: float = 300) -> int:
    cfg, values, services = spec()
    for folder in (
        cfg.logs / "airflow",
        cfg.logs / "spark",
        cfg.logs / "spark-events",
        cfg.data / "redis",
        cfg.data / "cache",
    ):
        folder.mkdir(parents=True, exist_ok=True)
    for svc in services:
        if svc.name.startswith("spark-worker-"):
            (cfg.data / "spark-work" / svc.name).mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.state, 0o700)
    _write_private(conf_path(cfg), render(cfg, services, str(project_home())))
    if supervisord_running(cfg):
        ctl(cfg, "reread")
        ctl(cfg, "update")
    else:
        exe = str(Path(sys.executable).with_name("supervisord"))
        subprocess.run([exe, "-c", str(conf_path(cfg))], env=_supervisor_env(), check=True)
        deadline = time.monotonic() + 30
        while not supervisord_running(cfg):
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start: see {cfg.logs}/supervisord.log")
            time.sleep(0.3)
        log(f"supervisord started ({conf_path(cfg)})")
    for phase in (0, 1):
        group = [s for s in services if s.phase == phase and s.enabled]
        states = program_states(cfg)
        todo = [s.name for s in group if states.get(s.name) != "RUNNING"]
        if todo:
            log(f"starting {', '.join(todo)}")
            ctl(cfg, "start", *todo)
        wait_ready(cfg, group, timeout)
        if phase == 0:
            s3 = next(s for s in services if s.name == "s3")
            fresh = not bucket_exists(cfg, values, s3.ready[1].rstrip("/"))  # type: ignore[index]
            if fresh:
                log("new S3 store: a new deployment (databases and Redis reset)")
                ctl(cfg, "stop", *[s.name for s in services if s.phase == 1 and s.enabled])
                flush_redis(cfg)
            ensure_databases(cfg, reset=fresh)
            if fresh or not (cfg.state / "initialised").exists():
                log("init: bucket, source upload, Airflow schema, Feast registry")
                init_deployment(cfg, services)
                (cfg.state / "initialised").write_text("ok\n")
    log("every service is up")
    return status(cfg, services)


def status(cfg: ClusterSettings | None = None, services: list[Service] | None = None) -> int:
    if cfg is None or services is None:
        cfg, _, services = spec(cfg)
    if not supervisord_running(cfg):
        print("cluster is down")
        return 3
    states = program_states(cfg)
    bad = 0
    print(f"{'service':24} {'state':10} {'ready':6} where")
    for svc in services:
        if not svc.enabled:
            print(f"{svc.name:24} {'disabled':10} {'-':6} {svc.note}")
            continue
        state = states.get(svc.name, "?")
        ok = state == "RUNNING" and is_ready(svc)
        bad += not ok
        where = svc.ready[1] if svc.ready else ""
        print(f"{svc.name:24} {state:10} {'yes' if ok else 'NO':6} {where}")
    print(f"logs: {cfg.logs}   config: {conf_path(cfg)}   secrets: {cfg.state / 'secrets.json'}")
    print(
        f"Airflow: http://{cfg.host}:{cfg.ports.airflow_api} (admin, password in {cfg.state / 'passwords.json'})"
    )
    return 1 if bad else 0


def down(timeout: float = 120) -> int:
    cfg = cluster_settings()
    if not supervisord_running(cfg):
        log("cluster is already down")
        return 0
    pid = ctl(cfg, "pid").stdout.strip()
    ctl(cfg, "stop", "all")
    ctl(cfg, "shutdown")
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    log("cluster stopped" if not Path(f"/proc/{pid}").exists() else f"supervisord {pid} still running")
    return 0


def spark_home_str() -> str:
    return str(spark_home())
