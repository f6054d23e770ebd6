"""
### training: build, judge and (maybe) promote a purchase-propensity model

Runs weekly, by hand from the UI (Params below), or when the `drift` DAG triggers it (its conf
names the reason, the drifted features and the `as_of` date). The training date `as_of` is the
`training_end_date` Param, else the trigger's `as_of`, else the end of the run's interval.

1. **build_training_set**: weekly cutoffs whose 30-day labels have matured by `as_of`;
   each cutoff's point-in-time snapshot read directly (snapshot_join); stored once per `as_of` under `training_sets/`.
2. **train_model**: XGBoost (hist) with early stopping; one MLflow run with metrics, plots,
   baselines, lineage and the model (XGBoost JSON).
3. **evaluate_model**: challenger vs champion on the same evaluation cutoffs: overall AUC, key
   segments, paired bootstrap interval of the difference.
4. **register_challenger**: a registry version with alias `challenger` (idempotent per date).
5. **deploy_shadow**: the challenger is deployed beside the champion (parity-checked); the API
   scores it on live traffic too, logged and never answered.
6. **shadow_test**: challenger beside champion on logged traffic (or the latest snapshot); a
   challenger that could not be deployed fails it.
7. **gate_model**: the declarative gate (`training.gate` in config); report logged to MLflow.
8. **promote_model**: compare-and-set move of `champion` when the gate passed and `dry_run` is
   off; a refusal is recorded with its reasons and the challenger leaves shadow.
9. **deploy_champion**: the model server serves the champion; parity-checked.

`rollback=true` skips training and restores the previous champion, then deploys it.

**On-call**: read the gate report in the MLflow run (`gate/gate_report.html`). `propensity audit`
lists every alias move. To block promotions, trigger with `dry_run=true` or pause this DAG; to
force one, fix the gate thresholds in config (they are data) and re-run. A failed deploy leaves
the previous version live and names the reason in the task log and the audit log.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from propensity.core.dags import START_DATE, default_args, fail_fast


def _as_of() -> dt.date:
    from propensity.training.steps import resolve_as_of

    ctx = get_current_context()
    end = ctx.get("data_interval_end") or ctx["dag_run"].run_after
    return resolve_as_of(ctx["params"].get("training_end_date"), ctx["dag_run"].conf, end.date())


def _settings():
    from propensity.core.settings import get_settings

    return get_settings()


@dag(
    schedule=CronDataIntervalTimetable("0 3 * * 1", timezone="UTC"),
    start_date=START_DATE,  # never gates a business date: any training date runs
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "reason": Param(
            "scheduled", type="string", description="Why this training runs (recorded on the MLflow run)"
        ),
        "training_end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Train as of this date (YYYY-MM-DD); empty: the run's date",
        ),
        "dry_run": Param(False, type="boolean", description="Evaluate and gate, but never promote"),
        "rollback": Param(
            False, type="boolean", description="Skip training: restore the previous champion and deploy it"
        ),
    },
    tags=["propensity", "training"],
    doc_md=__doc__,
)
def training() -> None:
    @task.branch
    def choose_path() -> str:
        return "rollback_champion" if get_current_context()["params"]["rollback"] else "build_training_set"

    @task
    def build_training_set() -> dict:
        from propensity.training.steps import prepare_training_set

        return prepare_training_set(_settings(), _as_of())

    @task
    def train_model(training_set: dict) -> dict:
        from propensity.training.steps import train_challenger

        ctx = get_current_context()
        conf = ctx["dag_run"].conf or {}
        return train_challenger(_settings(), _as_of(), reason=ctx["params"]["reason"], trigger=conf)

    @task
    def evaluate_model(run: dict) -> dict:
        from propensity.training.steps import evaluate_challenger

        return evaluate_challenger(_settings(), _as_of(), run)

    @task
    def register_challenger(run: dict, comparison: dict) -> str:
        from propensity.training.steps import register_challenger as register

        return register(_settings(), _as_of(), run, comparison)

    @task
    def deploy_shadow(version: str) -> dict:
        from propensity.training.steps import deploy_shadow as deploy

        return deploy(_settings(), _as_of(), version)

    @task
    def shadow_test(version: str, deployment: dict) -> dict:
        from propensity.training.steps import shadow_challenger

        return shadow_challenger(_settings(), _as_of(), version, deployment)

    @task
    def gate_model(version: str, run: dict, comparison: dict, shadow: dict) -> dict:
        from propensity.training.steps import gate_challenger

        return gate_challenger(_settings(), _as_of(), version, run, comparison, shadow)

    @task
    def promote_model(version: str, report: dict) -> dict:
        from propensity.training.steps import promote_challenger

        params = get_current_context()["params"]
        return promote_challenger(
            _settings(), _as_of(), version, report, dry_run=params["dry_run"], reason=params["reason"]
        )

    @task
    def rollback_champion() -> dict:
        from propensity.training.steps import rollback_champion as rollback

        return rollback(_settings(), _as_of(), reason=get_current_context()["params"]["reason"])

    @task(trigger_rule="none_failed_min_one_success")
    def deploy_champion() -> dict:
        from propensity.training.steps import deploy_champion as deploy

        return deploy(_settings(), _as_of())

    path = choose_path()
    training_set = build_training_set()
    run = train_model(training_set)
    comparison = evaluate_model(run)
    version = register_challenger(run, comparison)
    shadow = shadow_test(version, deploy_shadow(version))
    report = gate_model(version, run, comparison, shadow)
    promoted = promote_model(version, report)
    rolled_back = rollback_champion()
    path >> [training_set, rolled_back]
    [promoted, rolled_back] >> deploy_champion()


fail_fast(training())
