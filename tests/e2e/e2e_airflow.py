"""Helpers of the end-to-end tests: a temporary home for Airflow and the pipeline, a running
`airflow standalone`, its REST API and CLI, and the seed both e2e tests start from.

(A module of its own, not conftest.py: test modules import these names, and several folders
have a conftest.py on sys.path.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
USERNAME = "admin"

# The seeded history: Tuesday 4 January 2011 (the shop reopened after Christmas) to Monday 24th.
SEED_FIRST = dt.date(2011, 1, 4)
SEED_LAST = dt.date(2011, 1, 24)
# Training as of the seed's last day: with the short horizons below, cutoffs 11, 13, 15, 17 January.
TRAINING_AS_OF = SEED_LAST

# Small, fast training for the UI test (the model itself is tested in tests/unit/training): 7-day
# labels and history and a cutoff every 2 days, so three weeks of data make a train/valid/eval plan.
TRAINING_OVERRIDES = {
    "PROPENSITY_TRAINING__MIN_HISTORY_DAYS": "7",
    "PROPENSITY_TRAINING__LABEL_HORIZON_DAYS": "7",
    "PROPENSITY_FEATURES__LABEL_DAYS": "7",
    "PROPENSITY_TRAINING__CUTOFF_STEP_DAYS": "2",
    "PROPENSITY_TRAINING__NUM_BOOST_ROUND": "60",
    "PROPENSITY_TRAINING__EARLY_STOPPING_ROUNDS": "10",
    "PROPENSITY_TRAINING__BOOTSTRAP_SAMPLES": "100",
    "PROPENSITY_TRAINING__SELECTION__MAX_TRIALS": "1",  # the configured params only: no search
}

# Collect + validate the seed days, then the snapshots of every cutoff the training plan for
# TRAINING_AS_OF needs. Run as a script file: PySpark's modules take a `python -c` __main__ for
# their own doctests and exit.
SEED_SCRIPT = """
import datetime as dt, sys
from propensity.features.job import compute_features
from propensity.core.settings import get_settings
from propensity.core.cutoffs import plan_cutoffs
from propensity.ingest.validate import collect_and_validate

first, last, as_of = (dt.date.fromisoformat(a) for a in sys.argv[1:4])
settings = get_settings()
result = collect_and_validate(settings, first, last)
if result["failed_days"]:
    raise SystemExit(f"seed days failed validation: {result['failed_days']}")
compute_features(settings, plan_cutoffs(first, as_of, settings.training).all)
"""


# Stops standalone's process group if pytest dies without its teardown (SIGKILL, a CI timeout).
WATCHDOG_SCRIPT = """
while kill -0 "$1" 2>/dev/null; do sleep 2; done
kill -INT -- "-$2" 2>/dev/null || exit 0
sleep 60
kill -KILL -- "-$2" 2>/dev/null
"""


# Put on the PYTHONPATH of `airflow backfill create` only (Airflow imports airflow_local_settings).
# Airflow creates or clears each backfill run in a SAVEPOINT, which begins a deferred SQLite
# transaction that reads first: once the scheduler commits in between, SQLite refuses the upgrade
# to a write at once ("database is locked", no busy wait). SQLAlchemy's recipe for pysqlite: take
# the write lock when the transaction begins. Postgres (prod) has no such race.
SQLITE_BEGIN_IMMEDIATE = """
from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _no_implicit_begin(dbapi_connection, _record):
    if type(dbapi_connection).__module__ == "sqlite3":
        dbapi_connection.isolation_level = None


@event.listens_for(Engine, "begin")
def _begin_immediate(connection):
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_env(home: Path) -> dict[str, str]:
    """The caller's environment without its Airflow/propensity settings, every output under ``home``.

    AIRFLOW_HOME stays the repo (its airflow.cfg, dags/, plugins/); what is written (Airflow DB and
    logs, zones, MLflow, audit log, Feast, models, predictions) goes to ``home``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "PROPENSITY_"))}
    env |= {
        "AIRFLOW_HOME": str(ROOT),
        "PROPENSITY_HOME": str(ROOT),
        # standalone starts its components as `airflow ...` from PATH: this venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        # Wait up to a minute for SQLite's write lock (pysqlite's default is 5 s): `airflow backfill
        # create --reprocess-behavior completed` clears runs while the scheduler writes, on a busy box.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=60",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(home / "logs" / "dag_processor"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
        "PROPENSITY_ZONE_ROOT": str(home / "zones"),
        "PROPENSITY_CACHE_DIR": str(home / "cache"),
        "PROPENSITY_TRAINING__MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "PROPENSITY_TRAINING__MLFLOW_ARTIFACT_ROOT": str(home / "mlartifacts"),
        "PROPENSITY_TRAINING__AUDIT_DB_URL": f"sqlite:///{home}/registry_audit.db",
        "PROPENSITY_FEATURES__REGISTRY": str(home / "feast" / "registry.db"),
        "PROPENSITY_FEATURES__SQLITE_PATH": str(home / "feast" / "online.db"),
        "PROPENSITY_SERVING__REPOSITORY": str(home / "models"),
        "PROPENSITY_BATCH__DB_URL": f"sqlite:///{home}/predictions.db",
    }
    return env | TRAINING_OVERRIDES


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise with the tail of its output (what a person would read)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{cmd[:4]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


@dataclass
class Standalone:
    """A running `airflow standalone` and how to reach it."""

    url: str
    env: dict[str, str]
    home: Path
    password: str
    seed: Path  # copy of the seeded zone, taken before Airflow ran anything
    reference_db: Path  # a migrated, unused Airflow DB for runs outside this instance
    process: subprocess.Popen
    log: Path
    _token: str | None = field(default=None, repr=False)

    @property
    def zone_root(self) -> Path:
        return Path(self.env["PROPENSITY_ZONE_ROOT"])

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def token(self) -> str:
        """A JWT from the SimpleAuthManager's token endpoint (what the UI's login does)."""
        if self._token is None:
            r = httpx.post(
                f"{self.url}/auth/token", json={"username": USERNAME, "password": self.password}, timeout=30
            )
            assert r.status_code == 201, r.text
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the public REST API (``/api/v2``) and return its JSON."""
        r = httpx.request(
            method,
            f"{self.url}/api/v2/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
            **kwargs,
        )
        assert r.is_success, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json()

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """The airflow CLI against this instance's DB, as an operator would type it.

        Its SQLite transactions take the write lock when they begin (SQLITE_BEGIN_IMMEDIATE), so a
        backfill's runs are created while the scheduler keeps writing.
        """
        settings = self.home / "cli-settings"
        if not (settings / "airflow_local_settings.py").exists():
            settings.mkdir(exist_ok=True)
            (settings / "airflow_local_settings.py").write_text(SQLITE_BEGIN_IMMEDIATE)
        path = os.pathsep.join(p for p in (str(settings), self.env.get("PYTHONPATH")) if p)
        return run([AIRFLOW, *args], self.env | {"PYTHONPATH": path}, timeout)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> None:
        assert self.process.poll() is None, f"standalone exited:\n{self.log_tail()}"

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Poll the REST API until the run has finished; return it."""
        deadline = time.monotonic() + timeout
        run = {}
        while time.monotonic() < deadline:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            self.alive()
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} still {run.get('state')} after {timeout}s")

    def wait_for_backfill(self, backfill_id: int, timeout: float) -> dict:
        """Poll the REST API until the scheduler marks the backfill completed; return it."""
        deadline = time.monotonic() + timeout
        backfill: dict = {}
        while time.monotonic() < deadline:
            backfill = self.api("GET", f"backfills/{backfill_id}")
            if backfill["completed_at"]:
                return backfill
            self.alive()
            time.sleep(2)
        raise AssertionError(f"backfill {backfill_id} not completed after {timeout}s: {json.dumps(backfill)}")


def wait_ready(sa: Standalone, dag_ids: tuple[str, ...], timeout: float) -> None:
    """Healthy scheduler, dag-processor and triggerer, and the DAGs parsed into the DB."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        sa.alive()
        try:
            health = httpx.get(f"{sa.url}/api/v2/monitor/health", timeout=5).json()
            components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all((health.get(c) or {}).get("status") == "healthy" for c in components):
                dags = {d["dag_id"] for d in sa.api("GET", "dags", params={"limit": 100})["dags"]}
                if set(dag_ids) <= dags:
                    return
                last = f"parsed so far: {sorted(dags)}"
            else:
                last = json.dumps(health)
        except httpx.HTTPError as exc:  # the api-server is still starting
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"standalone not ready after {timeout}s ({last}):\n{sa.log_tail()}")


def _live_members(pgid: int) -> list[int]:
    """Pids of the group's processes that still run (zombies wait for init and hold nothing)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue  # exited while we looked
        if int(group) == pgid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def stop_group(process: subprocess.Popen, grace: float = 90) -> None:
    """SIGINT to the whole group (each component shuts down cleanly), then SIGKILL what is left.

    The leader only relays its components' output and can outlive them waiting on their pipes:
    once it is the last one running it gets a few seconds, then SIGKILL.
    """
    pgid = process.pid  # started with start_new_session: the group id is the leader's pid
    try:
        os.killpg(pgid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    leader_alone_since = None
    while (members := _live_members(pgid)) and time.monotonic() < deadline:
        if process.poll() is None and members == [pgid]:
            leader_alone_since = leader_alone_since or time.monotonic()
            if time.monotonic() - leader_alone_since > 5:
                break
        time.sleep(0.5)
    if _live_members(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=30)
