"""The model repository's layout and its deployment manifest: what is deployed, and the verified file.

Layout (what Triton's FIL backend reads, in a folder or on S3)::

    <repository>/<model_name>/config.pbtxt           rendered by the deploy step
    <repository>/<model_name>/<version>/xgboost.json  the model in XGBoost's JSON format
    <repository>/<model_name>/deployment.json        which version is champion / shadow, with the
                                                     sha256 of its file (ours; Triton ignores it)

Every consumer of a deployed model (the API's in-process backend, batch scoring, the deploy step's
parity check) finds it here and reads its file through :func:`read_model_bytes`, which refuses a
file whose sha256 is not the recorded one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from propensity.core.storage import Store, open_store

if TYPE_CHECKING:
    from propensity.core.settings import Settings

MODEL_FILE = "xgboost.json"  # the FIL backend's default file name for model_type xgboost_json
CONFIG_FILE = "config.pbtxt"
DEPLOYMENT_FILE = "deployment.json"
ROLES = ("champion", "shadow")


class ModelIntegrityError(RuntimeError):
    """A deployed model file is missing or not the file that was deployed (its sha256 differs)."""


class ModelFileMissing(ModelIntegrityError, FileNotFoundError):
    """The repository has no file for a deployed version."""


@dataclass(frozen=True)
class DeployedModel:
    """One role's entry of the manifest."""

    model_name: str
    role: str
    version: str
    sha256: str | None
    feature_names: tuple[str, ...] | None
    n_features: int | None


def repository_store(settings: Settings) -> Store:
    """The Triton model repository (a folder or S3) as a :class:`Store`."""
    return open_store(
        settings.serving.repository, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )


def model_file_parts(model_name: str, version: str | int) -> tuple[str, str, str]:
    return model_name, str(version), MODEL_FILE


def read_deployment(settings: Settings) -> dict[str, Any]:
    """Which version is champion and which is shadow (empty roles before the first deploy)."""
    store = repository_store(settings)
    name = settings.serving.model_name
    if store.exists(name, DEPLOYMENT_FILE):
        return store.read_json(name, DEPLOYMENT_FILE)
    return {"model_name": name, "champion": None, "shadow": None, "history": []}


def deployed_model(
    settings: Settings, role: str = "champion", *, state: dict[str, Any] | None = None
) -> DeployedModel | None:
    """The model deployed in ``role`` (``None`` when the role is empty)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    state = read_deployment(settings) if state is None else state
    entry = state.get(role)
    if not entry:
        return None
    names = entry.get("feature_names")
    return DeployedModel(
        model_name=state.get("model_name", settings.serving.model_name),
        role=role,
        version=str(entry["version"]),
        sha256=entry.get("sha256"),
        feature_names=tuple(names) if names else None,
        n_features=entry.get("n_features"),
    )


def read_model_bytes(
    settings: Settings,
    model: DeployedModel | None = None,
    *,
    version: str | None = None,
    sha256: str | None = None,
) -> bytes:
    """The model file of ``model`` (or of ``version``), checked against its recorded sha256.

    Raises :class:`ModelIntegrityError` naming the file when it is missing or was changed after
    the deploy: serving a file that is not the deployed version under its version number would
    answer with one model and report another.
    """
    if model is not None:
        version, sha256 = model.version, model.sha256
    if version is None:
        raise ValueError("read_model_bytes needs a deployed model or a version")
    store = repository_store(settings)
    parts = model_file_parts(settings.serving.model_name, version)
    if not store.exists(*parts):
        raise ModelFileMissing(f"no model file {store.uri_of(*parts)} for v{version}")
    data = store.read_bytes(*parts)
    if sha256:
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise ModelIntegrityError(
                f"{store.uri_of(*parts)} has sha256 {found[:12]}, the deployment manifest says {sha256[:12]}: "
                f"the file changed after v{version} was deployed; redeploy it"
            )
    return data
