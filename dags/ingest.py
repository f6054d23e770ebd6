"""
### ingest: raw transactions in, one validated partition per day

Runs daily over the UTC day `[data_interval_start, data_interval_end)`.

1. **collect_events**: reads the configured source (a historical export replayed a day at a
   time, or a landing zone of daily files), maps its columns to the canonical event schema and
   writes `raw/events/date=D/` atomically. Re-running a day replaces the partition exactly.
2. **validate_events**: runs the Great Expectations suite (`propensity.ingest.expectations`) on the day.
   Bad rows go to `quarantine/events/date=D/` with the name of every failed check, exact copies
   are removed and counted, good rows go to `validated/events/date=D/`. Writes
   `reports/validation/date=D/summary.json` and Data Docs (link in the task log).
3. **publish_events**: announces the day on the Asset `validated_events` (extra `{"day": D}`),
   which schedules the features DAG.

**On-call**: a failed `collect_events` names the file and the problem (missing, empty, truncated,
wrong format, missing column). A failed `validate_events` lists the batch checks that failed with
observed and expected values (volume for the weekday, share of guests, median sale, share of
quarantined or duplicated lines) and links the Data Docs; an alert is raised through
`propensity.core.alerts`, nothing is published and downstream DAGs do not run for that day. It does
not retry: the same data gives the same verdict. Fix the source, then clear `collect_events`:
the re-run publishes normally. Raw data is never modified by validation.
Retries are for transient errors only (backoff doubling); a bad source file, a mapping error or
a day the export does not cover fails at once, without retries, naming the file and the problem.
Backfill: `airflow backfill create --dag-id ingest --from-date FIRST --to-date LAST` (YYYY-MM-DD).
"""

from __future__ import annotations

from airflow.sdk import dag, task

from propensity.core.alerts import AlertNotifier
from propensity.core.assets import validated_events
from propensity.core.dags import START_DATE, default_args, fail_fast
from propensity.core.timetables import DailyUtcTimetable


@dag(
    # An interval timetable: each run owns the day it covers, so a run's output is a
    # function of its data interval, identical for scheduled runs, re-runs and backfills.
    schedule=DailyUtcTimetable(),
    start_date=START_DATE,  # never gates a business date: any logical date runs that day
    catchup=False,
    max_active_runs=4,
    default_args=default_args(on_failure_callback=AlertNotifier("task_failed")),
    tags=["propensity", "ingest"],
    doc_md=__doc__,
)
def ingest() -> None:
    @task
    def collect_events(data_interval_start=None, data_interval_end=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.ingest.collect import collect

        return collect(get_settings(), data_interval_start, data_interval_end).as_dict()

    @task(on_failure_callback=AlertNotifier("validation_failed"))
    def validate_events(data_interval_start=None, data_interval_end=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.ingest.validate import validate

        # ValidationFailed is a DataError: a deterministic verdict fails at once (fail_fast).
        summary = validate(get_settings(), data_interval_start, data_interval_end)
        return {k: summary[k] for k in ("day", "status", "counts", "reasons", "outputs")}

    @task(outlets=[validated_events])
    def publish_events(data_interval_start=None, data_interval_end=None, outlet_events=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.ingest.validate import publish

        published = publish(get_settings(), data_interval_start, data_interval_end)
        outlet_events[validated_events].extra = {"day": published["day"]}
        return published

    collect_events() >> validate_events() >> publish_events()


fail_fast(ingest())
