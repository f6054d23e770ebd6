"""A local stand-in of NVIDIA's FIL backend for Triton, as a Python-based backend.

The FIL backend (RAPIDS Forest Inference Library) ships only inside NVIDIA's Triton containers.
``make venv-triton`` installs this file as ``<pytriton>/tritonserver/backends/fil/model.py``, which
makes the pip-installed tritonserver accept a repository whose ``config.pbtxt`` says
``backend: "fil"``. The repository is exactly what the real FIL backend loads: this file reads the
same ``config.pbtxt`` parameters, the same default file name per ``model_type``, takes the same
``input__0`` and answers the same ``output__0``; it scores with xgboost's ``inplace_predict``.

Supported (what the real backend does with them):
    model_type      xgboost_json (``xgboost.json``) | xgboost_ubj (``xgboost.ubj``)
    output_class    false: the model's output (a probability for binary:logistic)
                    true: a classifier, answering a class or (predict_proba) class probabilities
    predict_proba   with output_class true: one probability per class ([n, 2] for a binary model)
    threshold       with output_class true and predict_proba false: class 1 when the score > threshold
    cpu_nthread     threads per prediction (default: xgboost's)
GPU-only tuning knobs of the real backend are accepted and have no effect on a CPU. Anything else
(another model_type, an unknown parameter) fails the load with the reason, as the real backend does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The stub runs the machine's python3.11 with its own sys.path: numpy and xgboost come from the
# venv this file is installed in (<venv>/lib/python3.11/site-packages/pytriton/tritonserver/backends/fil).
_SITE_PACKAGES = Path(__file__).resolve().parents[4]
if _SITE_PACKAGES.name == "site-packages" and str(_SITE_PACKAGES) not in sys.path:
    sys.path.insert(0, str(_SITE_PACKAGES))

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
import xgboost as xgb  # noqa: E402

MODEL_FILES = {"xgboost_json": "xgboost.json", "xgboost_ubj": "xgboost.ubj"}
REFUSED_MODEL_TYPES = ("xgboost", "lightgbm", "treelite_checkpoint", "sklearn_pickle", "cuml_pickle")
# The real backend's tuning parameters for its GPU/CPU kernels: nothing to tune in xgboost.
NO_EFFECT = {
    "use_experimental_optimizations",
    "storage_type",
    "threads_per_tree",
    "algo",
    "blocks_per_sm",
    "transfer_threshold",
    "layout",
    "align_bytes",
    "chunk_size",
    "xgboost_allow_unknown_field",
}
KNOWN = {"model_type", "output_class", "predict_proba", "threshold", "cpu_nthread"} | NO_EFFECT
_announced = False


def _bool(params: dict[str, str], key: str, default: bool) -> bool:
    value = params.get(key)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise pb_utils.TritonModelException(f"FIL parameter {key} must be 'true' or 'false', got {value!r}")
    return value.lower() == "true"


class TritonPythonModel:
    """One instance of a FIL model: the version folder's model file, loaded with xgboost."""

    def initialize(self, args: dict[str, str]) -> None:
        global _announced
        config = json.loads(args["model_config"])
        name, version = config["name"], args["model_version"]
        what = f"FIL stand-in: model {name} v{version}"
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        unknown = sorted(set(params) - KNOWN)
        if unknown:
            raise pb_utils.TritonModelException(f"{what}: unsupported parameter(s) {unknown}")
        model_type = params.get("model_type", "xgboost")
        if model_type not in MODEL_FILES:
            known = "refused here" if model_type in REFUSED_MODEL_TYPES else "unknown"
            raise pb_utils.TritonModelException(
                f"{what}: model_type {model_type!r} is {known}; this stand-in loads {sorted(MODEL_FILES)}"
            )
        self.output_class = _bool(params, "output_class", True)
        self.predict_proba = _bool(params, "predict_proba", False)
        try:
            self.threshold = float(params.get("threshold", "0.5"))
        except ValueError:
            raise pb_utils.TritonModelException(
                f"{what}: threshold {params['threshold']!r} is no number"
            ) from None
        filename = config.get("default_model_filename") or MODEL_FILES[model_type]
        path = Path(args["model_repository"]) / version / filename
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{what}: no model file {path}")
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            reason = str(exc).split("Stack trace:")[0].strip()  # xgboost's own reason, not its C++ frames
            raise pb_utils.TritonModelException(f"{what}: cannot load {path}: {reason}") from None
        if "cpu_nthread" in params:
            booster.set_param({"nthread": int(params["cpu_nthread"])})
        self.booster = booster
        self.n_features = booster.num_features()
        inputs, outputs = config["input"], config["output"]
        if len(inputs) != 1 or inputs[0]["data_type"] != "TYPE_FP32":
            raise pb_utils.TritonModelException(f"{what}: FIL takes exactly one FP32 input")
        dims = [int(d) for d in inputs[0]["dims"]]
        if dims[-1] not in (-1, self.n_features):
            raise pb_utils.TritonModelException(
                f"{what}: config input dims {dims} but {path.name} takes {self.n_features} features"
            )
        self.input_name, self.output_name = inputs[0]["name"], outputs[0]["name"]
        self.output_dims = [int(d) for d in outputs[0]["dims"]]
        learner = json.loads(booster.save_config())["learner"]["learner_model_param"]
        n_classes = max(2, int(learner.get("num_class", "0")))
        want = [n_classes] if self.output_class and self.predict_proba else [1]
        if self.output_dims != want and not (want == [1] and self.output_dims == []):
            raise pb_utils.TritonModelException(
                f"{what}: config output dims {self.output_dims}, but this {n_classes}-class model with "
                f"output_class={str(self.output_class).lower()}, predict_proba="
                f"{str(self.predict_proba).lower()} answers {want}"
            )
        if not _announced:
            pb_utils.Logger.log_info(
                "backend 'fil' is the local stand-in of NVIDIA's FIL backend (backends/fil/model.py, "
                "xgboost inplace_predict); NVIDIA's Triton image loads the same repository with the real one"
            )
            _announced = True

    def _answer(self, x: np.ndarray) -> np.ndarray:
        # FIL's CPU path scores in float32 as xgboost does; the answer is float32 either way.
        scores = np.asarray(self.booster.inplace_predict(x, validate_features=False), dtype=np.float32)
        if self.output_class:
            if scores.ndim == 1:  # binary: the positive class's probability
                proba = np.stack([1.0 - scores, scores], axis=1).astype(np.float32)
            else:
                proba = scores
            if self.predict_proba:
                scores = proba
            elif scores.ndim == 1:
                scores = (scores > self.threshold).astype(np.float32)
            else:
                scores = np.argmax(proba, axis=1).astype(np.float32)
        return scores.reshape([len(x), *self.output_dims])

    def execute(self, requests: list) -> list:
        """Every request of a dynamic batch in one prediction, then one answer each."""
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        x = np.ascontiguousarray(np.concatenate(arrays) if len(arrays) > 1 else arrays[0], np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            err = pb_utils.TritonError(f"expected [rows, {self.n_features}] FP32, got {list(x.shape)}")
            return [pb_utils.InferenceResponse(error=err) for _ in requests]
        out = self._answer(x)
        answers, start = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor(self.output_name, out[start : start + n])
            answers.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += n
        return answers
