"""``make cluster-demo``: the loop through the cluster's real scheduler, driven over its REST API.

1. every DAG unpaused; ``bootstrap`` triggered over REST on the demo window (config/cluster.yaml);
2. ``training`` triggered with Params (``training_end_date``): the first champion, deployed to the
   S3 model repository;
3. an on-call backfill of the following days with ``airflow backfill create --dag-id ingest``: each
   ingest run publishes ``validated_events``, which triggers ``features``, whose ``customer_features``
   triggers ``batch_inference``; every run is awaited over REST with its task states;
4. ``drift`` over REST for the day after the backfill: its verdict, and the ``training`` run it
   triggers when the data moved (awaited too);
5. where everything landed: S3 areas, prediction rows, MLflow runs and versions, the Spark
   applications and the tasks each worker ran, the Celery worker of each task, the Triton index,
   an API answer.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

from propensity.cluster import control, inspect
from propensity.cluster.rest import Airflow

DAGS = ("bootstrap", "ingest", "features", "batch_inference", "training", "drift")
DAILY = ("ingest", "features", "batch_inference")


def airflow_cli(services, *args: str, timeout: float = 300) -> str:
    env = control._supervisor_env() | next(s for s in services if s.name == "airflow-scheduler").env
    done = subprocess.run(
        [control.Path(sys.executable).with_name("airflow").as_posix(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def resume(af: Airflow, dag_id: str, conf: dict) -> str | None:
    """A run of ``dag_id`` with this conf that succeeded or is still going (the demo resumes it)."""
    for run in reversed(af.runs(dag_id)):
        same = all((run.get("conf") or {}).get(k) == v for k, v in conf.items())
        if same and run["state"] in ("success", "running", "queued"):
            print(f"[demo] resuming {dag_id} {run['dag_run_id']} ({run['state']})", flush=True)
            return run["dag_run_id"]
    return None


def backfill(af: Airflow, services, demo, timeout: float) -> None:
    print(
        f"[demo] on-call backfill: airflow backfill create --dag-id ingest {demo.backfill_from}..{demo.backfill_to}"
    )
    out = airflow_cli(
        services,
        "backfill",
        "create",
        "--dag-id",
        "ingest",
        "--from-date",
        demo.backfill_from,
        "--to-date",
        demo.backfill_to,
        "--reprocess-behavior",
        "completed",
        "--max-active-runs",
        "1",  # validation bands learn from the days before: one day at a time
    )
    print("  " + out.strip().splitlines()[-1] if out.strip() else "  (backfill created)", flush=True)
    runs = af.wait_idle(DAILY, timeout)
    failed = [(r["dag_id"], r["dag_run_id"]) for r in runs if r["state"] != "success"]
    if failed:
        raise RuntimeError(f"runs failed: {failed}")


def drift_check(af: Airflow, day: str, timeout: float) -> dict:
    """The drift DAG for ``day`` (an earlier run of that day is resumed): its verdict, and the training
    run it triggered (``drift__<day>``), awaited, when the verdict asked for one."""
    logical = f"{day}T00:00:00Z"
    earlier = [r for r in af.runs("drift") if (r.get("logical_date") or "").startswith(day)]
    if earlier and earlier[-1]["state"] in ("success", "running", "queued"):
        run_id = earlier[-1]["dag_run_id"]
        print(f"[demo] resuming drift {run_id} ({earlier[-1]['state']})", flush=True)
    else:
        run_id = af.api("POST", "dags/drift/dagRuns", json={"logical_date": logical, "conf": {}})[
            "dag_run_id"
        ]
        print(f"[demo] drift for {day} triggered over REST: {run_id}", flush=True)
    if af.wait_run("drift", run_id, timeout)["state"] != "success":
        raise RuntimeError(f"drift {run_id} failed")
    verdict = af.xcom("drift", run_id, "decide")
    states = {t["task_id"]: t["state"] for t in af.task_instances("drift", run_id)}
    drifted = verdict.get("drifted_features") if isinstance(verdict, dict) else None
    print(
        f"[demo] drift verdict {day}: trigger={verdict.get('trigger')} severity={verdict.get('severity')} "
        f"drifted={drifted} reason={verdict.get('reason')}",
        flush=True,
    )
    out = {"run_id": run_id, "verdict": verdict, "training": None}
    if states.get("trigger_training") == "success":
        training_id = f"drift__{day}"
        print(f"[demo] drift triggered training {training_id}", flush=True)
        training = af.wait_run("training", training_id, timeout)
        if training["state"] != "success":
            raise RuntimeError(f"training {training_id}, triggered by drift, failed")
        # A run created past the DAG's end date has no task and is still marked successful.
        ran = {t["task_id"]: t["state"] for t in af.task_instances("training", training_id)}
        if ran.get("train_model") != "success":
            raise RuntimeError(f"training {training_id} succeeded without training: {ran}")
        out["training"] = training_id
    else:
        print(f"[demo] drift did not trigger training (trigger_training={states.get('trigger_training')})")
    return out


def daily_outputs(cfg, secrets) -> dict[str, str]:
    """sha256 of every zone object the daily DAGs write for the backfilled days."""
    first = dt.date.fromisoformat(cfg.demo.backfill_from)
    last = dt.date.fromisoformat(cfg.demo.backfill_to)
    out: dict[str, str] = {}
    for i in range((last - first).days + 2):
        day = (first + dt.timedelta(days=i)).isoformat()
        for prefix in ("zones/raw/events", "zones/validated/events", "zones/offline/customer_features"):
            out |= inspect.content_hashes(cfg, secrets, f"{prefix}/date={day}/")
    return out


def run_demo(timeout: float = 3600, *, verify_backfill: bool = True) -> dict:
    cfg, secrets, services = control.spec()
    demo = cfg.demo
    af = Airflow.of(cfg)
    started = time.monotonic()
    print(f"[demo] Airflow {af.url}: waiting for the DAGs to be parsed", flush=True)
    af.wait_dags(DAGS)
    for dag_id in DAGS:
        af.unpause(dag_id)
    print(f"[demo] unpaused {', '.join(DAGS)}", flush=True)

    conf = {
        "first_day": demo.first_day,
        "last_day": demo.last_day,
        "daily_snapshots_from": demo.daily_snapshots_from,
    }
    run_id = resume(af, "bootstrap", conf) or af.trigger("bootstrap", conf | {"data_docs": False})
    print(f"[demo] bootstrap {demo.first_day}..{demo.last_day} triggered over REST: {run_id}", flush=True)
    if af.wait_run("bootstrap", run_id, timeout)["state"] != "success":
        raise RuntimeError(f"bootstrap {run_id} failed: {cfg.logs}/airflow")

    params = {"training_end_date": demo.training_as_of, "reason": "cluster-demo"}
    run_id = resume(af, "training", params) or af.trigger("training", params)
    print(f"[demo] training as of {demo.training_as_of} triggered with Params: {run_id}", flush=True)
    if af.wait_run("training", run_id, timeout)["state"] != "success":
        raise RuntimeError(f"training {run_id} failed: {cfg.logs}/airflow")

    backfill(af, services, demo, timeout)
    hashes = daily_outputs(cfg, secrets)
    if verify_backfill:
        # On-call: the same days again, as after an incident; every output keeps its exact bytes.
        backfill(af, services, demo, timeout)
        again = daily_outputs(cfg, secrets)
        changed = sorted(k for k in hashes.keys() | again.keys() if hashes.get(k) != again.get(k))
        if changed:
            raise RuntimeError(f"the re-run backfill changed {len(changed)} objects: {changed[:5]}")
        print(f"[demo] backfill re-run: {len(again)} objects, identical sha256 to the first pass", flush=True)
    # The day after the backfill: its snapshot (from the last backfilled day) is the newest.
    drift_day = (dt.date.fromisoformat(demo.backfill_to) + dt.timedelta(days=1)).isoformat()
    drift = drift_check(af, drift_day, timeout)
    report = summary(cfg, secrets, af) | {"daily_hashes": hashes, "drift": drift}
    print(f"[demo] done in {time.monotonic() - started:.0f} s", flush=True)
    return report


def summary(cfg, secrets, af: Airflow) -> dict:
    objects = inspect.s3_objects(cfg, secrets)
    print(f"\n== S3 (moto, http://{cfg.host}:{cfg.ports.s3}, bucket {cfg.bucket}): {len(objects)} objects")
    for area, n in inspect.zone_summary(objects).items():
        print(f"  s3://{cfg.bucket}/{area}/  {n}")
    rows = inspect.prediction_rows(cfg)
    print(f"\n== predictions (postgres {cfg.postgres.predictions_db}): {rows}")
    runs = inspect.mlflow_runs(cfg, "purchase_propensity")
    print(f"\n== MLflow http://{cfg.host}:{cfg.ports.mlflow}: {len(runs)} runs")
    for r in runs[:5]:
        info = r["info"]
        print(
            f"  http://{cfg.host}:{cfg.ports.mlflow}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
            f"  artifacts {info['artifact_uri']}"
        )
    versions = inspect.registered_versions(cfg, "purchase_propensity")
    for v in versions:
        print(f"  registered {v['name']} v{v['version']} aliases={v.get('aliases', [])}")
    print(f"\n== Spark master http://{cfg.host}:{cfg.ports.spark_master_ui}")
    per_worker = inspect.tasks_per_worker(cfg)
    for app in inspect.spark_applications(cfg):
        print(
            f"  {app['id']} {app['name']} {app['state']} cores={app.get('cores')} tasks per worker: "
            f"{per_worker.get(app['id'], {})}"
        )
    tis = inspect.task_instances(af, DAGS)
    hosts = {}
    for ti in tis:
        hosts.setdefault(ti.get("hostname") or "-", []).append(ti["task_id"])
    print(f"\n== task instances by Celery worker: { {h: len(v) for h, v in hosts.items()} }")
    try:
        index = inspect.triton_index(cfg)
    except Exception as exc:  # noqa: BLE001 - printed: the summary reports what it cannot reach
        index = [{"error": str(exc)}]
    print(f"\n== Triton http://{cfg.host}:{cfg.ports.triton_http}/v2/repository/index")
    for model in index:
        print(f"  {model}")
    customer = inspect.top_customer(cfg)
    answer = inspect.api_answer(cfg, secrets, customer) if customer else (None, "no predictions")
    print(f"\n== API http://{cfg.host}:{cfg.ports.api}/predict {customer}: {answer}")
    print(f"\nlogs: {cfg.logs}")
    return {
        "objects": objects,
        "predictions": rows,
        "mlflow_runs": runs,
        "versions": versions,
        "tasks_per_worker": per_worker,
        "hosts": hosts,
        "triton": index,
        "api": answer,
    }


def main() -> int:
    run_demo()
    return 0
