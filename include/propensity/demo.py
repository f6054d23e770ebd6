"""``make demo``: the whole loop on embedded defaults, through real Airflow DAG runs.

(Over 500 lines: it is a script of seven steps, each printing what it did; splitting it would
scatter one story over several files.)

Every step is a DagRun of this repo's DAGs (``DAG.test``: recorded in Airflow's metadata DB,
tasks run by the task SDK), all in one process so Airflow is imported once:

  1. bootstrap   one wide run: collect + validate the history, every feature snapshot
  2. daily       ingest + features DagRuns for the final ``demo.daily_days`` days
  3. training    the first champion (as of the day before the drift window), gated, deployed
  4. batch       batch_inference scores every active customer of the last day
  5. serve       the prediction API answers real customers' requests
  6. drift       a drift DagRun per day of the ``demo.drift_days`` window; the shift triggers training

The dates come from the data (the source's first and last day) and the ``demo:`` settings.
  7. retrain     the training run drift asked for: challenger vs champion through the gate
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from propensity.core.timeutil import wait_until
from propensity.core.zones import DEMO_REPORTS, SNAPSHOTS, VALIDATED_EVENTS

log = logging.getLogger("propensity.demo")


def demo_dates(settings) -> tuple[dt.date, dt.date, dt.date, dt.date, tuple[dt.date, dt.date]]:
    """(first day, bootstrap's last day, last day, first training date, drift days) of the demo.

    From the data and the ``demo:`` settings, never from code: the first and last day are the
    source's own (or ``demo.first_day`` / ``demo.last_day``); the final ``demo.daily_days`` run as
    daily DagRuns; drift checks the ``demo.drift_days`` before them, and the first champion is
    trained as of the day before that window.
    """
    from propensity.ingest.collect import source_span

    d = settings.demo
    first, last = (d.first_day, d.last_day) if d.first_day and d.last_day else source_span(settings)
    first, last = d.first_day or first, d.last_day or last
    bootstrap_last = last - dt.timedelta(days=d.daily_days)
    drift = (bootstrap_last - dt.timedelta(days=d.drift_days - 1), bootstrap_last)
    return first, bootstrap_last, last, drift[0] - dt.timedelta(days=1), drift


def _quiet_airflow() -> None:
    for name in ("airflow", "great_expectations", "py4j", "feast", "mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


_BAG = None


def load_dag(dag_id: str, *, fresh: bool = False):
    """The DAG from this repo's dags/. ``fresh``: parse anew, for a run with a conf.

    DAG.test merges a run's conf into the DAG's params in place, so the next run of the same
    object would inherit it (the first training run's training_end_date, say). A deepcopy is no
    way out: it breaks operators that compare defaults to Airflow's NOTSET sentinel by identity.
    """
    global _BAG
    from airflow.dag_processing.dagbag import DagBag

    from propensity.core.settings import project_home

    if _BAG is None or fresh:
        _BAG = DagBag(dag_folder=str(project_home() / "dags"), safe_mode=False)
        if _BAG.import_errors:
            raise SystemExit(f"DAG import errors: {_BAG.import_errors}")
    dag = _BAG.dags[dag_id]
    if fresh:
        _BAG = None  # the next caller must not get this conf-touched object
    return dag


@contextlib.contextmanager
def airflow_output_to(log_file: Path):
    """Send everything written to fds 1/2 (Airflow's task logs) to ``log_file``; yield the terminal."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_file, "a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def log_file() -> Path:
    from propensity.core.settings import project_home

    return project_home() / "logs" / "demo.log"


def run_dag(dag_id: str, day: dt.date | None, conf: dict | None = None, progress=None) -> str:
    """One DagRun; returns its state. Task output goes to logs/demo.log.

    ``progress``: a callable returning a line to show every few seconds while the run works
    (a long single task, such as the bootstrap, otherwise looks frozen).
    """
    import threading

    dag = load_dag(dag_id, fresh=conf is not None)
    logical = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC) if day else None
    with airflow_output_to(log_file()) as terminal:
        stop = threading.Event()

        def report() -> None:
            started = time.monotonic()
            while not stop.wait(5):
                terminal.write(f"\r  {time.monotonic() - started:5.0f}s  {progress()}    ")
                terminal.flush()
            terminal.write("\n")

        ticker = threading.Thread(target=report, daemon=True) if progress else None
        if ticker:
            ticker.start()
        try:
            run = dag.test(logical_date=logical, run_after=logical or dt.datetime.now(dt.UTC), run_conf=conf)
        finally:
            stop.set()
            if ticker:
                ticker.join()
    return str(getattr(run, "state", "unknown"))


def zone_progress(settings) -> str:
    """Days validated and snapshots written so far (read from the zone itself)."""
    from propensity.core.storage import list_partitions
    from propensity.core.zones import zone_store

    store = zone_store(settings)
    validated = list_partitions(store, *VALIDATED_EVENTS)
    snapshots = list_partitions(store, *SNAPSHOTS)
    last = validated[-1].isoformat() if validated else "-"
    return f"validated days: {len(validated)} (up to {last}); feature snapshots: {len(snapshots)}"


def run_days(dag_ids: list[str], days: list[dt.date]) -> dict[str, list[tuple[dt.date, str]]]:
    """For each day, one DagRun of each DAG in order, with a progress bar."""
    from tqdm import tqdm

    states: dict[str, list[tuple[dt.date, str]]] = {d: [] for d in dag_ids}
    bar = tqdm(
        total=len(days) * len(dag_ids), desc="  daily runs", unit="run", file=sys.stdout, dynamic_ncols=True
    )
    for day in days:
        for dag_id in dag_ids:
            bar.set_postfix_str(f"{dag_id} {day}")
            states[dag_id].append((day, run_dag(dag_id, day)))
            bar.update()
    bar.close()
    return states


def xcom(dag_id: str, task_id: str) -> Any:
    """The latest return value of a task (read from Airflow's metadata DB)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag_id, XComModel.task_id == task_id, XComModel.key == "return_value")
            .order_by(XComModel.timestamp.desc())
            .first()
        )
        return XComModel.deserialize_value(row) if row else None


def queued_training_runs() -> list[tuple[str, dict]]:
    """Training runs the drift DAG requested (without a scheduler, nobody has started them)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        runs = (
            session.query(DagRun)
            .filter(DagRun.dag_id == "training", DagRun.state == DagRunState.QUEUED)
            .all()
        )
        out = [(r.run_id, dict(r.conf or {})) for r in runs]
        for r in runs:
            session.delete(r)  # executed below by the demo itself; a later scheduler must not repeat it
    return out


def step(n: int, total: int, title: str) -> float:
    print(f"\n[{n}/{total}] {title}", flush=True)
    return time.monotonic()


def done(started: float, what: str) -> None:
    print(f"  {what} ({time.monotonic() - started:.0f}s)", flush=True)


def serve_requests(settings, customers: list[str]) -> list[dict]:
    """Start the API (uvicorn, a separate process), ask it about real customers, stop it."""
    import httpx

    port = _free_port()
    env = os.environ | {"PROPENSITY_API_KEYS": "demo-key", "PROPENSITY_SERVING__PORT": str(port)}
    with open(log_file(), "a") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "propensity.cli", "serve"], env=env, stdout=sink, stderr=sink
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            return False

        try:
            wait_until(ready, timeout_s=90, interval_s=0.5, what=f"the API ready on {url}")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; see {log_file()}") from exc
        answers = []
        with httpx.Client(base_url=url, headers={"X-API-Key": "demo-key"}, timeout=5) as client:
            for cid in customers:
                t0 = time.perf_counter()
                r = client.post("/predict", json={"customer_id": cid})
                answers.append(
                    {
                        "customer_id": cid,
                        "status": r.status_code,
                        "ms": (time.perf_counter() - t0) * 1000,
                        **(r.json() if r.status_code == 200 else {"error": r.text[:200]}),
                    }
                )
        return answers
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_summary(settings, summary: dict[str, Any]) -> None:
    """Row counts per stage, the models beside their baselines, the drift verdicts."""
    from propensity.core.storage import list_partitions
    from propensity.core.zones import zone_store

    store = zone_store(settings)
    counts = (summary.get("bootstrap") or {}).get("ingest", {}).get("counts", {})
    first, final = summary.get("first_champion") or {}, summary.get("final_champion") or {}
    drift = summary.get("drift") or []
    rows = [
        ("raw rows (bootstrap year)", counts.get("raw")),
        ("validated rows", counts.get("validated")),
        ("quarantined rows", counts.get("quarantined")),
        ("exact duplicates removed", counts.get("duplicates_removed")),
        ("validated days (all runs)", len(list_partitions(store, *VALIDATED_EVENTS))),
        ("feature snapshots", len(list_partitions(store, *SNAPSHOTS))),
        ("customers scored in batch", (summary.get("batch") or {}).get("rows")),
        ("API requests answered", (summary.get("serve") or {}).get("ok")),
        (
            "drift runs / drift days / triggers",
            f"{len(drift)} / {sum(1 for d in drift if d['drift'])} / {sum(1 for d in drift if d['trigger'])}",
        ),
    ]
    print("  stage counts:")
    for name, value in rows:
        print(f"    {name:<38} {value if value is not None else '-'}")

    def auc(d: dict, key: str) -> str:
        v = d.get(key)
        return f"{v:.4f}" if isinstance(v, float) else "-"

    print("  models (evaluation AUC on their own latest matured cutoffs):")
    print(
        f"    first champion v{first.get('champion')}: {auc(first, 'eval_auc')}  | recency baseline {auc(first, 'baseline_recency_auc')}  | frequency baseline {auc(first, 'baseline_frequency_auc')}"
    )
    print(
        f"    champion now   v{final.get('champion')}: {auc(final, 'eval_auc')}  | recency baseline {auc(final, 'baseline_recency_auc')}  | frequency baseline {auc(final, 'baseline_frequency_auc')}"
    )
    for r in summary.get("retrain") or []:
        verdict = "PROMOTED" if (r.get("promote") or {}).get("promoted") else "REFUSED"
        failed = [c["name"] for c in (r.get("gate") or {}).get("checks", []) if not c["passed"]]
        print(f"    retrain {r['run_id']}: {verdict}" + (f" (failed: {', '.join(failed)})" if failed else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--start-at",
        type=int,
        default=1,
        choices=range(1, 7),
        help="resume at this step, reusing earlier steps' output",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    _quiet_airflow()

    from propensity.core.settings import get_settings
    from propensity.ingest.datasets import ensure_source

    settings = get_settings()
    source_path = ensure_source(settings)
    if source_path != settings.source.path:
        os.environ["PROPENSITY_SOURCE__PATH"] = source_path
        get_settings.cache_clear()
        settings = get_settings()
    # Served through Triton for the whole demo: the DAGs deploy into it and the API calls it
    # (PROPENSITY_SERVING__BACKEND=inprocess runs the demo without it).
    os.environ.setdefault("PROPENSITY_SERVING__BACKEND", "triton")
    # This machine is shared (other jobs on its cores): an answer may wait longer than the 100 ms
    # SLA's per-call timeout (serving.request_timeout_s, 0.09 s), which would turn it into a 503.
    os.environ.setdefault("PROPENSITY_SERVING__REQUEST_TIMEOUT_S", "2")
    get_settings.cache_clear()
    settings = get_settings()
    triton = None
    if settings.serving.backend == "triton":
        from propensity.serving.triton_server import TritonServer

        triton = TritonServer(settings, log_path=Path(log_file()).with_name("triton.log"))
        print(f"Triton: starting {triton.command()[0]} (log {triton.log_path})", flush=True)
        triton.start()
        print(f"Triton: ready, gRPC {triton.grpc_url}, HTTP {triton.http_url}", flush=True)
    try:
        return _steps(args, settings, triton)
    finally:
        if triton is not None:
            triton.stop()
            print("Triton: stopped", flush=True)


def print_triton_index(triton) -> None:
    """What Triton itself says it serves."""
    if triton is None:
        return
    from propensity.serving.triton_server import repository_index

    print(f"  Triton repository index ({triton.http_url}):")
    for m in repository_index(triton.http_url):
        reason = f"  ({m['reason'][:80]})" if m["reason"] else ""
        print(f"    {m['name']} v{m['version']}: {m['state']}{reason}")


def _steps(args: argparse.Namespace, settings, triton) -> int:
    FIRST_DAY, BOOTSTRAP_LAST_DAY, LAST_DAY, FIRST_TRAINING_AS_OF, DRIFT_DAYS = demo_dates(settings)  # noqa: N806
    total_started = time.monotonic()
    print(
        f"source: {settings.source.path}\nzones:  {settings.zone_root}\nAirflow task logs: {log_file()}",
        flush=True,
    )
    summary: dict[str, Any] = {}
    steps = 7

    t = step(
        1,
        steps,
        f"bootstrap: one wide DagRun, collect + validate {FIRST_DAY} .. {BOOTSTRAP_LAST_DAY}, all snapshots",
    )
    if args.start_at <= 1:
        state = run_dag(
            "bootstrap",
            BOOTSTRAP_LAST_DAY,
            {
                "first_day": FIRST_DAY.isoformat(),
                "last_day": BOOTSTRAP_LAST_DAY.isoformat(),
                "daily_snapshots_from": DRIFT_DAYS[0].isoformat(),
            },
            progress=lambda: zone_progress(settings),
        )
        ingest = xcom("bootstrap", "ingest_history") or {}
        feats = xcom("bootstrap", "history_features") or {}
        summary["bootstrap"] = {"state": state, "ingest": ingest, "features": feats}
        print(f"  state {state}: {ingest.get('days')} days, counts {ingest.get('counts')}")
        print(f"  quarantined by reason: {ingest.get('reasons')}")
        print(
            f"  closed days (explained by the trading calendar): {len(ingest.get('closed_empty_days', {}))}; failed days: {ingest.get('failed_days')}"
        )
        print(f"  feature snapshots: {feats.get('snapshots')} ({feats.get('first')} .. {feats.get('last')})")
        if state != "success":
            print(f"bootstrap failed: see {log_file()}")
            return 1
    done(t, "bootstrap done")

    if args.start_at <= 2:
        t = step(
            2,
            steps,
            f"daily DagRuns: ingest + features, {BOOTSTRAP_LAST_DAY + dt.timedelta(days=1)} .. {LAST_DAY}",
        )
        days = [
            BOOTSTRAP_LAST_DAY + dt.timedelta(days=i)
            for i in range(1, (LAST_DAY - BOOTSTRAP_LAST_DAY).days + 1)
        ]
        daily = run_days(["ingest", "features"], days)
        bad = {k: [(d.isoformat(), s) for d, s in v if s != "success"] for k, v in daily.items()}
        summary["daily"] = {k: len(v) for k, v in daily.items()} | {"not_successful": bad}
        print(f"  {len(days)} days x 2 DAGs; not successful: {bad if any(bad.values()) else 'none'}")
        done(t, "daily runs done")

    if args.start_at <= 3:
        t = step(3, steps, f"training: first champion as of {FIRST_TRAINING_AS_OF}")
        state = run_dag(
            "training",
            FIRST_TRAINING_AS_OF,
            {"reason": "first model (demo)", "training_end_date": FIRST_TRAINING_AS_OF.isoformat()},
        )
        first_gate = xcom("training", "gate_model") or {}
        print(
            f"  state {state}; gate {'PROMOTE' if first_gate.get('passed') else 'REFUSE'} ({first_gate.get('mode')})"
        )
        from propensity.training.steps import champion_summary

        champ = champion_summary(settings)
        summary["first_champion"] = champ
        print_triton_index(triton)
        print(
            f"  champion v{champ.get('champion')}: eval AUC {champ.get('eval_auc', float('nan')):.4f} | recency baseline {champ.get('baseline_recency_auc', float('nan')):.4f} | frequency baseline {champ.get('baseline_frequency_auc', float('nan')):.4f}"
        )
        done(t, "training done")

    if args.start_at <= 4:
        t = step(
            4, steps, f"batch_inference: score every active customer as of {LAST_DAY + dt.timedelta(days=1)}"
        )
        batch_state = run_dag(
            "batch_inference",
            LAST_DAY + dt.timedelta(days=1),
            {"day": (LAST_DAY + dt.timedelta(days=1)).isoformat()},
        )
        scored = xcom("batch_inference", "score_customers") or [{}]
        batch = scored[-1] if isinstance(scored, list) else scored
        summary["batch"] = {"state": batch_state, **{k: v for k, v in batch.items() if k != "top"}}
        print(
            f"  state {batch_state}: {batch.get('rows')} rows written with model v{batch.get('model_version')}"
        )
        from propensity.batch.predictions_db import day_summary, db_from_settings

        # Read back from the predictions table, as a downstream team would.
        for cid, score in day_summary(db_from_settings(settings), LAST_DAY + dt.timedelta(days=1), top_n=5)[
            "top"
        ]:
            print(f"    top customer {cid}: {score:.3f}")
        done(t, "batch done")

    if args.start_at <= 5:
        t = step(5, steps, "serve: the prediction API answers real customers")
        from propensity.features.job import read_snapshot

        snap = read_snapshot(settings, LAST_DAY + dt.timedelta(days=1)).to_pandas()
        customers = snap["customer_id"].head(20).tolist() + ["no-such-customer"]
        answers = serve_requests(settings, customers)
        ok = [a for a in answers if a["status"] == 200]
        for a in ok[:5]:
            print(
                f"    POST /predict {a['customer_id']}: score {a.get('score', float('nan')):.3f} (model v{a.get('model_version')}, features as of {a.get('feature_timestamp')}, {a['ms']:.1f} ms)"
            )
        unknown = answers[-1]
        print(f"    POST /predict no-such-customer: HTTP {unknown['status']}")
        where = (
            f"Triton ({settings.serving.triton_protocol} {settings.serving.triton_url})"
            if triton
            else "in-process"
        )
        print(f"    answered by {where}, model version(s) {sorted({a['model_version'] for a in ok})}")
        lat = sorted(a["ms"] for a in ok)
        summary["serve"] = {
            "requests": len(answers),
            "ok": len(ok),
            "p50_ms": lat[len(lat) // 2] if lat else None,
        }
        done(t, f"{len(ok)}/{len(answers) - 1} known customers answered")

    t = step(6, steps, f"drift: one DagRun per day, {DRIFT_DAYS[0]} .. {DRIFT_DAYS[1]}")
    drift_days = [
        DRIFT_DAYS[0] + dt.timedelta(days=i) for i in range((DRIFT_DAYS[1] - DRIFT_DAYS[0]).days + 1)
    ]
    verdicts = []
    retrain: list[dict] = []
    from tqdm import tqdm

    for day in tqdm(drift_days, desc="  drift", unit="day", file=sys.stdout, dynamic_ncols=True):
        state = run_dag("drift", day)
        decision = xcom("drift", "decide") or {}
        verdicts.append(
            {
                "day": day.isoformat(),
                "state": state,
                "drift": decision.get("drift"),
                "trigger": decision.get("trigger"),
                "reasons": decision.get("reasons"),
                "features": decision.get("drifted_features"),
            }
        )
        for run_id, conf in queued_training_runs():
            tqdm.write(
                f"  {day}: drift triggered training ({run_id}): {conf.get('reason')} {conf.get('drifted_features')}",
                file=sys.stdout,
            )
            tstate = run_dag("training", None, conf)
            gate = xcom("training", "gate_model") or {}
            promote = xcom("training", "promote_model") or {}
            retrain.append(
                {"run_id": run_id, "state": tstate, "conf": conf, "gate": gate, "promote": promote}
            )
            tqdm.write(
                f"    retrain {tstate}: gate {'PROMOTE' if gate.get('passed') else 'REFUSE'}; {promote.get('detail') or promote}",
                file=sys.stdout,
            )
    summary["drift"] = verdicts
    summary["retrain"] = retrain
    triggered = [v for v in verdicts if v["trigger"]]
    print(
        f"  {sum(1 for v in verdicts if v['drift'])} drift days, {len(triggered)} trigger(s): {[v['day'] for v in triggered]}"
    )
    done(t, "drift done")

    step(7, steps, "summary")
    from propensity.training.gate import render_markdown
    from propensity.training.steps import champion_summary

    for r in retrain:
        if r["gate"].get("checks"):
            print(f"  gate report of the retrain drift asked for ({r['run_id']}):")
            print(render_markdown(r["gate"]))
    champ = champion_summary(settings)
    summary["final_champion"] = champ
    print_summary(settings, summary)
    print_triton_index(triton)
    out = Path(settings.zone_root, *DEMO_REPORTS, "demo_summary.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    example_id = "<customer id>"
    with contextlib.suppress(Exception):  # a customer of the last snapshot, for the curl line
        from propensity.features.job import read_snapshot

        example_id = read_snapshot(settings, LAST_DAY + dt.timedelta(days=1)).column("customer_id")[0].as_py()
    print(
        f"""
  where to look:
    Airflow UI    make airflow   -> http://localhost:8080 (DAG runs above, their task logs)
    MLflow UI     make mlflow    -> http://localhost:5000 (runs with plots, gate reports; registry aliases)
    Data Docs     {settings.zone_root}/reports/data_docs/index.html
    drift report  {settings.zone_root}/reports/drift/date=<day>/report.html
    API           make serve     -> curl -H 'X-API-Key: local-dev-key' -d '{{"customer_id": "{example_id}"}}' localhost:8000/predict
    audit log     .venv/bin/propensity audit
    summary       {out}
  total {time.monotonic() - total_started:.0f}s"""
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
