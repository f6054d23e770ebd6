"""Bench: the whole drift check vs a plain ``scipy.stats.ks_2samp`` loop, from one run.

20 numeric features, 100,000 reference rows and 100,000 current rows (seeded). Ours is
``propensity.monitoring.detectors.data_drift`` (alibi-detect KSDrift per feature, the correction, PSI and
normalised Wasserstein) plus the score's prediction drift, run warm inside the drift venv;
the peer is a bare KS loop over the same arrays in the same process. The external-python
cost (a fresh drift-venv interpreter importing alibi-detect, as ``@task.external_python``
starts) is timed separately.

    .venv/bin/python bench/bench_drift.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchline import bench_line

ROOT = Path(__file__).resolve().parents[1]
DRIFT_PYTHON = os.environ.get("PROPENSITY_DRIFT_PYTHON", str(ROOT / ".venv-drift" / "bin" / "python"))

INNER = r"""
import json, sys, time, statistics
import numpy as np
from scipy.stats import ks_2samp
from propensity.monitoring.detectors import data_drift, prediction_drift

N, F, REPEAT = 100_000, 20, 5
rng = np.random.default_rng(0)
ref = {f"f{i}": rng.gamma(2.0, 1.0 + i / 10, N) for i in range(F)}
cur = {f"f{i}": rng.gamma(2.0, 1.0 + i / 10, N) for i in range(F)}
cur["f3"] = cur["f3"] * 1.5
ref_s, cur_s = rng.beta(2, 5, N), rng.beta(2, 5, N)

def ours():
    r = data_drift(ref, cur)
    prediction_drift(ref_s, cur_s)
    return r

def peer():
    return [ks_2samp(ref[k], cur[k]) for k in ref] + [ks_2samp(ref_s, cur_s)]

ours(); peer()  # warm: imports and first-call caches out of the figure
t_ours, t_peer = [], []
for _ in range(REPEAT):
    t = time.perf_counter(); r = ours(); t_ours.append(time.perf_counter() - t)
    t = time.perf_counter(); peer(); t_peer.append(time.perf_counter() - t)
print(json.dumps({"ours_s": statistics.median(t_ours), "peer_s": statistics.median(t_peer),
                  "drifted": r["drifted_features"]}))
"""

STARTUP = "import time; t = time.perf_counter(); import propensity.monitoring.detectors; from alibi_detect.cd import KSDrift"


def main() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    out = subprocess.run([DRIFT_PYTHON, "-c", INNER], capture_output=True, text=True, env=env, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    starts = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([DRIFT_PYTHON, "-c", STARTUP], capture_output=True, env=env, check=True)
        starts.append(time.perf_counter() - t)
    ours, peer = figures["ours_s"], figures["peer_s"]
    print("drift check, 20 features + score, 100,000 reference vs 100,000 current rows (median of 5)")
    print(f"  ours  propensity.monitoring.detectors (alibi KSDrift + Bonferroni + PSI + W1/sd): {ours:.3f} s")
    print(f"  peer  plain scipy.stats.ks_2samp loop:                          {peer:.3f} s")
    print(f"  ratio ours/peer: {ours / peer:.2f}x   (drifted: {figures['drifted']})")
    print(
        f"  external-python start (fresh drift-venv python + alibi-detect import), median of 3: "
        f"{statistics.median(starts):.2f} s"
    )
    print(
        f"  ours incl. that start: {ours + statistics.median(starts):.2f} s  "
        f"({(ours + statistics.median(starts)) / peer:.1f}x the warm plain loop)"
    )
    print(
        bench_line(
            "drift check, 20 features, 100k vs 100k rows", ours, peer, "ratio <= 2", ours / peer <= 2, "s"
        )
    )
    print(
        bench_line(
            "drift check incl. external-python start", ours + statistics.median(starts), peer, None, None, "s"
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
