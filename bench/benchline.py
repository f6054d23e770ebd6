"""The BENCH line every benchmark prints for bench/run_all.py (convention in bench/README.md)."""

from __future__ import annotations

import json


def bench_line(
    figure: str, ours: float, peer: float | None, goal: str | None, met: bool | None, unit: str
) -> str:
    """``BENCH {json}``: one figure, ours beside the peer's from the same run."""
    ratio = round(ours / peer, 3) if peer else None
    data = {
        "figure": figure,
        "ours": round(ours, 3),
        "peer": None if peer is None else round(peer, 3),
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "unit": unit,
    }
    return "BENCH " + json.dumps(data)
