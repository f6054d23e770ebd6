"""Deploy a registered model version to the Triton model repository, with a parity check.

Layout (what Triton's FIL backend reads, in a folder or on S3)::

    <repository>/<model_name>/config.pbtxt          rendered from models/config.pbtxt.tmpl
    <repository>/<model_name>/<version>/xgboost.json the model in XGBoost's JSON format
    <repository>/<model_name>/deployment.json       which version is champion / shadow (ours;
                                                    Triton ignores files it does not know)

A deploy writes the version's file (one file, written atomically: the version folder holds it
whole or not at all), checks what landed against the model's sha256, writes the config, asks
Triton to load the model where a server is configured (``serving.triton_url``, or
``serving.backend: triton``), waits until the version is READY, and compares what Triton answers
with the source booster on the parity rows. Only then does ``deployment.json`` move, so on any
failure the previous config is written back and re-loaded, the previous version stays live, and
:class:`DeployError` carries Triton's own reason and the audit record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from propensity.core.settings import project_home
from propensity.core.storage import Store
from propensity.core.timeutil import wait_until
from propensity.serving.backends import (
    BackendUnavailable,
    InProcessBackend,
    ModelBackend,
    TritonBackend,
)
from propensity.serving.manifest import (
    CONFIG_FILE,
    DEPLOYMENT_FILE,
    MODEL_FILE,
    ROLES,
    read_deployment,
    read_model_bytes,
    repository_store,
)

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from propensity.core.settings import Settings

log = logging.getLogger(__name__)

HISTORY_KEEP = 50


class DeployError(RuntimeError):
    """A deploy that did not happen; ``record`` is its audit-log entry."""

    def __init__(self, reason: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.record = record or {}


# -- config ------------------------------------------------------------------------------
def config_template_path() -> Path:
    return Path(os.environ.get("PROPENSITY_TRITON_TEMPLATE", project_home() / "models" / "config.pbtxt.tmpl"))


def render_config(settings: Settings, n_features: int, versions: list[int]) -> str:
    """config.pbtxt for the FIL backend serving ``versions`` of a model with ``n_features`` inputs."""
    if n_features < 1 or not versions:
        raise ValueError(f"need at least one feature and one version (got {n_features}, {versions})")
    s = settings.serving
    return string.Template(config_template_path().read_text()).substitute(
        model_name=s.model_name,
        max_batch_size=s.max_batch_size,
        n_features=n_features,
        versions=", ".join(str(v) for v in sorted(versions)),
        instance_count=s.instance_count,
        max_queue_delay_us=s.max_queue_delay_us,
        cpu_nthread=s.cpu_nthread,
    )


def parse_config(text: str) -> ModelConfig:
    """Parse into Triton's own ModelConfig protobuf and check what the FIL backend requires."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    problems = []
    if cfg.backend != "fil":
        problems.append(f"backend is {cfg.backend!r}, not 'fil'")
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    if params.get("model_type") != "xgboost_json":
        problems.append(f"model_type is {params.get('model_type')!r}, not 'xgboost_json'")
    if len(cfg.input) != 1 or cfg.input[0].data_type != model_config_pb2.TYPE_FP32:
        problems.append("FIL takes exactly one FP32 input")
    if not cfg.version_policy.HasField("specific") or not cfg.version_policy.specific.versions:
        problems.append("version_policy must list the served versions")
    if problems:
        raise ValueError("invalid Triton config: " + "; ".join(problems))
    return cfg


# -- model -------------------------------------------------------------------------------
def load_booster(model: Any) -> xgb.Booster:
    """A Booster from a path to an XGBoost model file, its bytes, a Booster or an sklearn model."""
    if isinstance(model, xgb.Booster):
        return model
    if hasattr(model, "get_booster"):
        return model.get_booster()
    booster = xgb.Booster()
    if isinstance(model, bytes | bytearray):
        booster.load_model(bytearray(model))
    elif isinstance(model, str | Path):
        if not Path(model).is_file():
            raise FileNotFoundError(f"model file {model} does not exist")
        booster.load_model(str(model))
    else:
        raise TypeError(f"cannot deploy a {type(model).__name__}: pass a Booster, a model file or its bytes")
    return booster


def parity_sample(booster: xgb.Booster, rows: int, seed: int = 0, missing_share: float = 0.05) -> np.ndarray:
    """A fixed sample that reaches both sides of the model's splits.

    Each feature is drawn between its smallest and largest split threshold (widened), and
    ``missing_share`` of the values are missing (NaN), so the default branches are exercised too.
    """
    n = booster.num_features()
    rng = np.random.default_rng(seed)
    lo, hi = np.full(n, -1.0), np.full(n, 1.0)
    trees = booster.trees_to_dataframe()
    splits = trees[trees["Feature"] != "Leaf"]
    names = booster.feature_names or [f"f{i}" for i in range(n)]
    index = {name: i for i, name in enumerate(names)}
    for feat, group in splits.groupby("Feature"):
        i = index.get(str(feat))
        if i is not None:
            span = float(group["Split"].max() - group["Split"].min()) or 1.0
            lo[i], hi[i] = group["Split"].min() - 0.2 * span, group["Split"].max() + 0.2 * span
    x = rng.uniform(lo, hi, size=(rows, n)).astype(np.float32)
    x[rng.random(size=x.shape) < missing_share] = np.nan
    return x


# -- deployment manifest ------------------------------------------------------------------
def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _served_backend(settings: Settings, version: str) -> tuple[ModelBackend, TritonBackend | None]:
    """Load the version where it will be served and wait for it; the server client if any."""
    s = settings.serving
    if not s.triton_url:
        # No server: the API's in-process backend reads this very file.
        return InProcessBackend.from_repository(settings, version), None
    # Loading a model takes longer than answering a request: the readiness timeout applies.
    server = TritonBackend.from_settings(settings, version, timeout_s=s.ready_timeout_s)
    server.load()
    try:
        wait_until(server.ready, timeout_s=s.ready_timeout_s, what=f"{s.model_name} v{version} ready")
    except TimeoutError as exc:
        raise BackendUnavailable(str(exc)) from exc
    return server, server


def _restore(
    store: Store, settings: Settings, prev_config: bytes | None, version: str, existed: bool
) -> None:
    """Put the repository back as it was; the server reloads the previous config."""
    name = settings.serving.model_name
    if prev_config is not None:
        store.write_bytes(prev_config, name, CONFIG_FILE)
    elif store.exists(name, CONFIG_FILE):
        store.fs.delete_file(store.path(name, CONFIG_FILE))
    if not existed:
        store.delete_dir(name, version)
    if settings.serving.triton_url and prev_config is not None:
        try:
            TritonBackend.from_settings(settings, version, timeout_s=settings.serving.ready_timeout_s).load()
        except BackendUnavailable as exc:
            log.error("could not reload the previous config of %s: %s", name, exc)


def deploy_model(
    settings: Settings,
    model: Any,
    version: int | str,
    role: str = "champion",
    *,
    sample: np.ndarray | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Deploy ``model`` as ``version`` in ``role`` (champion | shadow); returns the audit record.

    ``sample``: rows for the parity check (default: a fixed sample drawn from the model's
    splits); ``source``: where the model came from (e.g. ``models:/propensity@champion``).
    Raises :class:`DeployError` (with ``.record``) and leaves the previous version live.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not str(version).isdigit() or int(version) < 1:
        raise ValueError(f"Triton versions are positive integers, got {version!r}")
    version = str(int(version))
    s = settings.serving
    store = repository_store(settings)
    name = s.model_name
    booster = load_booster(model)
    model_bytes = bytes(booster.save_raw("json"))
    n_features = booster.num_features()
    record: dict[str, Any] = {
        "action": "deploy",
        "model_name": name,
        "version": version,
        "role": role,
        "source": source,
        "repository": store.uri_of(name),
        "server": s.triton_url,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "started_at": _now(),
    }

    state = read_deployment(settings)
    roles: dict[str, Any] = {r: state.get(r) for r in ROLES}
    entry = {
        "version": version,
        "n_features": n_features,
        "feature_names": booster.feature_names,
        "sha256": record["sha256"],
        "source": source,
        "deployed_at": record["started_at"],
    }
    previous = roles[role]
    roles[role] = entry
    if role == "champion" and roles["shadow"] and roles["shadow"]["version"] == version:
        roles["shadow"] = None  # the challenger was promoted: it is no longer in shadow
    widths = {r["n_features"] for r in roles.values() if r}
    if len(widths) > 1:
        reason = f"champion and shadow must take the same number of features, got {sorted(widths)}"
        record.update(status="failed", reason=reason, finished_at=_now())
        raise DeployError(reason, record)
    versions = sorted({int(r["version"]) for r in roles.values() if r})
    # The champion it replaces stays loaded until the next deploy: API processes still send it
    # requests until their watcher reads the new record (serving.reload_interval_s), and Triton
    # would answer those "version not found" (dropped requests) if it unloaded it now.
    draining = _draining(
        state, previous if role == "champion" else state.get("draining"), version, n_features
    )
    if draining is not None:
        versions = sorted({*versions, int(draining["version"])})
    config_text = render_config(settings, n_features, versions)
    parse_config(config_text)

    prev_config = store.read_bytes(name, CONFIG_FILE) if store.exists(name, CONFIG_FILE) else None
    existed = store.exists(name, version, MODEL_FILE)
    # Binary tensors (gRPC, and HTTP's binary extension) carry missing values (NaN) to Triton.
    x = sample if sample is not None else parity_sample(booster, s.parity_rows)
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        store.write_bytes(model_bytes, name, version, MODEL_FILE)
        # What the server will load is what was deployed (the same check every reader makes).
        read_model_bytes(settings, version=version, sha256=record["sha256"])
        store.write_bytes(config_text.encode(), name, CONFIG_FILE)
        served, _ = _served_backend(settings, version)
        got = served.predict(x)
        want = np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64).reshape(-1)
        max_diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
        record["parity_rows"] = len(x)
        record["parity_with_missing_values"] = bool(np.isnan(x).any())
        record["parity_max_abs_diff"] = max_diff
        if not max_diff <= s.parity_tolerance:
            raise DeployError(
                f"parity check failed: served v{version} differs from the source model by "
                f"{max_diff:.3g} > {s.parity_tolerance:g} on {len(x)} rows"
            )
    except Exception as exc:
        _restore(store, settings, prev_config, version, existed)
        live = state.get(role, {}) or {}
        record.update(status="failed", reason=str(exc), live_version=live.get("version"), finished_at=_now())
        log.error(
            "deploy of %s v%s as %s failed, v%s stays live: %s", name, version, role, live.get("version"), exc
        )
        raise DeployError(str(exc), record) from exc

    history = list(state.get("history", []))
    history.append({"at": record["started_at"], "role": role, "version": version, "replaced": previous})
    new_state = {"model_name": name, **roles, "draining": draining, "history": history[-HISTORY_KEEP:]}
    store.write_json(new_state, name, DEPLOYMENT_FILE)
    record.update(
        status="deployed",
        replaced_version=(previous or {}).get("version"),
        served_versions=[str(v) for v in versions],
        finished_at=_now(),
    )
    log.info("deployed %s v%s as %s (parity %.2g)", name, version, role, record["parity_max_abs_diff"])
    return record


def _draining(
    state: dict[str, Any], candidate: dict[str, Any] | None, version: str, n_features: int
) -> dict[str, Any] | None:
    """The replaced champion kept loaded for requests in flight (None: nothing to keep).

    One Triton config has one input width: a replaced champion of another width cannot stay
    loaded beside the new one (logged: processes between polls answer 503 for that moment).
    """
    if not candidate or candidate["version"] == version:
        return None
    if candidate.get("n_features") != n_features:
        log.warning(
            "v%s takes %s features, v%s %s: not kept loaded while API processes move to v%s",
            candidate["version"],
            candidate.get("n_features"),
            version,
            n_features,
            version,
        )
        return None
    return candidate


def retire_shadow(settings: Settings) -> dict[str, Any]:
    """Stop shadow scoring: drop the shadow role and serve the champion alone."""
    state = read_deployment(settings)
    champion, shadow = state.get("champion"), state.get("shadow")
    if not shadow:
        return {"action": "retire_shadow", "status": "noop", "model_name": state["model_name"]}
    if not champion:
        raise DeployError("cannot retire the shadow: no champion is deployed")
    store = repository_store(settings)
    name = settings.serving.model_name
    state["shadow"] = None
    draining = _draining(state, state.get("draining"), champion["version"], champion["n_features"])
    versions = [int(champion["version"]), *([int(draining["version"])] if draining else [])]
    config_text = render_config(settings, champion["n_features"], versions)
    parse_config(config_text)
    store.write_bytes(config_text.encode(), name, CONFIG_FILE)
    if settings.serving.triton_url:
        TritonBackend.from_settings(
            settings, champion["version"], timeout_s=settings.serving.ready_timeout_s
        ).load()
    state.setdefault("history", []).append(
        {"at": _now(), "role": "shadow", "version": None, "replaced": shadow}
    )
    store.write_json(state, name, DEPLOYMENT_FILE)
    return {
        "action": "retire_shadow",
        "status": "done",
        "model_name": name,
        "retired_version": shadow["version"],
    }
