"""The tritonclient path (HTTP and gRPC) against a real KServe V2 server: MLServer 1.7.1.

Triton needs a container engine, which the development machines lack; MLServer speaks the
same inference and model-repository protocol. It runs from its own venv (.venv-mlserver,
``make venv-mlserver``) in explicit mode: it loads nothing until the deploy step asks.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_models import closed_port, train_booster

from propensity.serving.backends import MLSERVER, BackendUnavailable, TritonBackend
from propensity.serving.deploy import deploy_model, parity_sample
from propensity.serving.manifest import read_deployment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MLSERVER_BIN = ROOT / ".venv-mlserver" / "bin" / "mlserver"


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """MLServer on free loopback ports, serving an (initially empty) model repository."""
    if not MLSERVER_BIN.exists():
        pytest.fail(f"{MLSERVER_BIN} missing: run `make venv-mlserver`")
    repo = tmp_path_factory.mktemp("repo")
    http_port, grpc_port, metrics_port = closed_port(), closed_port(), closed_port()
    env = {
        **os.environ,
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        "MLSERVER_HOST": "127.0.0.1",
        # Explicit mode, like Triton's --model-control-mode=explicit: the deploy step loads.
        "MLSERVER_LOAD_MODELS_AT_STARTUP": "false",
        # Inference in the server process: no worker pool to spawn on a 2-core machine.
        "MLSERVER_PARALLEL_WORKERS": "0",
    }
    log_file = (repo.parent / "mlserver.log").open("w")
    proc = subprocess.Popen(
        [str(MLSERVER_BIN), "start", str(repo)], env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        import tritonclient.http as th

        client = th.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"MLServer did not start: {(repo.parent / 'mlserver.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield {"repo": repo, "http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def _settings(make_settings, server: dict, protocol: str):
    return make_settings(
        serving={
            "repository": str(server["repo"]),
            "triton_url": server[protocol],
            "triton_protocol": protocol,
            "server_flavor": "mlserver",
            "ready_timeout_s": 30,
        }
    )


def test_deploy_loads_into_the_server_and_both_protocols_match_xgboost(mlserver, make_settings):
    booster = train_booster(seed=0)
    record = deploy_model(_settings(make_settings, mlserver, "http"), booster, 1, "champion")
    assert record["status"] == "deployed"
    assert record["parity_max_abs_diff"] <= 1e-6
    assert record["parity_rows"] == 256

    assert record["parity_with_missing_values"] is False  # MLServer's JSON tensors have no NaN

    x = parity_sample(booster, 200, seed=11, missing_share=0.0)
    want = booster.inplace_predict(x).astype(np.float64)
    for protocol in ("http", "grpc"):
        backend = TritonBackend(mlserver[protocol], "propensity", 1, protocol=protocol, adapter=MLSERVER)
        assert backend.ready()
        got = backend.predict(x)
        assert got.shape == (200,)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        # one row, the API's common case
        np.testing.assert_allclose(backend.predict(x[:1]), want[:1], atol=1e-6, rtol=0)


def test_shadow_version_loaded_over_grpc_is_served_beside_the_champion(mlserver, make_settings):
    champion, challenger = train_booster(seed=0), train_booster(seed=5)
    settings = _settings(make_settings, mlserver, "grpc")
    if read_deployment(settings)["champion"] is None:
        deploy_model(settings, champion, 1, "champion")
    record = deploy_model(settings, challenger, 2, "shadow")
    assert record["served_versions"] == ["1", "2"]
    assert record["parity_with_missing_values"] is True  # gRPC carries NaN: default branches checked
    x = parity_sample(challenger, 50, seed=3)
    v1 = TritonBackend(mlserver["grpc"], "propensity", 1, protocol="grpc", adapter=MLSERVER).predict(x)
    v2 = TritonBackend(mlserver["grpc"], "propensity", 2, protocol="grpc", adapter=MLSERVER).predict(x)
    np.testing.assert_allclose(v1, champion.inplace_predict(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(v2, challenger.inplace_predict(x), atol=1e-6, rtol=0)
    assert np.max(np.abs(v1 - v2)) > 1e-3  # two different models really answered


def test_unknown_version_and_wrong_width_fail_with_the_reason(mlserver):
    http = TritonBackend(mlserver["http"], "propensity", 7, protocol="http", adapter=MLSERVER)
    assert not http.ready()
    with pytest.raises(BackendUnavailable, match="failed to score propensity v7"):
        http.predict(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D matrix"):
        http.predict(np.zeros((1, 5, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="cannot carry missing features"):
        http.predict(np.full((1, 5), np.nan, dtype=np.float32))
