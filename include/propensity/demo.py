"""``make demo``: the pipeline on embedded defaults, through real Airflow DAG runs.

Each day is a real DagRun of the repo's DAGs (``DAG.test``: recorded in Airflow's metadata DB,
tasks run by the task SDK), all in one process so Airflow is imported once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("propensity.demo")

DEMO_FIRST_DAY = dt.date(2011, 11, 1)
DEMO_LAST_DAY = dt.date(2011, 12, 9)


def _quiet_airflow() -> None:
    """Keep the terminal for the demo's own progress; Airflow's task logs still go to logs/."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for name in ("airflow", "great_expectations", "py4j", "feast", "mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    from propensity.settings import project_home

    bag = DagBag(dag_folder=str(project_home() / "dags"), safe_mode=False)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id]


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


def run_days(dag_id: str, days: list[dt.date], conf: dict | None = None) -> list[tuple[dt.date, str]]:
    """One DagRun per day, in order, with a progress bar; returns (day, state)."""
    from tqdm import tqdm

    from propensity.settings import project_home

    dag = load_dag(dag_id)
    states = []
    log_file = project_home() / "logs" / "demo.log"
    with airflow_output_to(log_file) as terminal:
        bar = tqdm(days, desc=f"{dag_id:>16}", unit="run", file=terminal, dynamic_ncols=True)
        for day in bar:
            bar.set_postfix_str(day.isoformat())
            logical = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
            run = dag.test(logical_date=logical, run_after=logical, run_conf=conf)
            states.append((day, str(getattr(run, "state", "unknown"))))
        bar.close()
    failed = [d for d, s in states if s != "success"]
    if failed:
        print(f"  {len(failed)} {dag_id} run(s) did not succeed: {failed[:10]}; task logs: {log_file}")
    return states


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def summarise_partitions(zone: str, dataset: str, days: list[dt.date]) -> list[tuple[dt.date, int, str]]:
    import pyarrow.parquet as pq

    from propensity.collect import zone_store
    from propensity.settings import get_settings
    from propensity.storage import PART_FILE, partition_exists, partition_parts

    store = zone_store(get_settings())
    rows = []
    for day in days:
        if partition_exists(store, zone, dataset, day):
            path = store.path(*partition_parts(zone, dataset, day), PART_FILE)
            with store.fs.open_input_file(path) as fh:
                rows.append(
                    (
                        day,
                        pq.ParquetFile(fh).metadata.num_rows,
                        store.uri_of(*partition_parts(zone, dataset, day)),
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first-day", type=dt.date.fromisoformat, default=DEMO_FIRST_DAY)
    parser.add_argument("--last-day", type=dt.date.fromisoformat, default=DEMO_LAST_DAY)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    _quiet_airflow()

    from propensity.datasets import ensure_source
    from propensity.settings import get_settings

    settings = get_settings()
    source_path = ensure_source(settings)
    if source_path != settings.source.path:
        get_settings.cache_clear()
        os.environ["PROPENSITY_SOURCE__PATH"] = source_path
        settings = get_settings()
    print(f"source: {settings.source.path}\nzones:  {settings.zone_root}\n", flush=True)

    started = time.monotonic()
    days = days_between(args.first_day, args.last_day)
    print(f"[1/1] ingest: {len(days)} daily DAG runs, {days[0]} .. {days[-1]}", flush=True)
    states = run_days("ingest", days)
    failed = [(d, s) for d, s in states if s != "success"]

    print("\nraw partitions (rows, location):")
    total = 0
    for day, rows, uri in summarise_partitions("raw", "events", days):
        total += rows
        print(f"  {day}  {rows:6d}  {uri}")
    print(f"\n{len(days)} days, {total} rows collected in {time.monotonic() - started:.0f}s")
    if failed:
        print(f"FAILED runs: {failed}")
        return 1
    print(
        f"Airflow UI: make airflow (http://localhost:8080); logs under {Path(os.environ.get('AIRFLOW_HOME', '.')) / 'logs'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
