"""A circuit breaker for the online store: when it is down, answer 503 at once instead of waiting out
a timeout per request, and find out it is back with one probe at a time.

closed: calls go through; ``failures`` consecutive failures open it. open: calls fail at once
with the last error, for ``reset_s``. half-open (after ``reset_s``): one call goes through; success
closes it, failure opens it again. The clock is ``time.monotonic`` (process time, not data time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CircuitOpen(RuntimeError):
    """The breaker is open: the protected call was not made."""


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.reset_s, self.clock = max(1, failures), reset_s, clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error: BaseException | None = None

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self.clock() - self._opened_at >= self.reset_s else "open"

    def call(self, fn: Callable[[], T], failure: type[BaseException] = Exception) -> T:
        """``fn()`` unless the breaker is open (then :class:`CircuitOpen`); ``failure`` exceptions count."""
        with self._lock:
            if self._opened_at is not None:
                if self.clock() - self._opened_at < self.reset_s or self._probing:
                    raise CircuitOpen(
                        f"{self._consecutive} failed calls in a row, not retried for {self.reset_s:g} s; "
                        f"last: {self.last_error}"
                    )
                self._probing = True  # half-open: this call is the probe
        try:
            result = fn()
        except failure as exc:
            with self._lock:
                self._consecutive += 1
                self.last_error = exc
                self._probing = False
                if self._consecutive >= self.failures or self._opened_at is not None:
                    self._opened_at = self.clock()
            raise
        with self._lock:
            self._consecutive, self._opened_at, self._probing = 0, None, False
        return result
