"""A private redis-server on a free loopback port, for tests and benches that stop and restart it.

``persist=True``: it saves to ``folder`` on SIGTERM (``stop``), so a restart comes back with the
data; ``persist=False``: it keeps nothing, so a restart comes back empty. ``kill`` is SIGKILL.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from serving_models import closed_port


class RedisServer:
    def __init__(self, folder: Path | None = None, *, persist: bool = True, port: int | None = None) -> None:
        if persist and folder is None:
            raise ValueError("a persistent redis-server needs a folder")
        self.folder, self.persist, self.port = folder, persist, port or closed_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "no"]
        args += ["--dir", str(self.folder), "--save", "3600 1"] if self.persist else ["--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        ping = ["redis-cli", "-p", str(self.port), "ping"]
        while subprocess.run(ping, capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: a persistent server saves first."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: nothing saved."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
