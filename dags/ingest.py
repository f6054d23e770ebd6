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
Backfill: `airflow backfill create --dag-id ingest --from-date 2011-03-01 --to-date 2011-03-31`.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import dag, task

from propensity.core.alerts import AlertNotifier
from propensity.core.assets import validated_events
from propensity.core.timetables import DailyUtcTimetable


@dag(
    # An interval timetable: each run owns the day it covers, so a run's output is a
    # function of its data interval, identical for scheduled runs, re-runs and backfills.
    schedule=DailyUtcTimetable(),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "on_failure_callback": AlertNotifier("task_failed"),
    },
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
        from airflow.sdk.exceptions import AirflowFailException

        from propensity.core.settings import get_settings
        from propensity.ingest.validate import ValidationFailed, validate

        try:
            summary = validate(get_settings(), data_interval_start, data_interval_end)
        except ValidationFailed as exc:
            # Deterministic verdict: a retry would fail the same way, so fail now and alert.
            raise AirflowFailException(str(exc)) from exc
        return {k: summary[k] for k in ("day", "status", "counts", "reasons", "outputs")}

    @task(outlets=[validated_events])
    def publish_events(data_interval_start=None, data_interval_end=None, outlet_events=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.ingest.validate import publish

        published = publish(get_settings(), data_interval_start, data_interval_end)
        outlet_events[validated_events].extra = {"day": published["day"]}
        return published

    collect_events() >> validate_events() >> publish_events()


ingest()
