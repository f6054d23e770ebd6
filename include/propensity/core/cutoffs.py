"""The weekly cutoff grid: one snapshot grid shared by every training run, bootstrap and drift.

A cutoff c is a date; its training row holds the features as of c and the label "bought in
[c, c + horizon)". The grid is anchored on a fixed weekday (not counted back from the training
date), so every training run reuses the same feature snapshots.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from propensity.core.errors import DataError
from propensity.core.settings import TrainingSettings


class CutoffPlanError(DataError, ValueError):
    """Too little matured history for a training plan as of the date."""


@dataclass(frozen=True)
class CutoffPlan:
    """Which weekly cutoffs train, early-stop and evaluate. Evaluation cutoffs are the latest matured ones."""

    train: list[dt.date]
    valid: list[dt.date]
    evaluation: list[dt.date]

    @property
    def all(self) -> list[dt.date]:
        return [*self.train, *self.valid, *self.evaluation]


def plan_cutoffs(first_day: dt.date, as_of: dt.date, cfg: TrainingSettings) -> CutoffPlan:
    """Weekly cutoffs on a fixed weekday, up to the latest one whose label has matured by ``as_of``.

    A label for cutoff c needs the horizon after it: c + horizon <= as_of. The weekday grid is
    fixed (not counted back from ``as_of``), so every training run reuses the same feature
    snapshots, and the plan is a function of ``as_of`` alone. Only the latest ``cfg.max_cutoffs``
    are kept.
    """
    latest = as_of - dt.timedelta(days=cfg.label_horizon_days)
    latest -= dt.timedelta(days=(latest.weekday() - cfg.cutoff_weekday) % 7)
    earliest = first_day + dt.timedelta(days=cfg.min_history_days)
    cutoffs: list[dt.date] = []
    c = latest
    while c >= earliest:
        cutoffs.append(c)
        c -= dt.timedelta(days=cfg.cutoff_step_days)
    cutoffs.sort()
    # The most recent ones: a long history must not make the training set unbounded.
    cutoffs = cutoffs[-cfg.max_cutoffs :]
    needed = cfg.eval_cutoffs + cfg.validation_cutoffs + 1
    if len(cutoffs) < needed:
        raise CutoffPlanError(
            f"only {len(cutoffs)} matured weekly cutoffs between {earliest} and {latest}; "
            f"need at least {needed} (train, validation, evaluation). Collect more history before {as_of}."
        )
    n_eval, n_valid = cfg.eval_cutoffs, cfg.validation_cutoffs
    return CutoffPlan(
        train=cutoffs[: -(n_eval + n_valid)],
        valid=cutoffs[-(n_eval + n_valid) : -n_eval],
        evaluation=cutoffs[-n_eval:],
    )


def cutoff_grid(first_day: dt.date, last_day: dt.date, cfg: TrainingSettings) -> list[dt.date]:
    """Every cutoff any training run between these days can use: the snapshots to precompute."""
    start = first_day + dt.timedelta(days=cfg.min_history_days)
    start += dt.timedelta(days=(cfg.cutoff_weekday - start.weekday()) % 7)
    return [start + dt.timedelta(days=i) for i in range(0, (last_day - start).days + 1, cfg.cutoff_step_days)]


def as_dict(plan: CutoffPlan) -> dict[str, list[str]]:
    return {k: [d.isoformat() for d in v] for k, v in asdict(plan).items()}
