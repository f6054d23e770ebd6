"""
### batch_inference: every active customer scored by the champion, into the predictions table

Runs when the `features` DAG publishes the `customer_features` Asset: the day scored is the
event's `extra["dates"]` (several days, oldest first, when events queued while a run was busy, and
the snapshots published after them that Airflow gave no run: `propensity.core.assets.left_behind`).
Trigger it by hand with the `day` Param (YYYY-MM-DD) to score or backfill one day.

1. **score_customers**: Spark reads `offline/customer_features/date=D/`, scores it with the
   deployed champion (the very file the model server reads, loaded once per worker), stages the
   rows per partition and replaces the day's rows of `predictions` in one transaction (SQLite
   locally, Postgres in prod). Each row names the model version that scored it and this run's id.

**No champion yet**: the task is skipped with the reason; nothing is written.
**On-call**: a failed run leaves the day's previous predictions exactly as they were (readers
never see a gap or a mix), so clearing the task is always safe. "predictions database ... is
unreachable": Postgres is down or the URL/credentials are wrong (`batch.db_url`, password in
`PGPASSWORD`); the retries pick it up once it is back. "no feature snapshot for D": run the
`features` DAG for D first (fails at once, no retries). Backfill: trigger with `{"day": "YYYY-MM-DD"}` per day.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from propensity.core.assets import customer_features
from propensity.core.dags import START_DATE, default_args, fail_fast


@dag(
    schedule=[customer_features],
    start_date=START_DATE,  # never gates a business date: any logical date runs that day
    catchup=False,
    max_active_runs=1,  # one swap of a day at a time; queued asset events are scored in order
    default_args=default_args(retries=3, retry_delay=dt.timedelta(minutes=1)),
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Score this day (YYYY-MM-DD); empty: the triggering customer_features event's as_of",
        ),
    },
    tags=["propensity", "batch", "spark"],
    doc_md=__doc__,
)
def batch_inference() -> None:
    @task(inlets=[customer_features])
    def score_customers(triggering_asset_events=None, inlet_events=None) -> list[dict]:
        from airflow.sdk.exceptions import AirflowSkipException

        from propensity.batch.scoring import NoChampionDeployed, days_to_score, score_day
        from propensity.core import assets
        from propensity.core.settings import get_settings

        ctx = get_current_context()
        # Every snapshot date of each event ("dates"; "as_of" alone from older producers).
        as_of, left = assets.run_values(
            triggering_asset_events, inlet_events, customer_features, "dates", fallback_key="as_of"
        )
        if left:
            print(f"snapshots whose events Airflow gave no run, scored here too: {left}")
        as_of += left
        days = days_to_score(ctx["params"].get("day"), as_of, ctx.get("logical_date"))
        try:
            return [score_day(get_settings(), day, run_id=ctx["run_id"]) for day in days]
        except NoChampionDeployed as exc:
            raise AirflowSkipException(str(exc)) from exc

    score_customers()


fail_fast(batch_inference())
