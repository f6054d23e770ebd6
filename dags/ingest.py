"""
### ingest: raw transactions in, one canonical partition per day

Runs daily over the UTC day `[data_interval_start, data_interval_end)`.

1. **collect_events**: reads the configured source (a historical export replayed a day at a
   time, or a landing zone of daily files), maps its columns to the canonical event schema and
   writes `raw/events/date=D/` atomically. Re-running a day replaces the partition exactly.

**On-call**: a failed `collect_events` names the file and the problem (missing, empty, truncated,
wrong format, missing column). Nothing already collected is touched. Fix the source, then clear
the task: the retry writes the same partition the scheduled run would have.
Backfill: `airflow backfill create --dag-id ingest --from-date 2011-03-01 --to-date 2011-03-31`.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import dag, task

from propensity.timetables import DailyUtcTimetable


@dag(
    # An interval timetable: each run owns the day it covers, so a run's output is a
    # function of its data interval, identical for scheduled runs, re-runs and backfills.
    schedule=DailyUtcTimetable(),
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    tags=["propensity", "ingest"],
    doc_md=__doc__,
)
def ingest() -> None:
    @task
    def collect_events(data_interval_start=None, data_interval_end=None) -> dict:
        from propensity.collect import collect
        from propensity.settings import get_settings

        return collect(get_settings(), data_interval_start, data_interval_end).as_dict()

    collect_events()


ingest()
