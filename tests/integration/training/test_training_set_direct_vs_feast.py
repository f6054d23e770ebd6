"""The direct snapshot join against Feast's point-in-time join, on the synthetic retailer.

Built once per module, by configuration alone (tests/fixtures/synthetic_retailer.yaml): the
generator's Parquet export -> collect (export replay, America/Chicago) -> validated (stand-in:
fee lines are non-product, every other line a product; the real suite is the e2e test's) ->
weekly snapshots plus a week of daily ones, in one Spark pass. Then both builders on the same
rows, the fixture's learnability, and the drift its promotion cohort leaves.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from propensity.core.cutoffs import plan_cutoffs
from propensity.core.settings import committed_settings
from propensity.core.stats import psi
from propensity.core.storage import read_partition, write_partition
from propensity.core.zones import RAW_EVENTS, VALIDATED_EVENTS, zone_store
from propensity.features.job import compute_features, read_snapshot
from propensity.features.spec import MODEL_FEATURES
from propensity.ingest.collect import collect
from propensity.training.dataset import build_training_set, training_rows
from propensity.training.snapshot_join import (
    build_training_table,
    to_frame,
    training_set_for_rows,
)
from propensity.training.steps import load_training_set, prepare_training_set
from propensity.training.train import fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MONITORED = [f for f in MODEL_FEATURES if f not in ("tenure_days", "days_since_first_order")]


def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.fixture(scope="module")
def retailer(tmp_path_factory, synthetic_retailer, synthetic_retailer_config, spark) -> dict:
    root = tmp_path_factory.mktemp("synthetic")
    spec = synthetic_retailer.RetailerSpec()
    path = synthetic_retailer.write(synthetic_retailer.generate(spec), root / "retailer.parquet")
    overrides = merged(
        synthetic_retailer_config,
        {
            "zone_root": str(root / "zones"),
            "cache_dir": str(root / "cache"),
            "source": {"path": str(path)},
            "features": {"registry": str(root / "registry.db"), "sqlite_path": str(root / "online.db")},
        },
    )
    settings = committed_settings(**overrides)
    store = zone_store(settings)
    first, end = spec.start, spec.end
    fees = settings.source.non_product_items
    day = first
    while day < end:
        start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        collect(settings, start, start + dt.timedelta(days=1))
        raw = read_partition(store, *RAW_EVENTS, day)
        items = raw.column("item_id").to_numpy(zero_copy_only=False)
        kind = np.where(np.isin(items, fees), "non_product", "product")
        write_partition(store, *VALIDATED_EVENTS, day, raw.append_column("line_kind", pa.array(kind)))
        day += dt.timedelta(days=1)
    plan = plan_cutoffs(first, end, settings.training)
    cutoff = plan.all[-6]
    daily = [cutoff + dt.timedelta(days=i) for i in range(1, 7)]  # the store a daily features DAG keeps
    drift_start = end - dt.timedelta(days=spec.drift_days)
    stable = max(c for c in plan.all if c <= drift_start - dt.timedelta(days=7))
    compute_features(settings, sorted({*plan.all, *daily, end}))
    return {
        "settings": settings,
        "spec": spec,
        "plan": plan,
        "cutoff": cutoff,
        "next_cutoff": plan.all[-5],
        "stable": stable,
        "drift_start": drift_start,
    }


def test_the_direct_join_equals_feasts_point_in_time_join(retailer):
    settings, c1, c2 = retailer["settings"], retailer["cutoff"], retailer["next_cutoff"]
    rows = training_rows(settings, [c1, c2]).sample(400, random_state=3)
    rows = pd.concat([rows, pd.DataFrame({"customer_id": ["999999999"], "cutoff": [c1]})], ignore_index=True)
    feast = build_training_set(settings, rows).reset_index(drop=True)
    direct = training_set_for_rows(settings, rows)
    pd.testing.assert_frame_equal(direct, feast)
    assert direct.iloc[-1][list(MODEL_FEATURES)].isna().all()
    assert 0 < direct["label"].sum() < len(direct)
    assert direct["customer_id"].str.fullmatch(r"0\d+|999999999").all()  # leading zeros kept

    # Whole cutoffs: the table training reads, row for row.
    table = to_frame(build_training_table(settings, [c1, c2]))
    everyone = build_training_set(settings, training_rows(settings, [c1, c2]))
    everyone = everyone.sort_values(["cutoff", "customer_id"], kind="mergesort", ignore_index=True)
    pd.testing.assert_frame_equal(table, everyone)


def test_where_the_two_differ_on_purpose(retailer):
    """A customer in yesterday's daily snapshot but not in the cutoff's (no longer active): Feast's
    TTL serves yesterday's row, the direct join says "no features as of the cutoff"."""
    settings, c2 = retailer["settings"], retailer["next_cutoff"]
    before = set(read_snapshot(settings, c2 - dt.timedelta(days=1)).column("customer_id").to_pylist())
    at = set(read_snapshot(settings, c2).column("customer_id").to_pylist())
    lapsed = sorted(before - at)
    assert lapsed, "the fixture has customers leaving the 365-day activity window on that day"
    rows = pd.DataFrame({"customer_id": lapsed, "cutoff": [c2] * len(lapsed)})
    feast = build_training_set(settings, rows)
    direct = training_set_for_rows(settings, rows)
    assert feast["recency_days"].notna().all() and (feast["recency_days"] >= 364).all()
    assert direct["recency_days"].isna().all()
    assert list(direct["label"]) == list(feast["label"])


def test_a_later_snapshot_never_leaks_into_a_cutoff(retailer):
    settings, c1 = retailer["settings"], retailer["cutoff"]
    got = to_frame(build_training_table(settings, [c1])).set_index("customer_id")
    own = read_snapshot(settings, c1).to_pandas().set_index("customer_id")
    pd.testing.assert_frame_equal(
        got[list(MODEL_FEATURES)], own[list(MODEL_FEATURES)].astype("float64"), check_names=False
    )
    # The control: the next day's snapshot (in the store, read by Feast's scan) differs.
    later = read_snapshot(settings, c1 + dt.timedelta(days=1)).to_pandas().set_index("customer_id")
    common = got.index.intersection(later.index)
    assert (got.loc[common, "recency_days"] != later.loc[common, "recency_days"]).mean() > 0.9


def test_the_synthetic_retailer_is_learnable(retailer):
    """What makes the loop meaningful: the model beats recency and frequency alone."""
    settings, plan, spec = retailer["settings"], retailer["plan"], retailer["spec"]
    # The training DAG's step: the direct join, streamed to the training set's partition.
    prepared = prepare_training_set(settings, spec.end)
    assert prepared["plan"]["evaluation"] == [c.isoformat() for c in plan.evaluation]
    assert len(plan.all) == settings.training.max_cutoffs
    frame = load_training_set(settings, spec.end)
    pd.testing.assert_frame_equal(frame, to_frame(build_training_table(settings, plan.all)))
    assert prepared["rows"] == len(frame) and prepared["positives"] == frame["label"].sum()
    assert prepare_training_set(settings, spec.end) == prepared  # stored once, read back
    model = fit(frame, MODEL_FEATURES, plan, settings.training)
    auc = model.eval_metrics["roc_auc"]
    assert auc > 0.78
    assert auc > model.baselines["recency"] + 0.04
    assert auc > model.baselines["frequency"] + 0.04


def test_the_promotion_cohort_shows_as_drift(retailer):
    """PSI of the latest snapshot against a champion's reference (its training rows), as the drift
    DAG computes it; a snapshot before the promotion stays under the threshold."""
    settings, spec = retailer["settings"], retailer["spec"]
    threshold = settings.drift.psi_threshold
    before = [c for c in retailer["plan"].all if c < retailer["stable"]]
    frame = to_frame(build_training_table(settings, before[-26:]))
    reference = frame.sample(n=min(20_000, len(frame)), random_state=7)

    def worst(day: dt.date) -> tuple[str, float]:
        snap = read_snapshot(settings, day).to_pandas()
        scores = {f: psi(reference[f].to_numpy(float), snap[f].to_numpy(float)) for f in MONITORED}
        name = max(scores, key=scores.get)
        return name, scores[name]

    _, stable = worst(retailer["stable"])
    name, drifted = worst(spec.end)
    assert stable < threshold
    assert drifted >= threshold, (name, drifted)
