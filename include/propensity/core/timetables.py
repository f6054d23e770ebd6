"""The pipeline's daily timetable: a run owns one UTC calendar day, however it was started.

Airflow's cron interval timetable gives a scheduled run for logical date D the interval
[D, D+1), but a manual run (``airflow dags test ingest D``, the UI's trigger form) the
interval that *ended* before D. The same logical date would then mean two different days.
Here a manual run covers the UTC day containing its logical date, exactly what the
scheduled run for that day covers, so a re-run by hand reproduces the scheduled one.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.timetables.base import DataInterval
from airflow.timetables.interval import CronDataIntervalTimetable
from pendulum import DateTime


class DailyUtcTimetable(CronDataIntervalTimetable):
    """Daily at 00:00 UTC; the data interval is the whole UTC day of the logical date."""

    description = "Daily, one UTC day per run (manual runs cover the day of their logical date)"

    def __init__(self, cron: str = "0 0 * * *", timezone: str = "UTC") -> None:
        super().__init__(cron, timezone)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        start = run_after.in_timezone("UTC").start_of("day")
        return DataInterval(start=start, end=start + timedelta(days=1))
