"""Model backends behind one small interface: in-process xgboost, or Triton Inference Server.

Every backend answers the positive-class probability, one float per row, for a float32
feature matrix whose columns are in the model's training order. Both read the same model
file: ``<repository>/<model_name>/<version>/xgboost.json`` (Triton's FIL layout).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import xgboost as xgb

from propensity.serving.manifest import read_model_bytes

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


# Triton's FIL backend: one FP32 input [n, features]; with output_class and predict_proba, one
# probability per class ([n, 2], the positive class in column 1), as models/config.pbtxt.tmpl says.
INPUT_NAME = "input__0"
OUTPUT_NAME = "output__0"
# A gRPC channel whose server went away retries its connection with an exponential backoff (up to
# 120 s by default): capped so that the API recovers within a second of Triton's return.
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),  # tritonclient's defaults (channel_args replace them)
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def positive_class(output: np.ndarray) -> np.ndarray:
    """Positive-class probability per row: column 1 of FIL's [n, 2] predict_proba, else the output."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 1]
    return out.reshape(-1)


class TritonBackend:
    """A model version served by Triton Inference Server (KServe V2), through tritonclient.

    ``version`` is the version Triton's last answer on this thread came from (Triton names it in
    every response), else the version asked for: the API reports what really scored.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        version: str | int,
        *,
        protocol: str = "grpc",
        timeout_s: float = 1.0,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"triton protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url = url
        self.model_name = model_name
        self._version = str(version)
        self.protocol = protocol
        self.timeout_s = timeout_s
        # tritonclient's HTTP client is not thread-safe: one client per thread (gRPC's too, cheaply).
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
            timeout_s=s.request_timeout_s if timeout_s is None else timeout_s,
        )

    @property
    def version(self) -> str:
        return getattr(self._local, "answered", None) or self._version

    @property
    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            tc = self._module()
            if self.protocol == "grpc":
                c = tc.InferenceServerClient(url=self.url, channel_args=GRPC_CHANNEL_ARGS)
            else:
                c = tc.InferenceServerClient(
                    url=self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
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
        tc = self._module()
        inp = tc.InferInput(INPUT_NAME, list(x.shape), "FP32")
        # Binary tensors over HTTP too: exact floats, and NaN (a missing feature) travels as such.
        if self.protocol == "http":
            inp.set_data_from_numpy(x, binary_data=True)
            outputs = [tc.InferRequestedOutput(OUTPUT_NAME, binary_data=True)]
        else:
            inp.set_data_from_numpy(x)
            outputs = [tc.InferRequestedOutput(OUTPUT_NAME)]
        try:
            if self.protocol == "grpc":
                result = self.client.infer(
                    self.model_name,
                    [inp],
                    model_version=self._version,
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
                answered = result.get_response().model_version
            else:
                result = self.client.infer(
                    self.model_name, [inp], model_version=self._version, outputs=outputs
                )
                answered = result.get_response().get("model_version")
        except Exception as exc:  # tritonclient raises its own and socket errors alike
            raise BackendUnavailable(
                f"Triton at {self.url} ({self.protocol}) failed to score "
                f"{self.model_name} v{self._version}: {exc}"
            ) from exc
        out = result.as_numpy(OUTPUT_NAME)
        if out is None:
            raise BackendUnavailable(f"Triton at {self.url} answered without output {OUTPUT_NAME!r}")
        probs = positive_class(out)
        if probs.shape[0] != x.shape[0]:
            raise BackendUnavailable(
                f"Triton at {self.url} answered {probs.shape[0]} scores for {x.shape[0]} rows"
            )
        self._local.answered = str(answered) if answered else None
        return probs

    def ready(self) -> bool:
        try:
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            return bool(self.client.is_model_ready(self.model_name, self._version, **kwargs))
        except Exception as exc:
            log.warning("Triton at %s not ready: %s", self.url, exc)
            return False

    # -- model control (explicit mode) ----------------------------------------------------
    def load(self) -> None:
        """Ask the server to (re)load the model from its repository; Triton's reason on failure."""
        try:
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            self.client.load_model(self.model_name, **kwargs)
        except Exception as exc:
            raise BackendUnavailable(
                f"Triton at {self.url} refused to load {self.model_name}: {exc}"
            ) from exc

    def server_live(self) -> bool:
        try:
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            return bool(self.client.is_server_live(**kwargs))
        except Exception:
            return False


def backend_for(settings: Settings, version: str | int, *, sha256: str | None = None) -> ModelBackend:
    """The configured backend for one deployed version (the in-process one verifies the file)."""
    if settings.serving.backend == "triton":
        return TritonBackend.from_settings(settings, version)
    return InProcessBackend.from_repository(settings, version, sha256=sha256)
