"""A running API follows the deployment record: a new champion is loaded beside the old one, then swapped.

:class:`DeploymentWatcher` reads the deployment record (``deployment.json``, a folder or S3) every
``serving.reload_interval_s`` on a thread of its own. When the deployed versions or their sha256
change it builds what serves them (backends, feature order) off the request path, and only then
replaces the one reference the request path reads, so a batch is answered wholly by the old
models or wholly by the new ones and every answer names the version that computed it. A record
that cannot be served (a file whose sha256 is not the recorded one, a backend that does not load)
keeps the previous models serving; the failure is logged once per record, shown by ``/readyz``, and
the record is tried again at each poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def deployment_key(state: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a deployment: each role's version and file hash (history aside)."""
    key: list[Any] = []
    for role in ("champion", "shadow"):
        entry = state.get(role) or {}
        key += [entry.get("version"), entry.get("sha256")]
    return tuple(key)


class DeploymentWatcher(Generic[T]):
    """Polls ``read_state``; on a new deployment key, ``build(state)`` then ``swap(built)``.

    ``current_key`` is the key of what serves now. ``problem`` is why the newest record is not
    served (None when it is). ``poll()`` does one check (the thread calls it; tests may too).
    """

    def __init__(
        self,
        read_state: Callable[[], dict[str, Any]],
        build: Callable[[dict[str, Any]], T],
        swap: Callable[[T], None],
        current_key: tuple[Any, ...],
        interval_s: float,
    ) -> None:
        self._read_state, self._build, self._swap = read_state, build, swap
        self.current_key = current_key
        self.interval_s = interval_s
        self.problem: str | None = None
        self.swaps = 0
        self._failed_key: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # poll() from a test and the thread never build twice at once
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s and self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="deployment-watcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("deployment watcher: poll failed")

    def poll(self) -> bool:
        """One check; True when it swapped in a new deployment."""
        with self._lock:
            try:
                state = self._read_state()
            except Exception as exc:  # the record is unreadable for now: keep serving what we have
                self._note(("unreadable",), f"deployment record unreadable: {exc}")
                return False
            key = deployment_key(state)
            if key == self.current_key:
                self.problem, self._failed_key = None, None
                return False
            # A record that failed is tried again each poll (its file may be put right without a
            # new deploy), logged once.
            try:
                built = self._build(state)
            except Exception as exc:
                version = (state.get("champion") or {}).get("version")
                self._note(key, f"deployment of v{version} not served, the previous models stay: {exc}")
                return False
            self._swap(built)
            old, self.current_key = self.current_key, key
            self.problem, self._failed_key = None, None
            self.swaps += 1
            log.info("now serving deployment %s (was %s)", key, old)
            return True

    def _note(self, key: tuple[Any, ...], problem: str) -> None:
        if key != self._failed_key:
            log.error("%s", problem)
        self._failed_key, self.problem = key, problem
