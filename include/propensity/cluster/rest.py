"""Airflow's public REST API (``/api/v2``) as the cluster's demo and tests use it: a token from the
SimpleAuthManager, calls, and waits on run states with progress."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from propensity.cluster.config import ClusterSettings

FINISHED = ("success", "failed")


@dataclass
class Airflow:
    url: str
    username: str
    password: str
    _token: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cfg: ClusterSettings) -> Airflow:
        passwords = json.loads((cfg.state / "passwords.json").read_text())
        return cls(f"http://{cfg.host}:{cfg.ports.airflow_api}", "admin", passwords["admin"])

    def token(self) -> str:
        if self._token is None:
            r = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        r = httpx.request(
            method,
            f"{self.url}/api/v2/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
            **kwargs,
        )
        if not r.is_success:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:2000]}")
        return r.json()

    def wait_dags(self, dag_ids: tuple[str, ...], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {d["dag_id"] for d in self.api("GET", "dags", params={"limit": 100})["dags"]}
            if set(dag_ids) <= seen:
                return
            time.sleep(2)
        raise RuntimeError(f"DAGs not parsed after {timeout}s: missing {sorted(set(dag_ids) - seen)}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"conf": conf or {}, "logical_date": None}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "logical_date"})[
            "dag_runs"
        ]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})[
            "task_instances"
        ]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        value = entry.get("value")
        if isinstance(value, str):  # the stored JSON, as the metadata DB holds it
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def progress(self, dag_id: str, run_id: str) -> str:
        tis = self.task_instances(dag_id, run_id)
        return " ".join(f"{t['task_id']}={t['state'] or 'none'}" for t in tis)

    def wait_run(self, dag_id: str, run_id: str, timeout: float, every: float = 10) -> dict:
        """Poll until the run finished; print its task states when they change."""
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            line = self.progress(dag_id, run_id)
            if line != last:
                print(f"  {dag_id} {run_id}: {run['state']}  {line}", flush=True)
                last = line
            if run["state"] in FINISHED:
                return run
            time.sleep(every)
        raise RuntimeError(f"{dag_id} {run_id} not finished after {timeout}s ({last})")

    def wait_idle(self, dag_ids: tuple[str, ...], timeout: float, settle: float = 30) -> list[dict]:
        """Wait until no run of ``dag_ids`` is queued or running for ``settle`` seconds (Asset-triggered
        runs appear a little after the run that fed them); every run, printed as it finishes."""
        deadline, quiet_since, done = time.monotonic() + timeout, None, {}
        while time.monotonic() < deadline:
            active = 0
            for dag_id in dag_ids:
                for run in self.runs(dag_id):
                    key = (dag_id, run["dag_run_id"])
                    if run["state"] in FINISHED:
                        if key not in done:
                            done[key] = run
                            print(f"  {dag_id} {run['dag_run_id']}: {run['state']}", flush=True)
                    else:
                        active += 1
            if active:
                quiet_since = None
            else:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return list(done.values())
            time.sleep(5)
        raise RuntimeError(f"runs of {dag_ids} still active after {timeout}s")
