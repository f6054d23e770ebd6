"""Model backends behind one small interface: in-process xgboost, or a KServe V2 server.

Every backend answers the positive-class probability, one float per row, for a float32
feature matrix whose columns are in the model's training order. Both read the same model
file: ``<repository>/<model_name>/<version>/xgboost.json`` (Triton's FIL layout).

The differences between Triton (FIL backend) and MLServer (its XGBoost runtime, used to
test the client path here because Triton needs a container) live in one place:
:class:`ServerAdapter`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import xgboost as xgb

from propensity.serving.manifest import MODEL_FILE, read_model_bytes

if TYPE_CHECKING:
    from propensity.core.settings import Settings

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The model server cannot be reached or does not serve the model (maps to HTTP 503)."""


@runtime_checkable
class ModelBackend(Protocol):
    """What the API and the deploy step need from a model, wherever it runs."""

    @property
    def version(self) -> str: ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Positive-class probabilities (float64, shape [n]) of a float32 [n, f] matrix."""
        ...

    def ready(self) -> bool: ...


def to_feature_matrix(features: np.ndarray | Any) -> np.ndarray:
    """A C-contiguous float32 2-D matrix: what FIL takes and what xgboost predicts on fastest."""
    arr = np.ascontiguousarray(features, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix [rows, features], got shape {arr.shape}")
    return arr


class InProcessBackend:
    """The model file loaded with xgboost in this process (the embedded default)."""

    def __init__(self, booster: xgb.Booster, version: str | int) -> None:
        # One thread per call: requests are one row, and the API's concurrency comes from threads.
        booster.set_param({"nthread": 1})
        self._booster = booster
        self._version = str(version)
        self.feature_names: list[str] | None = booster.feature_names
        self.n_features = booster.num_features()

    @classmethod
    def from_bytes(cls, data: bytes, version: str | int) -> InProcessBackend:
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return cls(booster, version)

    @classmethod
    def from_repository(
        cls, settings: Settings, version: str | int, *, sha256: str | None = None
    ) -> InProcessBackend:
        """Load exactly the file Triton would serve for ``version`` (checked against ``sha256``)."""
        return cls.from_bytes(read_model_bytes(settings, version=str(version), sha256=sha256), version)

    @property
    def version(self) -> str:
        return self._version

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = to_feature_matrix(features)
        if x.shape[1] != self.n_features:
            raise ValueError(f"model {self._version} takes {self.n_features} features, got {x.shape[1]}")
        # validate_features=False: columns arrive positionally in the training order.
        out = self._booster.inplace_predict(x, validate_features=False)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def ready(self) -> bool:
        return True


@dataclass(frozen=True)
class ServerAdapter:
    """Everything that differs between Triton's FIL backend and MLServer's XGBoost runtime."""

    flavor: str
    input_name: str
    output_name: str
    # Triton answers in binary tensors (faster); MLServer's REST API speaks JSON tensors only.
    binary_data: bool
    extra_version_files: dict[str, str] = field(default_factory=dict)

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        """Positive-class probability per row, whatever shape the server answered in.

        FIL with predict_proba answers [n, 2] (column 1 is the positive class); MLServer's
        runtime loads a Booster-saved model as a regressor whose ``predict`` is already the
        probability, [n] or [n, 1].
        """
        out = np.asarray(output, dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 2:
            return out[:, 1]
        return out.reshape(-1)

    def carries_nan(self, protocol: str) -> bool:
        """Whether missing features (NaN) reach the server: JSON has no NaN, binary tensors do."""
        return protocol == "grpc" or self.binary_data

    def version_files(self, model_name: str, version: str | int) -> dict[str, bytes]:
        """Files the server needs beside the model file in a version folder."""
        if self.flavor != "mlserver":
            return {}
        # MLServer finds models by their model-settings.json; the uri is relative to this file.
        ms = {
            "name": model_name,
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": f"./{MODEL_FILE}", "version": str(version)},
        }
        return {"model-settings.json": json.dumps(ms, indent=2).encode()}


TRITON = ServerAdapter(flavor="triton", input_name="input__0", output_name="output__0", binary_data=True)
MLSERVER = ServerAdapter(flavor="mlserver", input_name="input-0", output_name="predict", binary_data=False)


def adapter_for(flavor: str) -> ServerAdapter:
    try:
        return {"triton": TRITON, "mlserver": MLSERVER}[flavor]
    except KeyError:
        raise ValueError(f"unknown model server flavor {flavor!r}: expected 'triton' or 'mlserver'") from None


class TritonBackend:
    """A model version served by a KServe V2 server (Triton or MLServer), through tritonclient."""

    def __init__(
        self,
        url: str,
        model_name: str,
        version: str | int,
        *,
        protocol: str = "http",
        adapter: ServerAdapter = TRITON,
        timeout_s: float = 1.0,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"triton protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url = url
        self.model_name = model_name
        self._version = str(version)
        self.protocol = protocol
        self.adapter = adapter
        self.timeout_s = timeout_s
        # tritonclient's HTTP client is not thread-safe: one client per thread.
        self._local = threading.local()

    @classmethod
    def from_settings(
        cls, settings: Settings, version: str | int, *, timeout_s: float | None = None
    ) -> TritonBackend:
        """The configured server; ``timeout_s`` defaults to the per-request timeout."""
        s = settings.serving
        if not s.triton_url:
            raise ValueError("serving.backend is 'triton' but serving.triton_url is not set")
        return cls(
            s.triton_url,
            s.model_name,
            version,
            protocol=s.triton_protocol,
            adapter=adapter_for(s.server_flavor),
            timeout_s=s.request_timeout_s if timeout_s is None else timeout_s,
        )

    @property
    def version(self) -> str:
        return self._version

    @property
    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            if self.protocol == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc  # type: ignore[no-redef]
            kwargs = (
                {}
                if self.protocol == "grpc"
                else {"connection_timeout": self.timeout_s, "network_timeout": self.timeout_s}
            )
            c = tc.InferenceServerClient(url=self.url, **kwargs)
            self._local.client = c
        return c

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc  # type: ignore[no-redef]
        return tc

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = to_feature_matrix(features)
        if not self.adapter.carries_nan(self.protocol) and np.isnan(x).any():
            raise ValueError(
                f"{self.adapter.flavor} over {self.protocol} sends JSON tensors, which cannot carry missing "
                "features (NaN): use gRPC"
            )
        tc = self._module()
        inp = tc.InferInput(self.adapter.input_name, list(x.shape), "FP32")
        out_kwargs: dict[str, Any] = {}
        if self.protocol == "http":
            inp.set_data_from_numpy(x, binary_data=self.adapter.binary_data)
            out_kwargs["binary_data"] = self.adapter.binary_data
        else:
            inp.set_data_from_numpy(x)
        outputs = [tc.InferRequestedOutput(self.adapter.output_name, **out_kwargs)]
        try:
            if self.protocol == "grpc":
                result = self.client.infer(
                    self.model_name,
                    [inp],
                    model_version=self._version,
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
            else:
                result = self.client.infer(
                    self.model_name, [inp], model_version=self._version, outputs=outputs
                )
        except Exception as exc:  # tritonclient raises its own and socket errors alike
            raise BackendUnavailable(
                f"{self.adapter.flavor} at {self.url} ({self.protocol}) failed to score "
                f"{self.model_name} v{self._version}: {exc}"
            ) from exc
        out = result.as_numpy(self.adapter.output_name)
        if out is None:
            raise BackendUnavailable(f"{self.url} answered without output {self.adapter.output_name!r}")
        probs = self.adapter.probabilities(out)
        if probs.shape[0] != x.shape[0]:
            raise BackendUnavailable(f"{self.url} answered {probs.shape[0]} scores for {x.shape[0]} rows")
        return probs

    def ready(self) -> bool:
        try:
            return bool(self.client.is_model_ready(self.model_name, self._version))
        except Exception as exc:
            log.warning("model server %s not ready: %s", self.url, exc)
            return False

    # -- model control (explicit mode) ----------------------------------------------------
    def load(self) -> None:
        """Ask the server to (re)load the model from its repository."""
        try:
            self.client.load_model(self.model_name)
        except Exception as exc:
            raise BackendUnavailable(f"{self.url} refused to load {self.model_name}: {exc}") from exc

    def server_live(self) -> bool:
        try:
            return bool(self.client.is_server_live())
        except Exception:
            return False


def backend_for(settings: Settings, version: str | int, *, sha256: str | None = None) -> ModelBackend:
    """The configured backend for one deployed version (the in-process one verifies the file)."""
    if settings.serving.backend == "triton":
        return TritonBackend.from_settings(settings, version)
    return InProcessBackend.from_repository(settings, version, sha256=sha256)
