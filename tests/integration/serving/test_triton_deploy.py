"""Deploys into a real Triton Inference Server (tritonserver 2.51.0, FIL stand-in backend).

One server per test run (the ``triton`` fixture); each test deploys its own model name.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import xgboost as xgb
from serving_models import train_booster

from propensity.serving.backends import BackendUnavailable, TritonBackend
from propensity.serving.deploy import DeployError, deploy_model, parity_sample, parse_config, retire_shadow
from propensity.serving.manifest import read_deployment
from propensity.serving.triton_server import repository_index

pytestmark = pytest.mark.integration


def _states(triton, name: str) -> dict[str, str]:
    """Each version's state once Triton has finished (un)loading (it unloads in the background)."""
    deadline = time.monotonic() + 30
    while True:
        states = {m["version"]: m["state"] for m in repository_index(triton.http) if m["name"] == name}
        if not {"LOADING", "UNLOADING"} & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def test_deploy_loads_the_version_and_both_protocols_answer_what_xgboost_answers(triton, make_settings):
    settings = make_settings(serving=triton.serving("parity"))
    booster = train_booster(seed=0)
    record = deploy_model(settings, booster, 1, "champion")
    assert (record["status"], record["server"]) == ("deployed", triton.grpc)
    assert record["parity_rows"] == 256 and record["parity_max_abs_diff"] <= 1e-6
    assert record["parity_with_missing_values"] is True  # binary tensors carry NaN: default branches
    assert _states(triton, "parity") == {"1": "READY"}

    x = parity_sample(booster, 300, seed=11)
    want = booster.inplace_predict(x, validate_features=False).astype(np.float64)
    for protocol, url in (("grpc", triton.grpc), ("http", triton.http)):
        backend = TritonBackend(url, "parity", 1, protocol=protocol, timeout_s=5)
        assert backend.ready()
        np.testing.assert_allclose(backend.predict(x), want, atol=1e-6, rtol=0)
        np.testing.assert_allclose(backend.predict(x[:1]), want[:1], atol=1e-6, rtol=0)
        assert backend.version == "1"  # the version Triton said it answered with


def test_the_rendered_config_is_a_model_config_the_server_loads_as_written(triton, make_settings):
    # A delay other than the default (0) shows the server takes the rendered value, not its own.
    settings = make_settings(serving={**triton.serving("cfg"), "max_queue_delay_us": 50})
    deploy_model(settings, train_booster(seed=1), 3, "champion")
    written = parse_config((triton.repository / "cfg" / "config.pbtxt").read_text())
    served = tg.InferenceServerClient(triton.grpc).get_model_config("cfg").config
    assert (served.name, served.backend, served.max_batch_size) == ("cfg", "fil", written.max_batch_size)
    assert list(served.version_policy.specific.versions) == [3]
    assert [(i.name, list(i.dims)) for i in served.input] == [("input__0", [5])]
    assert [(o.name, list(o.dims)) for o in served.output] == [("output__0", [2])]
    assert {k: v.string_value for k, v in served.parameters.items()} == {
        k: v.string_value for k, v in written.parameters.items()
    }
    assert served.dynamic_batching.max_queue_delay_microseconds == 50
    # nothing in the repository is the stand-in's: the real FIL backend reads these same files
    assert sorted(p.name for p in (triton.repository / "cfg").iterdir()) == [
        "3",
        "config.pbtxt",
        "deployment.json",
    ]
    assert [p.name for p in (triton.repository / "cfg" / "3").iterdir()] == ["xgboost.json"]


def test_champion_and_shadow_are_live_side_by_side_then_the_shadow_is_unloaded(triton, make_settings):
    settings = make_settings(serving=triton.serving("two"))
    champion, challenger = train_booster(seed=0), train_booster(seed=5)
    deploy_model(settings, champion, 1, "champion")
    record = deploy_model(settings, challenger, 2, "shadow")
    assert record["served_versions"] == ["1", "2"]
    assert _states(triton, "two") == {"1": "READY", "2": "READY"}
    x = parity_sample(challenger, 64, seed=3)
    v1 = TritonBackend(triton.grpc, "two", 1, timeout_s=5).predict(x)
    v2 = TritonBackend(triton.grpc, "two", 2, timeout_s=5).predict(x)
    np.testing.assert_allclose(v1, champion.inplace_predict(x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(v2, challenger.inplace_predict(x), atol=1e-6, rtol=0)
    assert np.max(np.abs(v1 - v2)) > 1e-3  # two different models really answered

    assert retire_shadow(settings)["retired_version"] == "2"
    assert _states(triton, "two")["2"] == "UNAVAILABLE"  # unloaded: the policy serves v1 only
    with pytest.raises(BackendUnavailable, match="Triton at .* failed to score two v2"):
        TritonBackend(triton.grpc, "two", 2, timeout_s=5).predict(x)
    np.testing.assert_allclose(TritonBackend(triton.grpc, "two", 1).predict(x[:2]), v1[:2], atol=1e-6)


def test_promotion_replaces_the_champion_and_a_rollback_reloads_the_previous_version(triton, make_settings):
    settings = make_settings(serving=triton.serving("swap"))
    first, second = train_booster(seed=0), train_booster(seed=7)
    x = parity_sample(first, 32, seed=4)
    deploy_model(settings, first, 1, "champion")
    deploy_model(settings, second, 2, "champion")
    assert read_deployment(settings)["champion"]["version"] == "2"
    # v1 stays loaded (draining) until the next deploy: API processes move to v2 at their next poll
    assert _states(triton, "swap") == {"1": "READY", "2": "READY"}
    third = train_booster(seed=8)
    deploy_model(settings, third, 3, "champion")
    assert _states(triton, "swap") == {"1": "UNAVAILABLE", "2": "READY", "3": "READY"}
    # rollback = deploy the previous version again: Triton loads v2 back as champion, v3 drains
    record = deploy_model(settings, second, 2, "champion", source="rollback")
    assert record["replaced_version"] == "3" and record["served_versions"] == ["2", "3"]
    deploy_model(settings, first, 1, "champion", source="rollback")
    assert _states(triton, "swap") == {"1": "READY", "2": "READY", "3": "UNAVAILABLE"}
    np.testing.assert_allclose(
        TritonBackend(triton.grpc, "swap", 1).predict(x), first.inplace_predict(x), atol=1e-6, rtol=0
    )
    # unload and load again by hand (explicit mode): gone, then served again
    client = th.InferenceServerClient(triton.http)
    client.unload_model("swap")
    assert not TritonBackend(triton.http, "swap", 1, protocol="http").ready()
    client.load_model("swap")
    assert TritonBackend(triton.http, "swap", 1, protocol="http").ready()


def test_a_corrupted_model_file_fails_its_load_and_the_champion_keeps_serving(triton, make_settings):
    settings = make_settings(serving=triton.serving("corrupt"))
    champion = train_booster(seed=0)
    deploy_model(settings, champion, 1, "champion")
    folder = triton.repository / "corrupt"
    # a version whose file is damaged (truncated), listed beside the champion
    (folder / "2").mkdir()
    good = bytes(train_booster(seed=5).save_raw("json"))
    (folder / "2" / "xgboost.json").write_bytes(good[: len(good) // 2])
    config = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(config.replace("versions: [ 1 ]", "versions: [ 1, 2 ]"))
    with pytest.raises(BackendUnavailable, match=r"version 2 is at UNAVAILABLE state.*cannot load"):
        TritonBackend(triton.grpc, "corrupt", 1, timeout_s=60).load()
    assert _states(triton, "corrupt") == {"1": "READY", "2": "UNAVAILABLE"}
    x = parity_sample(champion, 16, seed=2)
    np.testing.assert_allclose(
        TritonBackend(triton.grpc, "corrupt", 1).predict(x), champion.inplace_predict(x), atol=1e-6, rtol=0
    )


def test_a_model_the_config_cannot_serve_fails_the_deploy_with_tritons_reason(triton, make_settings):
    settings = make_settings(serving=triton.serving("refused"))
    champion = train_booster(seed=0)
    deploy_model(settings, champion, 1, "champion")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    three = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(x, label=rng.integers(0, 3, 200)),
        num_boost_round=3,
    )
    with pytest.raises(DeployError, match=r"version 2 is at UNAVAILABLE.*3-class model") as err:
        deploy_model(settings, three, 2, "champion")
    assert (err.value.record["status"], err.value.record["live_version"]) == ("failed", "1")
    assert read_deployment(settings)["champion"]["version"] == "1"
    assert not (triton.repository / "refused" / "2").exists()
    assert "versions: [ 1 ]" in (triton.repository / "refused" / "config.pbtxt").read_text()
    assert _states(triton, "refused")["1"] == "READY"
    np.testing.assert_allclose(
        TritonBackend(triton.grpc, "refused", 1).predict(x[:4]), champion.inplace_predict(x[:4]), atol=1e-6
    )


def test_the_stand_in_refuses_what_it_does_not_support_with_the_reason(triton, make_settings):
    settings = make_settings(serving=triton.serving("unsupported"))
    deploy_model(settings, train_booster(seed=0), 1, "champion")
    config = triton.repository / "unsupported" / "config.pbtxt"
    text = config.read_text()
    config.write_text(text.replace('"xgboost_json"', '"lightgbm"'))
    with pytest.raises(BackendUnavailable, match="model_type 'lightgbm' is refused here"):
        TritonBackend(triton.grpc, "unsupported", 1, timeout_s=60).load()
    config.write_text(text.replace('key: "predict_proba"', 'key: "predict_probability"'))
    with pytest.raises(BackendUnavailable, match=r"unsupported parameter\(s\) \['predict_probability'\]"):
        TritonBackend(triton.grpc, "unsupported", 1, timeout_s=60).load()
    assert "stand-in of NVIDIA's FIL backend" in triton.log_path.read_text()
    assert json.loads((triton.repository / "unsupported" / "deployment.json").read_text())["champion"]


def test_an_s3_repository_is_deployed_to_and_served_by_triton(s3_server, s3_bucket, tmp_path):
    """The repository on S3 (moto's server): deploy writes there and Triton loads from there."""
    from triton_fixtures import TritonHandle, free_ports

    from propensity.core.settings import committed_settings
    from propensity.serving.triton_server import TritonServer, repository_arg

    handle = TritonHandle(tmp_path / "unused", *free_ports(), tmp_path / "triton.log")
    serving = {**handle.serving("ons3"), "repository": f"s3://{s3_bucket}/models"}
    settings = committed_settings(
        zone_root=str(tmp_path / "zones"), s3_endpoint_url=s3_server, serving=serving
    )
    assert repository_arg(settings) == f"s3://{s3_server}/{s3_bucket}/models"
    champion, challenger = train_booster(seed=0), train_booster(seed=5)
    # the first deploy finds no server yet: it writes to S3 and the server loads it at start-up
    offline = committed_settings(
        zone_root=str(tmp_path / "zones"),
        s3_endpoint_url=s3_server,
        serving={**serving, "backend": "inprocess", "triton_url": None},
    )
    deploy_model(offline, champion, 1, "champion")
    with TritonServer(settings, log_path=handle.log_path) as server:
        assert server.load == ["ons3"]
        record = deploy_model(settings, challenger, 2, "shadow")
        assert record["repository"] == f"s3://{s3_bucket}/models/ons3"
        assert record["parity_max_abs_diff"] <= 1e-6
        states = {m["version"]: m["state"] for m in repository_index(handle.http) if m["name"] == "ons3"}
        assert states == {"1": "READY", "2": "READY"}
        x = parity_sample(champion, 20, seed=9)
        np.testing.assert_allclose(
            TritonBackend(handle.grpc, "ons3", 1).predict(x), champion.inplace_predict(x), atol=1e-6, rtol=0
        )


def test_a_server_that_cannot_start_fails_with_its_own_log(tmp_path):
    from triton_fixtures import TritonHandle, free_ports

    from propensity.core.settings import committed_settings
    from propensity.serving.triton_server import TritonServer, TritonStartError

    handle = TritonHandle(tmp_path / "models", *free_ports(), tmp_path / "triton.log")
    handle.repository.mkdir()
    settings = committed_settings(zone_root=str(tmp_path / "zones"), serving=handle.serving("absent"))
    server = TritonServer(settings, load=["absent"], log_path=handle.log_path)
    with pytest.raises(TritonStartError, match=r"(?s)tritonserver exited with code \d+.*absent"):
        server.start()
    assert server.proc is not None and server.proc.poll() is not None
