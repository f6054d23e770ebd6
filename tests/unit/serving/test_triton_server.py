"""How the Triton server is started: its command line, repository URI and the API's address of it."""

from __future__ import annotations

import pytest

from propensity.serving.triton_server import TritonServer, TritonStartError, repository_arg


def test_backend_triton_talks_to_the_configured_server_over_grpc_by_default(make_settings):
    s = make_settings(serving={"backend": "triton", "triton_grpc_port": 9101, "triton_http_port": 9100})
    assert (s.serving.triton_protocol, s.serving.triton_url) == ("grpc", "127.0.0.1:9101")
    http = make_settings(serving={"backend": "triton", "triton_protocol": "http", "triton_http_port": 9100})
    assert http.serving.triton_url == "127.0.0.1:9100"
    explicit = make_settings(serving={"backend": "triton", "triton_url": "triton:8001"})
    assert explicit.serving.triton_url == "triton:8001"
    assert make_settings().serving.triton_url is None  # in-process: no server at all


def test_an_s3_repository_names_its_endpoint_the_way_triton_reads_it(make_settings, tmp_path):
    local = make_settings(serving={"repository": str(tmp_path / "models")})
    assert repository_arg(local) == str(tmp_path / "models")
    s3 = make_settings(serving={"repository": "s3://bucket/models/"}, s3_endpoint_url="http://127.0.0.1:5000")
    assert repository_arg(s3) == "s3://http://127.0.0.1:5000/bucket/models"
    aws = make_settings(serving={"repository": "s3://bucket/models"})
    assert repository_arg(aws) == "s3://bucket/models"


def test_the_command_line_serves_the_repository_in_explicit_mode_on_the_configured_ports(
    make_settings, tmp_path, monkeypatch
):
    root = tmp_path / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("")
    monkeypatch.setenv("PROPENSITY_TRITON_DIR", str(root))
    settings = make_settings(
        serving={"repository": str(tmp_path / "models"), "triton_http_port": 7000, "triton_grpc_port": 7001}
    )
    with pytest.raises(TritonStartError, match="no FIL backend in .*run `make venv-triton`"):
        TritonServer(settings, load=[]).command()
    (root / "backends" / "fil").mkdir(parents=True)
    (root / "backends" / "fil" / "model.py").write_text("")
    cmd = TritonServer(settings, load=["propensity"]).command()
    assert cmd[0] == str(root / "bin" / "tritonserver")
    for arg in (
        f"--model-repository={tmp_path / 'models'}",
        f"--backend-directory={root / 'backends'}",
        "--model-control-mode=explicit",
        "--http-port=7000",
        "--grpc-port=7001",
        "--http-address=127.0.0.1",
        "--load-model=propensity",
    ):
        assert arg in cmd
    # nothing deployed yet: nothing to load at start-up
    assert TritonServer(settings).load == []
