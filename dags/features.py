"""
### features: customer snapshots in the offline store, then online in Feast

Runs when the `validated_events` Asset is updated (each validated day V makes the snapshot as
of V + 1 computable) and daily at 00:00 UTC, so `airflow backfill create` can replay history.

**Which snapshot a run computes**: a scheduled, backfill or manual run for logical date D owns
the UTC day `[D, D+1)` (`DailyUtcTimetable`, as in `ingest`: `airflow dags test features D` and
the UI's trigger cover the same day as the scheduled run for D) and computes the snapshot as of
its `data_interval_end` = D + 1, i.e. from every validated event up to the end of day D. An
asset-triggered run computes V + 1 for each validated day V it was triggered by, and for every day
published after those that Airflow gave no run (`propensity.core.assets.left_behind`); its
`customer_features` event lists every snapshot date (`dates`) and validated day (`days`).

1. **compute_features**: Spark computes, for snapshot date S, every customer active in the 365
   days before S from validated events before S 00:00 UTC, and replaces
   `offline/customer_features/date=S/` atomically (the same bytes on every re-run).
2. **materialize_features**: Feast loads the snapshot into the online store (SQLite locally,
   Redis in prod) and publishes the `customer_features` Asset with `extra={"as_of": S}`.

**On-call**: a failed `compute_features` names the validated partition it is missing: run
`ingest` for that day, then clear the task. Nothing is half-written: each snapshot date is
either the old file or the new one. A scheduled run that starts before `ingest` published the
day retries (only the run's own last day missing: ingest may still be running) and succeeds
once it is published; any other missing or malformed input fails at once without retries.
Backfill: `airflow backfill create --dag-id features --from-date FIRST --to-date LAST`.
Bootstrap a year in one Spark pass: `propensity features FIRST LAST --every 7`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task
from airflow.timetables.assets import AssetOrTimeSchedule

from propensity.core.assets import customer_features, validated_events
from propensity.core.dags import START_DATE, default_args, fail_fast
from propensity.core.timetables import DailyUtcTimetable


@dag(
    # DailyUtcTimetable, as in ingest: a manual run for D covers [D, D+1) like the scheduled
    # one, so `airflow dags test features D` reproduces the scheduled run's snapshot.
    schedule=AssetOrTimeSchedule(timetable=DailyUtcTimetable(), assets=validated_events),
    start_date=START_DATE,  # never gates a business date: any logical date runs that day
    catchup=False,
    max_active_runs=1,  # materializations land in date order: the online store keeps the last write
    default_args=default_args(retries=3, retry_delay=dt.timedelta(minutes=2)),
    tags=["propensity", "features", "feast"],
    doc_md=__doc__,
)
def features() -> None:
    # The Assets as inlets too: the events this run was not given (propensity.core.assets).
    @task(inlets=[validated_events, customer_features])
    def compute_features(triggering_asset_events=None, inlet_events=None, data_interval_end=None) -> dict:
        from propensity.core import assets
        from propensity.core.settings import get_settings
        from propensity.features.job import compute_features_for_run

        days, left = assets.run_values(
            triggering_asset_events,
            inlet_events,
            validated_events,
            "day",
            done_asset=customer_features,
            done_key="days",
        )
        if left:
            print(f"validated days whose events Airflow gave no run, computed here too: {left}")
        days += left
        return compute_features_for_run(get_settings(), days, data_interval_end) | {"days": days}

    @task(outlets=[customer_features])
    def materialize_features(computed: dict, outlet_events=None) -> dict:
        import datetime as dt

        from propensity.core.settings import get_settings
        from propensity.features.store import materialize_dates

        dates = [dt.date.fromisoformat(d) for d in computed["as_of"]]
        result = materialize_dates(get_settings(), dates)
        outlet_events[customer_features].extra = {
            "as_of": max(dates).isoformat(),
            "dates": [d.isoformat() for d in sorted(dates)],
            "days": computed.get("days", []),
        }
        return result

    materialize_features(compute_features())


fail_fast(features())
