"""Triton Inference Server as a process this project owns: start, wait until ready, stop.

The server is NVIDIA's own ``tritonserver`` (2.51.0, CPU), from the PyTriton wheel of
``.venv-triton`` (``make venv-triton``), with the FIL stand-in backend that make installs beside
its Python backend. It serves ``serving.repository`` (a folder, or S3, which this build reads) in
explicit model-control mode: the deploy step loads and unloads, nothing else does. Ports come
from ``serving.triton_*_port``.

``make triton`` runs it in the foreground (``python -m propensity.serving.triton_server``); the
test suite starts one per run (tests/support/triton_fixtures.py); ``make demo`` starts one, deploys
into it and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from propensity.core.settings import project_home
from propensity.serving.manifest import CONFIG_FILE, repository_store

if TYPE_CHECKING:
    from propensity.core.settings import Settings

# Where `make venv-triton` puts the server (override: $PROPENSITY_TRITON_DIR).
DEFAULT_SERVER_DIR = Path(".venv-triton/lib/python3.11/site-packages/pytriton/tritonserver")
LOG_TAIL_CHARS = 4000


class TritonStartError(RuntimeError):
    """The server did not come up (or exited); the message carries the end of its own log."""


def server_dir() -> Path:
    return Path(os.environ.get("PROPENSITY_TRITON_DIR") or project_home() / DEFAULT_SERVER_DIR)


def repository_arg(settings: Settings) -> str:
    """``--model-repository`` for the configured repository: a folder, or Triton's S3 form.

    Triton names a custom S3 endpoint inside the URI: ``s3://http://host:port/bucket/prefix``.
    """
    repo = settings.serving.repository
    if not repo.startswith("s3://"):
        return repo
    endpoint = settings.s3_endpoint_url
    if not endpoint:
        return repo
    parsed = urlparse(endpoint)
    return f"s3://{parsed.scheme}://{parsed.netloc}/{repo[len('s3://') :].strip('/')}"


class TritonServer:
    """One ``tritonserver`` process on the configured host and ports.

    ``load``: models loaded at start-up (default: the configured model, when its config.pbtxt is in
    the repository). Use as a context manager, or ``start()`` ... ``stop()``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        load: list[str] | None = None,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        s = settings.serving
        self.settings = settings
        self.host = s.triton_host
        self.http_port, self.grpc_port, self.metrics_port = (
            s.triton_http_port,
            s.triton_grpc_port,
            s.triton_metrics_port,
        )
        self.start_timeout_s = s.triton_start_timeout_s
        if load is None:
            load = [s.model_name] if repository_store(settings).exists(s.model_name, CONFIG_FILE) else []
        self.load = load
        self.extra_args = extra_args or []
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="triton-")) / "triton.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    # -- process --------------------------------------------------------------------------
    def command(self) -> list[str]:
        root = server_dir()
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise TritonStartError(f"no tritonserver at {binary}: run `make venv-triton`")
        if not (root / "backends" / "fil" / "model.py").is_file():
            raise TritonStartError(f"no FIL backend in {root / 'backends'}: run `make venv-triton`")
        cmd = [
            str(binary),
            f"--model-repository={repository_arg(self.settings)}",
            f"--backend-directory={root / 'backends'}",
            "--model-control-mode=explicit",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=5",
        ]
        cmd += [f"--load-model={name}" for name in self.load]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.settings.serving.repository.startswith("s3://"):
            # Credentials come from the environment, as for every other S3 reader here.
            env.setdefault("AWS_DEFAULT_REGION", self.settings.s3_region)
        return env

    def start(self) -> TritonServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,  # Ctrl-C in a terminal reaches it through stop(), once
            )
        try:
            self.wait_ready(self.start_timeout_s)
        except TritonStartError:
            self.stop()
            raise
        return self

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def ready(self) -> bool:
        """Triton's own readiness: up, and every model it was asked to load is loaded."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {self.proc.returncode} before it was ready; "
                    f"its log ({self.log_path}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready on {self.http_url} after {timeout_s:g} s; "
                    f"its log ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown (tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def repository_index(url: str, protocol: str = "http") -> list[dict[str, Any]]:
    """Triton's repository index: every model version it knows, its state and reason."""
    if protocol == "grpc":
        import tritonclient.grpc as tc

        index = tc.InferenceServerClient(url).get_model_repository_index(as_json=True).get("models", [])
    else:
        import tritonclient.http as tc  # type: ignore[no-redef]

        index = tc.InferenceServerClient(url).get_model_repository_index()
    return [
        {k: m.get(k, "") for k in ("name", "version", "state", "reason")}
        for m in sorted(index, key=lambda m: (m.get("name", ""), str(m.get("version", ""))))
    ]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `make triton`
    from propensity.core.settings import get_settings

    parser = argparse.ArgumentParser(description="Triton Inference Server on the configured ports")
    parser.add_argument("--log", help="server log file (default: a temporary folder)")
    args = parser.parse_args(argv)
    settings = get_settings()
    server = TritonServer(settings, log_path=args.log)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print(f"starting {' '.join(server.command())}\nlog: {server.log_path}", flush=True)
    try:
        server.start()
        print(f"Triton ready: HTTP {server.http_url}, gRPC {server.grpc_url} (Ctrl-C stops it)", flush=True)
        while not stopping and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    except TritonStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
