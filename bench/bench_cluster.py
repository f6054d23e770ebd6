"""The native cluster against the local profile, from one run (needs `make cluster-demo` first).

Usage: python bench/bench_cluster.py [--days 30,330] [--no-local-bootstrap]

1. From the cluster's own record of the demo (Airflow's REST API): every task's queue-to-start
   latency under Celery and its hand-off (upstream end -> start), the bootstrap run's wall time and
   each daily cycle's (ingest start -> its batch_inference done). The bootstrap's two task bodies
   are then run on the local profile (zones in a folder, local[2], SQLite), the same eleven months:
   the peer.
2. The feature job: for each window (the first N validated days of the demo), the snapshot as of
   the day after, computed by ``compute_features`` (what a DAG run executes) in a fresh process three
   ways, each reading the cluster's S3 (moto) zone: ``local[2]`` with the S3 read on the driver
   through Arrow (``zone_io=driver``, the peer); the standalone master (2 workers x 1 core) with
   ``zone_io=driver``; the standalone master with ``zone_io=executors`` (features/distributed_io.py).
   Printed per run: wall time and the driver's peak memory (RSS of the Python process plus its JVM,
   sampled every 0.1 s).

On 2 cores no speed-up is expected: the goals are that the cluster costs at most 1.5x the local run,
and that with executor IO the driver's memory does not grow with the window.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchline import bench_line

JOB = """
import datetime as dt, sys
from propensity.core.settings import get_settings
from propensity.features.job import compute_features
compute_features(get_settings(), [dt.date.fromisoformat(sys.argv[1])])
"""


LOCAL_BOOTSTRAP = """
import datetime as dt, sys, time
from propensity.core.settings import get_settings
from propensity.features.bootstrap import history_features, ingest_history
first, last = (dt.date.fromisoformat(a) for a in sys.argv[1:3])
settings = get_settings()
t0 = time.monotonic()
ingest_history(settings, first, last)
t1 = time.monotonic()
history_features(settings, first, last, None)
print(f"{t1 - t0:.1f} {time.monotonic() - t1:.1f}")
"""


def local_bootstrap(cfg, workdir: Path) -> tuple[float, float]:
    """The bootstrap's two task bodies on the local profile (zones in a folder, local[2], SQLite
    online store, no Airflow): the same work as the cluster's bootstrap run."""
    import shutil

    home = workdir / "local-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPENSITY_")}
    env |= {
        "PROPENSITY_PROFILE": "local",
        "PROPENSITY_ZONE_ROOT": str(home / "zones"),
        "PROPENSITY_CACHE_DIR": str(home / "cache"),
        "PROPENSITY_FEATURES__SQLITE_PATH": str(home / "online.db"),
        "PROPENSITY_FEATURES__REGISTRY": str(home / "registry.db"),
        "PROPENSITY_HOME": os.environ.get("PROPENSITY_HOME", str(Path.cwd())),
        "PYSPARK_PYTHON": sys.executable,
    }
    script = workdir / "bootstrap.py"
    script.write_text(LOCAL_BOOTSTRAP)
    done = subprocess.run(
        [sys.executable, str(script), cfg.demo.first_day, cfg.demo.last_day],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"local bootstrap failed:\n{done.stderr[-3000:]}")
    ingest_s, features_s = (float(x) for x in done.stdout.strip().splitlines()[-1].split())
    return ingest_s, features_s


def tree_rss(pid: int) -> int:
    """RSS (bytes) of ``pid`` and every descendant."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            p = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(p)
            rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_job(env: dict[str, str], as_of: dt.date, workdir: Path) -> tuple[float, int]:
    script = workdir / "job.py"
    script.write_text(JOB)
    start, peak = time.monotonic(), 0
    proc = subprocess.Popen(
        [sys.executable, str(script), as_of.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"feature job failed:\n{err[-3000:]}")
    return time.monotonic() - start, peak


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def airflow_figures(cfg, local_bootstrap_args: Path | None = None) -> None:
    """From the cluster's own record (Airflow's REST API) of the demo it ran: every task's queue-to-
    start latency under Celery, and the wall time of the bootstrap run and of each daily cycle
    (ingest -> features -> batch_inference of one day)."""
    from propensity.cluster.demo import DAGS
    from propensity.cluster.rest import Airflow

    af = Airflow.of(cfg)
    waits, handoffs, runs = [], [], {}
    for dag_id in DAGS:
        runs[dag_id] = [r for r in af.runs(dag_id) if r["state"] == "success"]
        for run in runs[dag_id]:
            tis = [t for t in af.task_instances(dag_id, run["dag_run_id"]) if t["state"] == "success"]
            for ti in tis:
                queued, started = _ts(ti.get("queued_when")), _ts(ti.get("start_date"))
                if queued and started:
                    waits.append((started - queued).total_seconds())
                # Handoff: the upstream's end (the latest end before this task was scheduled) to
                # this task's start: scheduler loop + Celery + the worker taking it.
                sched = _ts(ti.get("scheduled_when"))
                ends = [_ts(t["end_date"]) for t in tis if t is not ti and t.get("end_date")]
                before = [e for e in ends if sched and e <= sched]
                if started and before:
                    handoffs.append((started - max(before)).total_seconds())
    if waits:
        print(
            f"Celery queue-to-start: {len(waits)} task instances, p50 {_pct(waits, 0.5):.2f} s, "
            f"p95 {_pct(waits, 0.95):.2f} s, max {max(waits):.2f} s",
            flush=True,
        )
        print(
            bench_line(
                "Airflow task queue-to-start latency p50 (Celery)", _pct(waits, 0.5), None, None, None, "s"
            )
        )
    if handoffs:
        print(
            f"upstream end -> task start: {len(handoffs)} hand-offs, p50 {_pct(handoffs, 0.5):.2f} s, "
            f"p95 {_pct(handoffs, 0.95):.2f} s, max {max(handoffs):.2f} s",
            flush=True,
        )
        figure = "Airflow task hand-off (upstream end -> start) p50 (Celery)"
        print(bench_line(figure, _pct(handoffs, 0.5), None, None, None, "s"))

    def took(run: dict) -> float:
        return (_ts(run["end_date"]) - _ts(run["start_date"])).total_seconds()

    boot = next(iter(runs.get("bootstrap", [])), None)
    if boot is not None:
        conf = boot.get("conf") or {}
        print(
            f"bootstrap {conf.get('first_day')}..{conf.get('last_day')} on the cluster: {took(boot):.0f} s",
            flush=True,
        )
        if local_bootstrap_args is not None:
            ingest_s, features_s = local_bootstrap(cfg, local_bootstrap_args)
            local = ingest_s + features_s
            print(
                f"the same bootstrap on the local profile: ingest {ingest_s:.0f} s + features {features_s:.0f} s"
            )
            print(
                bench_line(
                    "bootstrap (eleven months) on the cluster vs the local profile",
                    took(boot),
                    local,
                    "<= 1.5x",
                    took(boot) <= 1.5 * local,
                    "s",
                )
            )
        else:
            print(bench_line("bootstrap run on the cluster", took(boot), None, None, None, "s"))
    cycles = []
    batches = sorted(runs.get("batch_inference", []), key=lambda r: _ts(r["start_date"]))
    for ingest in sorted(runs.get("ingest", []), key=lambda r: _ts(r["start_date"])):
        began = _ts(ingest["start_date"])
        # The Asset chain: the first batch_inference that started after this ingest ended its cycle.
        scored = next((b for b in batches if _ts(b["start_date"]) >= _ts(ingest["end_date"])), None)
        if scored is not None:
            cycles.append(
                (ingest["logical_date"][:10], took(ingest), (_ts(scored["end_date"]) - began).total_seconds())
            )
    for day, ingest_s, cycle in cycles[:7]:
        print(f"daily cycle {day}: ingest {ingest_s:.0f} s, ingest start -> batch scored {cycle:.0f} s")
    if cycles:
        print(
            bench_line(
                "one daily cycle on the cluster (ingest -> features -> batch)",
                cycles[0][2],
                None,
                None,
                None,
                "s",
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", default="30,330", help="window lengths (validated days read)")
    parser.add_argument("--workdir", default="/tmp/bench-cluster")
    parser.add_argument(
        "--no-local-bootstrap", action="store_true", help="skip the local profile's bootstrap (~4 min)"
    )
    args = parser.parse_args(argv)
    from propensity.cluster import control

    cfg, _, services = control.spec()
    if not control.supervisord_running(cfg):
        raise SystemExit("the cluster is down: make cluster-up && make cluster-demo first")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    airflow_figures(cfg, None if args.no_local_bootstrap else workdir)
    base = control._supervisor_env() | next(s for s in services if s.name == "airflow-worker-1").env
    modes = {
        "local[2] driver-io": {"PROPENSITY_SPARK__MASTER": "local[2]", "PROPENSITY_SPARK__ZONE_IO": "driver"},
        "cluster driver-io": {"PROPENSITY_SPARK__ZONE_IO": "driver"},
        "cluster executor-io": {"PROPENSITY_SPARK__ZONE_IO": "executors"},
    }
    results: dict[str, dict[int, tuple[float, int]]] = {m: {} for m in modes}
    for days in (int(d) for d in args.days.split(",")):
        for mode, extra in modes.items():
            # The job reads every validated day before as_of (the window starts at the first one).
            as_of = dt.date.fromisoformat(cfg.demo.first_day) + dt.timedelta(days=days)
            seconds, peak = run_job(base | extra, as_of, workdir)
            results[mode][days] = (seconds, peak)
            load = os.getloadavg()[0]
            print(
                f"{mode:22} {days:3d} days: {seconds:6.1f} s  driver peak {peak / 2**20:7.0f} MiB  (load {load:.1f})",
                flush=True,
            )
    longest = max(results["local[2] driver-io"])
    shortest = min(results["local[2] driver-io"])
    local_s = results["local[2] driver-io"][longest][0]
    cluster_s = results["cluster executor-io"][longest][0]
    print(
        bench_line(
            "feature job, cluster (2x1 core, executor IO) vs local[2]",
            cluster_s,
            local_s,
            "<= 1.5x",
            cluster_s <= 1.5 * local_s,
            "s",
        )
    )
    grow_exec = results["cluster executor-io"][longest][1] - results["cluster executor-io"][shortest][1]
    grow_drv = results["cluster driver-io"][longest][1] - results["cluster driver-io"][shortest][1]
    print(
        bench_line(
            f"driver memory growth {shortest}->{longest} days, executor IO vs driver IO",
            grow_exec / 2**20,
            grow_drv / 2**20,
            "flat",
            None,
            "MiB",
        )
    )
    print(json.dumps({m: {str(k): v for k, v in r.items()} for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
