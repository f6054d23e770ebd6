"""
### drift: is the champion's world still the one it was trained on?

Runs daily over the UTC day D = `[data_interval_start, data_interval_end)`, one run at a time
(the cooldown reads the trigger history the previous day wrote).

1. **load_window**: the champion's reference (`reference/<model>/v<N>/`, written at training)
   and the window of D (feature snapshot of D, the last `drift.window_days` days of the
   prediction log, matured predictions labelled from validated events), staged as Parquet
   under `drift/window/date=D/`.
2. **detect_drift** (drift venv, alibi-detect): per-feature KS/CVM and chi-square with a
   Bonferroni/FDR correction, each paired with PSI / normalised Wasserstein; score KS + PSI;
   realised AUC and calibration vs the champion's evaluation AUC.
3. **decide**: the policy (`drift:` in config) turns the signals into one verdict and records a
   trigger in `drift/triggers.json` (cooldown: no second trigger within `cooldown_days` unless
   concept drift is severe).
4. **write_report**: `reports/drift/date=D/report.html` + `summary.json`, logged to MLflow.
5. **retrain_needed** -> **trigger_training**: only when the verdict says so, starts `training`
   with conf `{"reason", "drifted_features", "triggered_by": "drift", "as_of", "severity", "report"}`.
6. **alert_drift**: any drift goes to the notifier.

**On-call**: the report names every drifted feature with its test, p-value and effect size. A
false alarm is tuned in `config/defaults.yaml` (`drift:`), not in code. Re-running a day gives
the same verdict: the history is read as of D. `load_window` fails when no champion reference
exists yet (train and promote a model first).
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from propensity.core.dags import START_DATE, default_args, fail_fast
from propensity.core.timetables import DailyUtcTimetable

# Only an environment read at parse time: the interpreter of the drift venv (numpy<2).
DRIFT_PYTHON = os.environ.get(
    "PROPENSITY_DRIFT_PYTHON", str(Path(__file__).resolve().parents[1] / ".venv-drift" / "bin" / "python")
)


@dag(
    # A CronDataIntervalTimetable("0 0 * * *", "UTC") whose manual runs cover their own day too.
    schedule=DailyUtcTimetable(),
    start_date=START_DATE,  # never gates a business date: any logical date runs that day
    catchup=False,
    max_active_runs=1,  # the cooldown of day D depends on the triggers of the days before
    default_args=default_args(),
    tags=["propensity", "drift", "monitoring"],
    doc_md=__doc__,
)
def drift() -> None:
    @task
    def load_window(data_interval_start=None, data_interval_end=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.core.timeutil import day_of_interval
        from propensity.monitoring.window import load_window

        return load_window(get_settings(), day_of_interval(data_interval_start, data_interval_end))

    @task.external_python(python=DRIFT_PYTHON, expect_airflow=False)
    def detect_drift(manifest: dict) -> dict:
        # Runs in the drift venv: the source is shipped there, so it imports everything itself.
        from propensity.monitoring.detectors import run_checks_from_files

        return run_checks_from_files(manifest)

    @task
    def decide(checks: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from propensity.core.settings import get_settings
        from propensity.core.timeutil import day_of_interval
        from propensity.monitoring.policy import decide_and_record_for

        return decide_and_record_for(
            get_settings(), day_of_interval(data_interval_start, data_interval_end), checks
        )

    @task
    def write_report(manifest: dict, checks: dict, verdict: dict) -> dict:
        from propensity.core.settings import get_settings
        from propensity.monitoring.report import publish_report

        return publish_report(get_settings(), manifest, checks, verdict)

    @task.short_circuit
    def retrain_needed(verdict: dict, report: dict) -> dict | None:
        from propensity.monitoring.policy import training_conf

        return training_conf(verdict, report)

    @task
    def alert_drift(verdict: dict, report: dict) -> bool:
        from propensity.monitoring.report import notify_drift

        return notify_drift(verdict, report)

    manifest = load_window()
    checks = detect_drift(manifest)
    verdict = decide(checks)
    report = write_report(manifest, checks, verdict)
    conf = retrain_needed(verdict, report)
    # conf is the short-circuit's XCom, which also makes it the upstream task.
    TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id="training",
        conf=conf,
        # One training run per drift day: a re-run of this task finds it and does not start another.
        trigger_run_id="drift__{{ ds }}",
        # The drift day's end, not the operator's default (the wall clock): a backfilled or
        # re-run check starts the same run, and a deployment whose schedules end with a replayed
        # export (docker/airflow/airflow_local_settings.py) does not get a run past the DAG's
        # end date, which Airflow creates without a single task and marks successful.
        logical_date="{{ data_interval_end }}",
        skip_when_already_exists=True,
    )
    alert_drift(verdict, report)


fail_fast(drift())
