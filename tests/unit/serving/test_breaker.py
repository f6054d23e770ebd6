"""The online store's circuit breaker: opens after N failures, fails fast, probes, closes."""

from __future__ import annotations

import pytest

from propensity.serving.breaker import CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_open_fail_fast_probe_and_close():
    clock, calls = Clock(), []
    breaker = CircuitBreaker(failures=3, reset_s=1.0, clock=clock)

    def down():
        calls.append("down")
        raise ConnectionError("redis refused")

    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(down)
    assert breaker.state == "open" and len(calls) == 3
    with pytest.raises(CircuitOpen, match="3 failed calls in a row.*redis refused"):
        breaker.call(down)
    assert len(calls) == 3  # not called while open
    clock.now = 1.5
    assert breaker.state == "half-open"
    with pytest.raises(ConnectionError):  # the probe fails: open again, for another reset_s
        breaker.call(down)
    assert breaker.state == "open" and len(calls) == 4
    clock.now = 3.0
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state == "closed"


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(failures=2, reset_s=1.0, clock=Clock())
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("x")))
    breaker.call(lambda: 1)
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("x")))
    assert breaker.state == "closed"
