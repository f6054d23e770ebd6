"""`airflow backfill create`, executed by standalone's scheduler, gives what the scheduled runs give.

The backfill runs in the shared standalone (conftest.py) over the six days right after the seeded
history. The same days are run again the way the scheduler runs a day (`DAG.test`, what
`airflow dags test` calls: one DagRun per logical date, in date order) in a second zone root that
holds the same seed, against a second Airflow DB. Every partition file the backfill wrote must have
the bytes of its twin; a second backfill that reprocesses the completed days must change nothing;
no more runs may have been running at once than the backfill's max_active_runs allows.

Not compared byte for byte: the validation summary's learned bands (reports/validation). A day
learns its bands from the summaries of the days before it that have finished, and with two runs
at once the day before may still be running; the verdict, counts and reasons are compared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from e2e_airflow import ROOT, SEED_LAST, Standalone, pipeline_env

from propensity.core.zones import QUARANTINED_EVENTS, RAW_EVENTS, SNAPSHOTS, VALIDATED_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST = SEED_LAST + dt.timedelta(days=1)  # Tuesday 25 January 2011
LAST = FIRST + dt.timedelta(days=5)  # Sunday 30th; Saturday 29th is a closed day with no lines
DAYS = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
MAX_ACTIVE_RUNS = 2  # below ingest's own max_active_runs (4), so the backfill's limit is the one tested
# Feature runs for the last two days: logical date D computes the snapshot as of D + 1.
FEATURE_DAYS = DAYS[-2:]
INGEST_ZONES = (RAW_EVENTS, VALIDATED_EVENTS, QUARANTINED_EVENTS)
FEATURE_ZONE = SNAPSHOTS

# `airflow dags test DAG D` for each DAG@D given, in order, in one process (Airflow imported once).
REFERENCE_SCRIPT = """
import datetime as dt, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
if bag.import_errors:
    raise SystemExit(f"DAG import errors: {bag.import_errors}")
for spec in sys.argv[2:]:
    dag_id, day = spec.split("@")
    logical = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(0), tzinfo=dt.UTC)
    state = str(bag.dags[dag_id].test(logical_date=logical).state)
    if state != "success":
        raise SystemExit(f"{dag_id} {day}: {state}")
"""

Run = tuple[str, str, str, str]  # logical date, state, start, end


def file_hashes(zone_root: Path, zone: tuple[str, str], days: list[dt.date]) -> dict[str, str]:
    """SHA-256 of every file under the days' partitions (so a stray temp file or part shows up)."""
    out = {}
    for day in days:
        folder = zone_root.joinpath(*zone, f"date={day.isoformat()}")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            out[str(path.relative_to(zone_root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def part_files(zone: tuple[str, str], days: list[dt.date]) -> list[str]:
    """What a partition holds: one part file per day, nothing half-written, nothing appended."""
    return sorted(f"{'/'.join(zone)}/date={d}/part-0.parquet" for d in days)


def partition_rows(zone_root: Path, zone: tuple[str, str], day: dt.date) -> int:
    return pq.read_metadata(zone_root.joinpath(*zone, f"date={day.isoformat()}", "part-0.parquet")).num_rows


def summary(zone_root: Path, day: dt.date) -> dict:
    return json.loads((zone_root / "reports" / "validation" / f"date={day}" / "summary.json").read_text())


def backfill_runs(db: Path, dag_id: str) -> list[Run]:
    """The DAG's backfill runs, from the metadata DB, in logical-date order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(
            "SELECT logical_date, state, start_date, end_date FROM dag_run "
            "WHERE dag_id = ? AND run_type = 'backfill' ORDER BY logical_date",
            (dag_id,),
        ).fetchall()


def days_and_states(runs: list[Run]) -> list[tuple[str, str]]:
    return [(logical[:10], state) for logical, state, _, _ in runs]


def most_running_at_once(runs: list[Run]) -> int:
    """The largest number of runs whose [start, end] intervals overlap at one instant."""
    events = []
    for _, _, start, end in runs:
        events += [(dt.datetime.fromisoformat(start), 1), (dt.datetime.fromisoformat(end), -1)]
    most = running = 0
    # At equal instants the end sorts first (-1 < 1): a run that ends as another starts is no overlap.
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    return most


def backfill(sa: Standalone, dag_id: str, days: list[dt.date], *extra: str) -> dict:
    """`airflow backfill create` over ``days``, then wait until the scheduler has completed it."""
    before = {b["id"] for b in sa.api("GET", "backfills", params={"dag_id": dag_id})["backfills"]}
    sa.airflow(
        "backfill", "create", "--dag-id", dag_id,
        "--from-date", days[0].isoformat(), "--to-date", days[-1].isoformat(),
        "--max-active-runs", str(MAX_ACTIVE_RUNS), *extra,
    )  # fmt: skip
    backfills = sa.api("GET", "backfills", params={"dag_id": dag_id})["backfills"]
    (created,) = [b for b in backfills if b["id"] not in before]
    assert created["max_active_runs"] == MAX_ACTIVE_RUNS
    return sa.wait_for_backfill(created["id"], timeout=1200)


def try_numbers(sa: Standalone, dag_id: str) -> dict[tuple[str, str], int]:
    """(run id, task id) -> try number, for every task of the DAG's backfill runs."""
    runs = sa.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, "run_type": "backfill"})["dag_runs"]
    out = {}
    for run in runs:
        path = f"dags/{dag_id}/dagRuns/{quote(run['dag_run_id'], safe='')}/taskInstances"
        for ti in sa.api("GET", path)["task_instances"]:
            out[(run["dag_run_id"], ti["task_id"])] = ti["try_number"]
    return out


@dataclass
class Reference:
    """The scheduled-equivalent runs, started in the background beside the backfill."""

    process: subprocess.Popen
    home: Path

    def zone(self) -> Path:
        """Wait for the runs to finish; their zone root."""
        code = self.process.wait(timeout=1200)
        assert code == 0, (self.home / "reference.log").read_text(errors="replace")[-5000:]
        return self.home / "zones"


@pytest.fixture(scope="module")
def reference(
    airflow_standalone: Standalone, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """The same days in a second home: the seed's copy and a fresh migrated DB of its own."""
    home = tmp_path_factory.mktemp("reference")
    shutil.copytree(airflow_standalone.seed, home / "zones")
    shutil.copyfile(airflow_standalone.reference_db, home / "airflow.db")
    env = pipeline_env(home) | {
        # The export's parsed cache is read-only after the seed: share it instead of parsing again.
        "PROPENSITY_CACHE_DIR": airflow_standalone.env["PROPENSITY_CACHE_DIR"],
    }
    script = home / "reference.py"
    script.write_text(REFERENCE_SCRIPT)
    specs = [f"ingest@{d}" for d in DAYS] + [f"features@{d}" for d in FEATURE_DAYS]
    with (home / "reference.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), str(ROOT / "dags"), *specs],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
    try:
        yield Reference(process, home)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture(scope="module")
def ingest_backfill(airflow_standalone: Standalone, reference: Reference) -> tuple[dict, list[Run]]:
    """The first ingest backfill, completed; its runs as the metadata DB recorded them then."""
    done = backfill(airflow_standalone, "ingest", DAYS)
    return done, backfill_runs(airflow_standalone.db, "ingest")


def test_ingest_backfill_gives_the_scheduled_runs_partitions(
    airflow_standalone: Standalone, ingest_backfill: tuple[dict, list[Run]], reference: Reference
) -> None:
    ours, theirs = airflow_standalone.zone_root, reference.zone()
    assert days_and_states(ingest_backfill[1]) == [(d.isoformat(), "success") for d in DAYS]
    for zone in INGEST_ZONES:
        written = file_hashes(ours, zone, DAYS)
        assert sorted(written) == part_files(zone, DAYS)
        assert written == file_hashes(theirs, zone, DAYS), zone
    for day in DAYS:
        s, twin = summary(ours, day), summary(theirs, day)
        assert s["status"] == twin["status"] == "passed"
        assert (s["counts"], s["reasons"], s["failed"]) == (twin["counts"], twin["reasons"], twin["failed"])
        # Every raw line is accounted for exactly once: validated, quarantined or a removed copy.
        c = s["counts"]
        assert c["raw"] == c["validated"] + c["quarantined"] + c["duplicates_removed"]
        assert partition_rows(ours, RAW_EVENTS, day) == c["raw"]
        assert partition_rows(ours, VALIDATED_EVENTS, day) == c["validated"]
        assert partition_rows(ours, QUARANTINED_EVENTS, day) == c["quarantined"]
    # Real lines of the real file: a trading Tuesday, and the closed Saturday's empty day.
    assert [summary(ours, d)["counts"]["raw"] for d in DAYS] == [1654, 1289, 1575, 1008, 0, 722]


def test_ingest_backfill_keeps_max_active_runs(ingest_backfill: tuple[dict, list[Run]]) -> None:
    created, runs = ingest_backfill
    assert created["max_active_runs"] == MAX_ACTIVE_RUNS
    # The limit held, and was reached: six queued days ran two at a time, not one after another.
    assert most_running_at_once(runs) == MAX_ACTIVE_RUNS


def test_reprocessing_the_backfill_reruns_every_task_and_changes_no_byte(
    airflow_standalone: Standalone, ingest_backfill: tuple[dict, list[Run]]
) -> None:
    sa = airflow_standalone
    before = {zone: file_hashes(sa.zone_root, zone, DAYS) for zone in INGEST_ZONES}
    first, _ = ingest_backfill
    second = backfill(sa, "ingest", DAYS, "--reprocess-behavior", "completed")
    assert second["id"] != first["id"] and second["reprocess_behavior"] == "completed"

    runs = backfill_runs(sa.db, "ingest")
    assert days_and_states(runs) == [(d.isoformat(), "success") for d in DAYS]  # the same runs, no new ones
    assert most_running_at_once(runs) <= MAX_ACTIVE_RUNS
    tries = try_numbers(sa, "ingest")
    assert len(tries) == 3 * len(DAYS) and set(tries.values()) == {2}  # every task ran a second time
    assert {zone: file_hashes(sa.zone_root, zone, DAYS) for zone in INGEST_ZONES} == before


def test_features_backfill_gives_the_scheduled_runs_snapshots(
    airflow_standalone: Standalone, ingest_backfill: tuple[dict, list[Run]], reference: Reference
) -> None:
    """Snapshots as of the last two days, from the days the ingest backfill validated."""
    sa = airflow_standalone
    backfill(sa, "features", FEATURE_DAYS)

    runs = backfill_runs(sa.db, "features")
    assert days_and_states(runs) == [(d.isoformat(), "success") for d in FEATURE_DAYS]
    snapshots = [d + dt.timedelta(days=1) for d in FEATURE_DAYS]
    ours, theirs = sa.zone_root, reference.zone()
    written = file_hashes(ours, FEATURE_ZONE, snapshots)
    assert sorted(written) == part_files(FEATURE_ZONE, snapshots)
    assert written == file_hashes(theirs, FEATURE_ZONE, snapshots)
    # One row per customer active before the date (since 4 January): never a repeated customer.
    customers = []
    for day in snapshots:
        path = ours.joinpath(*FEATURE_ZONE, f"date={day}", "part-0.parquet")
        ids = pq.read_table(path, columns=["customer_id"]).column("customer_id").to_pylist()
        assert len(ids) == len(set(ids))
        customers.append(len(ids))
    assert customers == [690, 706]
