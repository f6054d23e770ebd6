"""One real Triton Inference Server per test run (``triton``), and settings that point at it.

The server (propensity.serving.triton_server, from ``make venv-triton``) serves a temporary
repository on free loopback ports, in explicit mode. Tests share it and stay apart by model name:
``triton_settings(make_settings, triton, "my_model")`` deploys and serves ``my_model`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serving_models import closed_port


@dataclass(frozen=True)
class TritonHandle:
    repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def serving(self, model_name: str, protocol: str = "grpc", **more) -> dict:
        """``serving`` settings for a model of this server's repository."""
        return {
            "model_name": model_name,
            "repository": str(self.repository),
            "backend": "triton",
            "triton_protocol": protocol,
            "triton_url": self.grpc if protocol == "grpc" else self.http,
            "triton_http_port": self.http_port,
            "triton_grpc_port": self.grpc_port,
            "triton_metrics_port": self.metrics_port,
            # A shared 2-core machine: loads take seconds, and answers may wait on other work.
            "ready_timeout_s": 90,
            "request_timeout_s": 5,
            **more,
        }


def free_ports(n: int = 3) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = closed_port()
        if p not in ports:
            ports.append(p)
    return ports


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    """tritonserver over an empty repository, started once for the whole run."""
    from propensity.core.settings import committed_settings
    from propensity.serving.triton_server import TritonServer

    root = tmp_path_factory.mktemp("triton")
    http_port, grpc_port, metrics_port = free_ports()
    handle = TritonHandle(root / "models", http_port, grpc_port, metrics_port, root / "triton.log")
    handle.repository.mkdir()
    settings = committed_settings(
        zone_root=str(root / "zones"), serving=handle.serving("none", triton_start_timeout_s=120)
    )
    server = TritonServer(settings, load=[], log_path=handle.log_path)
    server.start()
    try:
        yield handle
    finally:
        server.stop()
