"""Airflow cluster policy of the deployment (on the PYTHONPATH of its Airflow processes only).

A deployment that replays a historical export (the demo's) has no data for today: when
``PROPENSITY_SCHEDULE_END_DATE`` is set, every time-based schedule ends on that day, so the
scheduler never creates a run for the wall clock's interval. Backfills inside the window, manual
triggers and Asset-triggered runs are unaffected. Unset (a live source): schedules run as written.
"""

from __future__ import annotations

import os


def dag_policy(dag) -> None:
    end = os.environ.get("PROPENSITY_SCHEDULE_END_DATE")
    if not end:
        return
    import pendulum

    limit = pendulum.parse(end, tz="UTC").add(days=1)
    if dag.end_date is None or dag.end_date > limit:
        dag.end_date = limit
