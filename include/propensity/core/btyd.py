"""BG/NBD, the classic buy-till-you-die model (Fader, Hardie and Lee 2005), with scipy.

The fit maximises the standard log-likelihood over log-parameters with an L2 penalty on the
parameters, as ``lifetimes.BetaGeoFitter`` does (``-mean(LL) + penalizer * sum(params**2)``, time
rescaled so the oldest customer's age is 10 while fitting); the smallest penalizer of a ladder
that converges is kept. Used as a baseline (training) and as point-in-time features (the
feature job fits it on each snapshot's own rows: only events before the snapshot's date).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

PENALIZERS = (0.001, 0.01, 0.1, 0.5)
WEEK_DAYS = 7.0


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD parameters (time unit: weeks) and how the fit went."""

    r: float
    alpha: float
    a: float
    b: float
    penalizer: float
    customers: int
    fit_seconds: float

    def expected_purchases(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """E[purchases in (T, T + t]] given frequency x, recency t_x and age T (weeks)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        first = (a + b + x - 1) / (a - 1)
        second = 1 - hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t)) * (
            (alpha + T) / (alpha + t + T)
        ) ** (r + x)
        return first * second / self._alive_denominator(x, t_x, T)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        return 1.0 / self._alive_denominator(x, t_x, T)

    def _alive_denominator(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        # For x = 0 the term is 0; b + x - 1 may then be negative, so guard the division.
        ratio = np.where(x > 0, a / np.where(x > 0, b + x - 1, 1.0), 0.0)
        return 1.0 + ratio * ((alpha + T) / (alpha + t_x)) ** (r + x)


def bgnbd_log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie and Lee 2005, eq. 6)."""
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    has = x > 0
    a4 = np.where(
        has, np.log(a) - np.log(np.where(has, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x), -np.inf
    )
    return a1 + a2 + np.logaddexp(a3, a4)


def _fit_once(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, penalizer: float):
    def objective(log_params: np.ndarray) -> float:
        params = np.exp(log_params)
        ll = bgnbd_log_likelihood(params, x, t_x, T)
        return float(-ll.mean() + penalizer * np.sum(params**2))

    return minimize(objective, x0=np.zeros(4), method="BFGS", tol=1e-6)


def fit_bgnbd(
    frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, penalizers: tuple[float, ...] = PENALIZERS
) -> BgNbd:
    """The BG/NBD fit with the smallest penalizer of the ladder that converges to a usable model.

    Usable: the optimiser converged and every parameter is finite and positive.
    Raises ``ValueError`` when none does.
    """
    x, t_x, TT = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
    if len(x) == 0:
        raise ValueError("BG/NBD: no customers to fit")
    if np.any((t_x < 0) | (t_x > TT) | (x < 0)):
        raise ValueError("BG/NBD: need 0 <= recency <= T and frequency >= 0 for every customer")
    started = time.monotonic()
    # Time rescaled so the oldest customer's age is 10 (as lifetimes does): the penalty then
    # weighs the same on any time unit; alpha is scaled back after the fit.
    scale = 10.0 / max(float(TT.max()), 1e-9)
    tried = []
    for pen in penalizers:
        with np.errstate(all="ignore"):  # the line search probes overflowing parameters
            res = _fit_once(x, t_x * scale, TT * scale, pen)
        params = np.exp(res.x)
        params[1] /= scale
        tried.append(f"{pen}: {res.message}")
        if res.success and np.all(np.isfinite(params)) and np.all(params > 0):
            return BgNbd(
                *map(float, params), penalizer=pen, customers=len(x), fit_seconds=time.monotonic() - started
            )
    raise ValueError(f"BG/NBD did not converge with any penalizer ({'; '.join(tried)})")
