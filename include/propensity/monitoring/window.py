"""Drift inputs, main-venv side: the champion's reference and the window of day D, staged for the detectors.

Reference contract (training writes it when a version is registered, this module reads it):

    reference/<model_name>/v<version>/reference.parquet   the model's feature columns + ``score``
                                                          (+ ``label`` where known)
    reference/<model_name>/v<version>/meta.json           {"eval_auc": float, "feature_columns": [...]}

The window of day D (a function of D alone):

* ``snapshot``: the feature snapshot ``offline/customer_features/date=D`` (features as of D);
* ``served``: the prediction log of the last ``window_days`` days ending with D (features + score);
* ``matured``: logged predictions whose ``label_horizon_days`` outcome is known by the end of D,
  labelled from the validated events (bought within the horizon from the prediction's day).

A 100k-row window is too big for an XCom, so it is staged as Parquet under
``drift/window/date=D/`` and the detectors (drift venv) get a small manifest of paths.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.core.errors import DataError
from propensity.core.settings import Settings
from propensity.core.storage import PART_FILE, Store, list_partitions, read_partition
from propensity.core.zones import DRIFT_WINDOW_DIR, REFERENCE_DIR, SNAPSHOTS, VALIDATED_EVENTS, zone_store

log = logging.getLogger(__name__)


# -- reference contract -------------------------------------------------------------------


class NoReference(DataError, FileNotFoundError):
    """No champion reference to compare with: a retry cannot make one (train and promote first)."""


def model_name(settings: Settings) -> str:
    return getattr(settings.training, "model_name", None) or "purchase_propensity"


def reference_parts(name: str, version: int | str) -> tuple[str, str, str]:
    return REFERENCE_DIR, name, f"v{version}"


def write_reference(
    store: Store,
    name: str,
    version: int | str,
    table: pa.Table,
    *,
    eval_auc: float,
    feature_columns: list[str],
) -> str:
    """Store a model version's reference (for training; the drift DAG only reads it)."""
    missing = [c for c in [*feature_columns, "score"] if c not in table.column_names]
    if missing:
        raise ValueError(f"reference table lacks columns {missing}")
    keep = [*feature_columns, "score", *(["label"] if "label" in table.column_names else [])]
    buf = io.BytesIO()
    pq.write_table(table.select(keep), buf, compression="zstd")
    uri = store.write_bytes(buf.getvalue(), *reference_parts(name, version), "reference.parquet")
    # meta.json last: a reader that finds it finds the Parquet file complete.
    store.write_json(
        {"eval_auc": float(eval_auc), "feature_columns": list(feature_columns)},
        *reference_parts(name, version),
        "meta.json",
    )
    return uri


def reference_versions(store: Store, name: str) -> list[int]:
    """Versions with a complete reference (meta.json present)."""
    out = []
    for entry in store.list_dir(REFERENCE_DIR, name):
        m = re.fullmatch(r"v(\d+)", entry)
        if m and store.exists(REFERENCE_DIR, name, entry, "meta.json"):
            out.append(int(m.group(1)))
    return sorted(out)


def champion_version(settings: Settings, store: Store, name: str) -> int:
    """The version whose reference to use: MLflow's ``champion`` alias, else the newest reference.

    The alias is the registry's current state (not as of D): a backfill of an old day compares
    with today's champion. The fallback (no tracking server configured or reachable) is logged.
    """
    uri = getattr(settings.training, "mlflow_tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        try:
            from mlflow import MlflowClient

            version = int(MlflowClient(tracking_uri=uri).get_model_version_by_alias(name, "champion").version)
            log.info("champion of %s is version %d (MLflow %s)", name, version, uri)
            return version
        except Exception as exc:  # noqa: BLE001 - any registry failure falls back to the stored references
            log.warning(
                "no champion alias for %s in MLflow (%s): using the newest stored reference", name, exc
            )
    versions = reference_versions(store, name)
    if not versions:
        raise NoReference(
            f"no reference under {store.uri_of(REFERENCE_DIR, name)}: train and register a model first"
        )
    return versions[-1]


def read_reference(store: Store, name: str, version: int | str) -> tuple[pa.Table, dict[str, Any]]:
    """(reference table, meta) of one model version; FileNotFoundError naming what is missing."""
    parts = reference_parts(name, version)
    if not store.exists(*parts, "meta.json"):
        raise FileNotFoundError(f"no reference meta {store.uri_of(*parts, 'meta.json')}")
    meta = store.read_json(*parts, "meta.json")
    with store.fs.open_input_file(store.path(*parts, "reference.parquet")) as fh:
        table = pq.read_table(fh)
    return table, meta


# -- the window of day D -------------------------------------------------------------------


def read_snapshot(store: Store, day: dt.date, columns: list[str]) -> pa.Table | None:
    if not store.exists(*SNAPSHOTS, f"date={day.isoformat()}", PART_FILE):
        return None
    table = read_partition(store, *SNAPSHOTS, day)
    return table.select([c for c in ["customer_id", *columns] if c in table.column_names])


def prediction_log_dir(settings: Settings) -> str:
    return getattr(settings.serving, "prediction_log_dir", None) or "predictions/log"


def read_prediction_log(
    store: Store, log_dir: str, days: list[dt.date], columns: list[str]
) -> pa.Table | None:
    """Logged requests of ``days`` (every Parquet file of each ``date=`` folder), or None.

    Features are read as flat columns, or from a ``features`` struct column when the log nests them.
    """
    tables = []
    for day in days:
        folder = f"date={day.isoformat()}"
        for name in store.list_dir(log_dir, folder):
            if not name.endswith(".parquet") or name.startswith("."):
                continue
            with store.fs.open_input_file(store.path(log_dir, folder, name)) as fh:
                t = pq.read_table(fh)
            if "features" in t.column_names and pa.types.is_struct(t.schema.field("features").type):
                nested = t.column("features").combine_chunks()
                for field in nested.type:
                    if field.name not in t.column_names:
                        t = t.append_column(field.name, nested.field(field.name))
            keep = [c for c in ["customer_id", "score", *columns] if c in t.column_names]
            tables.append(t.select(keep).append_column("day", pa.array([day] * t.num_rows, pa.date32())))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def buyers(store: Store, start: dt.date, end: dt.date) -> set[str]:
    """Customers with a non-return event in ``[start, end)`` (validated events)."""
    have = set(list_partitions(store, *VALIDATED_EVENTS))
    out: set[str] = set()
    day = start
    while day < end:
        if day in have:
            t = read_partition(store, *VALIDATED_EVENTS, day).select(["customer_id", "is_return"])
            t = t.filter(pc.and_(pc.invert(t.column("is_return")), pc.is_valid(t.column("customer_id"))))
            out.update(t.column("customer_id").to_pylist())
        day += dt.timedelta(days=1)
    return out


def matured_predictions(
    store: Store, log_dir: str, day: dt.date, horizon: int, window_days: int
) -> pa.Table | None:
    """Predictions of the ``window_days`` days whose ``horizon``-day outcome is complete by the end of ``day``.

    A prediction of day P is labelled 1 when its customer bought in ``[P, P + horizon)``, the
    same horizon the model is trained on; it has matured when ``P + horizon <= day + 1``.
    """
    last = day + dt.timedelta(days=1 - horizon)
    days = [last - dt.timedelta(days=k) for k in range(window_days - 1, -1, -1)]
    logged = read_prediction_log(store, log_dir, days, [])
    if logged is None or logged.num_rows == 0:
        return None
    labels = []
    customers = logged.column("customer_id").to_pylist()
    pred_days = logged.column("day").to_pylist()
    cache: dict[dt.date, set[str]] = {}
    for cust, p in zip(customers, pred_days, strict=True):
        if p not in cache:
            cache[p] = buyers(store, p, p + dt.timedelta(days=horizon))
        labels.append(int(cust in cache[p]))
    return pa.table({"score": logged.column("score"), "label": pa.array(labels, pa.int8())})


def _sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    """At most ``max_rows`` rows, seeded by the date so a re-run samples the same rows."""
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_rows, replace=False))
    return table.take(pa.array(idx))


def load_window(settings: Settings, day: dt.date, model_version: int | None = None) -> dict[str, Any]:
    """Stage the reference and the window of ``day`` for the detectors; returns the manifest.

    The manifest is plain (paths, column names, counts, the policy's parameters) and is what
    the external-python task receives.
    """
    store = zone_store(settings)
    policy = settings.drift
    name = model_name(settings)
    version = model_version if model_version is not None else champion_version(settings, store, name)
    reference, meta = read_reference(store, name, version)
    columns = [c for c in meta["feature_columns"] if c not in policy.exclude_features]
    seed = day.toordinal()
    staged: dict[str, pa.Table] = {"reference": _sample(reference, policy.max_rows, seed)}

    snapshot = read_snapshot(store, day, columns)
    if snapshot is not None:
        staged["snapshot"] = _sample(snapshot.drop_columns(["customer_id"]), policy.max_rows, seed)
    else:
        log.warning("no feature snapshot for %s: data drift on served traffic only", day)
    log_dir = prediction_log_dir(settings)
    served_days = [day - dt.timedelta(days=k) for k in range(policy.window_days - 1, -1, -1)]
    served = read_prediction_log(store, log_dir, served_days, columns)
    if served is not None and served.num_rows:
        staged["served"] = _sample(served.drop_columns(["customer_id", "day"]), policy.max_rows, seed)
    matured = matured_predictions(store, log_dir, day, policy.label_horizon_days, policy.window_days)
    if matured is not None:
        staged["matured"] = matured

    files = {}
    for key, table in staged.items():
        rel = f"{DRIFT_WINDOW_DIR}/date={day.isoformat()}/{key}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        store.write_bytes(buf.getvalue(), rel)
        files[key] = rel
    manifest = {
        "day": day.isoformat(),
        "zone_root": settings.zone_root,
        "s3_endpoint_url": settings.s3_endpoint_url,
        "s3_region": settings.s3_region,
        "model_name": name,
        "model_version": int(version),
        "feature_columns": columns,
        "reference_auc": meta.get("eval_auc"),
        "files": files,
        "rows": {key: table.num_rows for key, table in staged.items()},
        "params": policy.model_dump(),
    }
    log.info("drift window %s for %s v%s: %s", day, name, version, manifest["rows"])
    return manifest


def read_staged(settings: Settings, manifest: dict[str, Any], key: str) -> pa.Table | None:
    """One staged table of a manifest (for the report), or None when the window had none."""
    rel = manifest["files"].get(key)
    if rel is None:
        return None
    store = zone_store(settings)
    with store.fs.open_input_file(store.path(rel)) as fh:
        return pq.read_table(fh)
