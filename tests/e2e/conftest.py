"""One `airflow standalone` for the end-to-end tests, on a temporary DB, zone root and ports.

The session fixture first seeds a small zone from the real data (three weeks of January 2011:
validated events and the feature snapshots the training DAG needs) and keeps a copy of it for
the test that compares Airflow's outputs with a second run of the same days. Then it starts
standalone (scheduler, dag-processor, api-server, triggerer) with known credentials. Nothing is
written into the repository: DB, logs, zones, MLflow, Feast, the model repository and the
password file live under pytest's temporary folder. Teardown stops the whole process group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from e2e_airflow import (
    AIRFLOW,
    SEED_FIRST,
    SEED_LAST,
    SEED_SCRIPT,
    TRAINING_AS_OF,
    USERNAME,
    WATCHDOG_SCRIPT,
    Standalone,
    free_port,
    pipeline_env,
    run,
    stop_group,
    wait_ready,
)


@pytest.fixture(scope="session")
def airflow_standalone(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Iterator[Standalone]:
    """`airflow standalone` over a seeded zone; DAGs are unpaused but nothing is scheduled by time."""
    home = tmp_path_factory.mktemp("standalone")
    port = free_port()
    password = secrets.token_urlsafe(12)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USERNAME: password}))
    passwords.chmod(0o600)
    env = pipeline_env(home) | {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # Log servers of the scheduler's workers and the triggerer: free ports, not 8793/8794.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # Every component signs and checks task tokens with one key, and none lands in airflow.cfg.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        # Only the runs the tests ask for: no cron or asset-triggered runs of today's date (they
        # would fail for lack of data and take the two cores); backfills and manual triggers run.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }

    script = home / "seed.py"
    script.write_text(SEED_SCRIPT)
    seed = subprocess.Popen(
        [sys.executable, str(script), str(SEED_FIRST), str(SEED_LAST), str(TRAINING_AS_OF)],
        env=env | {"PROPENSITY_VALIDATION__DATA_DOCS": "false"},  # docs are not what is under test
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run([AIRFLOW, "db", "migrate"], env, timeout=300)
    reference_db = home / "reference-airflow.db"
    with closing(sqlite3.connect(home / "airflow.db")) as src, closing(sqlite3.connect(reference_db)) as dst:
        src.backup(dst)  # a consistent copy even with a WAL beside the file
    out, _ = seed.communicate(timeout=900)
    assert seed.returncode == 0, f"seeding the zone failed:\n{out[-5000:]}"
    seed_copy = home / "seed-zones"
    shutil.copytree(home / "zones", seed_copy)

    log = home / "standalone.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [AIRFLOW, "standalone"],
            env=env,
            cwd=home,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown reaches every component
        )
    watchdog = subprocess.Popen(
        ["bash", "-c", WATCHDOG_SCRIPT, "watchdog", str(os.getpid()), str(process.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives pytest when pytest is killed: that is its job
    )
    sa = Standalone(
        url=f"http://127.0.0.1:{port}",
        env=env,
        home=home,
        password=password,
        seed=seed_copy,
        reference_db=reference_db,
        process=process,
        log=log,
    )
    try:
        wait_ready(sa, ("ingest", "features", "training"), timeout=300)
        yield sa
    finally:
        stop_group(process)
        watchdog.kill()
        watchdog.wait()
