"""Deploy to a local Triton repository: rendered config, model file, roles, parity, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from google.protobuf import text_format
from serving_models import FEATURES, closed_port, train_booster
from tritonclient.grpc import model_config_pb2

from propensity.serving.backends import InProcessBackend
from propensity.serving.deploy import (
    DeployError,
    deploy_model,
    parity_sample,
    parse_config,
    render_config,
    retire_shadow,
)
from propensity.serving.manifest import read_deployment


@pytest.fixture
def repo_settings(make_settings, tmp_path):
    return make_settings(serving={"repository": str(tmp_path / "models"), "model_name": "propensity"})


def test_rendered_config_parses_into_tritons_model_config(settings):
    text = render_config(settings, n_features=5, versions=[4, 3])
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.name == "propensity"
    assert cfg.backend == "fil"
    assert cfg.max_batch_size == 32768
    assert [i.name for i in cfg.input] == ["input__0"]
    assert list(cfg.input[0].dims) == [5]
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(cfg.output[0].dims) == [2]
    assert list(cfg.version_policy.specific.versions) == [3, 4]
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.HasField("dynamic_batching")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 0  # batch what is queued, wait for nothing
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["model_type"] == "xgboost_json"
    assert params["output_class"] == "true"
    assert params["predict_proba"] == "true"
    assert params["cpu_nthread"] == "1"  # one thread per call, as the in-process backend predicts


def test_the_fil_thread_count_comes_from_config(make_settings):
    settings = make_settings(serving={"cpu_nthread": 2})
    cfg = text_format.Parse(render_config(settings, 5, [1]), model_config_pb2.ModelConfig())
    assert cfg.parameters["cpu_nthread"].string_value == "2"


def test_parse_config_names_what_is_wrong(settings):
    text = render_config(settings, n_features=5, versions=[1]).replace(
        'backend: "fil"', 'backend: "onnxruntime"'
    )
    with pytest.raises(ValueError, match="backend is 'onnxruntime', not 'fil'"):
        parse_config(text)
    with pytest.raises(text_format.ParseError):
        parse_config("backend: fil [")


def test_deploy_writes_a_loadable_version_and_passes_parity(repo_settings, booster, tmp_path):
    record = deploy_model(repo_settings, booster, 3, "champion", source="models:/propensity/3")
    folder = tmp_path / "models" / "propensity"
    assert record["status"] == "deployed"
    assert record["parity_max_abs_diff"] == 0.0
    assert record["served_versions"] == ["3"]
    assert record["repository"] == str(folder)
    # The file Triton would read loads with xgboost and predicts exactly as the source.
    loaded = xgb.Booster(model_file=str(folder / "3" / "xgboost.json"))
    x = parity_sample(booster, 64, seed=7)
    np.testing.assert_array_equal(loaded.inplace_predict(x), booster.inplace_predict(x))
    assert loaded.feature_names == FEATURES
    cfg = parse_config((folder / "config.pbtxt").read_text())
    assert list(cfg.version_policy.specific.versions) == [3]
    state = json.loads((folder / "deployment.json").read_text())
    assert state["champion"]["version"] == "3"
    assert state["champion"]["feature_names"] == FEATURES
    assert state["shadow"] is None
    # No temporary files left beside the published ones.
    assert sorted(p.name for p in folder.rglob("*")) == [
        "3",
        "config.pbtxt",
        "deployment.json",
        "xgboost.json",
    ]


def test_shadow_is_served_beside_champion_and_promotion_clears_it(
    repo_settings, booster, booster_b, tmp_path
):
    deploy_model(repo_settings, booster, 1, "champion")
    deploy_model(repo_settings, booster_b, 2, "shadow")
    cfg = parse_config((tmp_path / "models" / "propensity" / "config.pbtxt").read_text())
    assert list(cfg.version_policy.specific.versions) == [1, 2]
    state = read_deployment(repo_settings)
    assert (state["champion"]["version"], state["shadow"]["version"]) == ("1", "2")

    deploy_model(repo_settings, booster_b, 2, "champion")
    state = read_deployment(repo_settings)
    assert (state["champion"]["version"], state["shadow"]) == ("2", None)
    cfg = parse_config((tmp_path / "models" / "propensity" / "config.pbtxt").read_text())
    # v1 stays loaded until the next deploy: API processes still on it finish their requests
    assert list(cfg.version_policy.specific.versions) == [1, 2]
    assert state["draining"]["version"] == "1"
    booster_c = train_booster(seed=9)
    deploy_model(repo_settings, booster_c, 3, "champion")
    cfg = parse_config((tmp_path / "models" / "propensity" / "config.pbtxt").read_text())
    assert list(cfg.version_policy.specific.versions) == [2, 3]  # v1 is gone, v2 drains
    # retire_shadow with no shadow is a no-op, not an error
    assert retire_shadow(repo_settings)["status"] == "noop"


def test_shadow_with_other_features_is_refused_and_champion_stays(repo_settings, booster, tmp_path):
    deploy_model(repo_settings, booster, 1, "champion")
    before = (tmp_path / "models" / "propensity" / "config.pbtxt").read_text()
    narrow = train_booster(seed=2, features=["a", "b", "c"])
    with pytest.raises(DeployError, match=r"same number of features, got \[3, 5\]") as err:
        deploy_model(repo_settings, narrow, 2, "shadow")
    assert err.value.record["status"] == "failed"
    assert (tmp_path / "models" / "propensity" / "config.pbtxt").read_text() == before
    assert read_deployment(repo_settings)["shadow"] is None


def test_unreachable_server_leaves_previous_version_live(make_settings, booster, booster_b, tmp_path):
    repo = tmp_path / "models"
    ok = make_settings(serving={"repository": str(repo)})
    deploy_model(ok, booster, 1, "champion")
    before = (repo / "propensity" / "config.pbtxt").read_text()
    down = make_settings(
        serving={"repository": str(repo), "triton_url": f"127.0.0.1:{closed_port()}", "ready_timeout_s": 2}
    )
    with pytest.raises(DeployError, match="refused to load propensity") as err:
        deploy_model(down, booster_b, 2, "champion")
    record = err.value.record
    assert (record["status"], record["live_version"]) == ("failed", "1")
    assert (repo / "propensity" / "config.pbtxt").read_text() == before
    assert not (repo / "propensity" / "2").exists()
    assert read_deployment(ok)["champion"]["version"] == "1"


def test_version_must_be_a_positive_integer(repo_settings, booster):
    with pytest.raises(ValueError, match="positive integers, got 'v3'"):
        deploy_model(repo_settings, booster, "v3")
    with pytest.raises(ValueError, match="role must be one of"):
        deploy_model(repo_settings, booster, 3, role="canary")


def test_in_process_backend_reads_the_repository_file(repo_settings, booster):
    deploy_model(repo_settings, booster, 5, "champion")
    backend = InProcessBackend.from_repository(repo_settings, 5)
    x = parity_sample(booster, 100, seed=3)
    assert backend.version == "5" and backend.ready()
    got = backend.predict(x)
    assert got.shape == (100,) and got.dtype == np.float64
    np.testing.assert_array_equal(got, booster.inplace_predict(x).astype(np.float64))
    with pytest.raises(ValueError, match="takes 5 features, got 3"):
        backend.predict(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="no model file .*/propensity/9/xgboost.json"):
        InProcessBackend.from_repository(repo_settings, 9)


def test_a_model_file_swapped_after_deploy_is_refused_everywhere(repo_settings, booster, booster_b, tmp_path):
    from propensity.batch.scoring import deployed_champion
    from propensity.batch.worker import BatchInputError
    from propensity.serving.manifest import ModelIntegrityError, deployed_model, read_model_bytes

    deploy_model(repo_settings, booster, 3, "champion")
    champ = deployed_model(repo_settings)
    assert read_model_bytes(repo_settings, champ) == bytes(booster.save_raw("json"))
    # Someone replaces the file under the version's folder: same path, another model.
    (tmp_path / "models" / "propensity" / "3" / "xgboost.json").write_bytes(bytes(booster_b.save_raw("json")))
    with pytest.raises(ModelIntegrityError, match=r"xgboost.json has sha256 .* the deployment manifest says"):
        read_model_bytes(repo_settings, champ)
    with pytest.raises(ModelIntegrityError):
        InProcessBackend.from_repository(repo_settings, 3, sha256=champ.sha256)
    with pytest.raises(BatchInputError, match="changed after v3 was deployed"):
        deployed_champion(repo_settings)
