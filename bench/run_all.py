"""Run every ``bench/bench_*.py`` and write one table of their figures to ``bench/RESULTS.md``.

Each script runs on its own, one after another (they would skew each other's timings), under a
per-script timeout, with the venv's interpreter. Its ``BENCH {...}`` lines (bench/README.md) are
collected; a script that prints none, fails or times out is listed as such, never dropped.

    .venv/bin/python bench/run_all.py [--timeout 900] [--only api,drift]     (make bench)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
KEPT_SECTION = "## Model quality (bench_model.py)"
PREFIX = "BENCH "
REQUIRED = ("figure", "ours", "peer", "ratio", "goal", "unit")


@dataclass
class ScriptRun:
    """One script's outcome: its figures, or why there are none."""

    name: str
    status: str  # ok | no BENCH line | failed (rc N) | timed out after N s
    seconds: float
    figures: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # malformed BENCH lines
    tail: str = ""


def parse_bench_lines(output: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The figures of every well-formed ``BENCH {json}`` line, and a note for each malformed one."""
    figures, problems = [], []
    for line in output.splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            data = json.loads(line[len(PREFIX) :])
        except json.JSONDecodeError as exc:
            problems.append(f"not JSON ({exc.msg}): {line[:80]}")
            continue
        missing = [k for k in REQUIRED if k not in data] if isinstance(data, dict) else list(REQUIRED)
        if missing:
            problems.append(f"missing {missing}: {line[:80]}")
            continue
        figures.append(data)
    return figures, problems


def run_script(path: Path, timeout_s: float, python: str) -> ScriptRun:
    """Run one script in its own process group, so a timeout also ends the servers it started."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [python, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        timed_out = True
    seconds = time.monotonic() - t0
    figures, problems = parse_bench_lines(out or "")
    if timed_out:
        status = f"timed out after {timeout_s:.0f} s"
    elif proc.returncode != 0:
        status = f"failed (rc {proc.returncode})"
    elif not figures:
        status = "no BENCH line"
    else:
        status = "ok"
    tail = "\n".join((out or "").strip().splitlines()[-5:])
    return ScriptRun(path.stem, status, seconds, figures, problems, tail)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def render(runs: list[ScriptRun], started: dt.datetime) -> str:
    """RESULTS.md: one table of every figure, then the scripts without figures."""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run_all.py`) on {started:%Y-%m-%d %H:%M} UTC, "
        f"{platform.node() or 'this machine'}: {os.cpu_count()} cores, Python {platform.python_version()}. "
        "Each figure comes from one run of its script, ours and the peer side by side; "
        "the convention is in bench/README.md.",
        "",
        "| figure | ours | peer | ratio | goal | met? | unit | script |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for run in runs:
        for f in run.figures:
            lines.append(
                "| "
                + " | ".join(
                    fmt(v)
                    for v in (
                        f["figure"],
                        f["ours"],
                        f["peer"],
                        f["ratio"],
                        f["goal"],
                        f.get("met"),
                        f["unit"],
                    )
                )
                + f" | {run.name} |"
            )
    lines += ["", "| script | status | seconds |", "| --- | --- | ---: |"]
    for run in runs:
        note = run.status + ("; malformed: " + "; ".join(run.problems) if run.problems else "")
        lines.append(f"| {run.name} | {fmt(note)} | {run.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    parser.add_argument("--only", default="", help="comma-separated names (bench_<name>.py) to run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    # bench_cluster needs the native cluster up and its demo run: only when named in --only.
    scripts = [s for s in sorted(BENCH_DIR.glob("bench_*.py")) if s.stem != "bench_cluster"]
    if args.only:
        scripts = sorted(BENCH_DIR.glob("bench_*.py"))
        wanted = {
            f"bench_{n.strip().removeprefix('bench_').removesuffix('.py')}" for n in args.only.split(",")
        }
        scripts = [s for s in scripts if s.stem in wanted]
    started = dt.datetime.now(dt.UTC)
    runs = []
    for script in scripts:
        print(f"== {script.name} (timeout {args.timeout:.0f} s)", flush=True)
        run = run_script(script, args.timeout, sys.executable)
        runs.append(run)
        print(f"   {run.status} in {run.seconds:.0f} s, {len(run.figures)} figure(s)", flush=True)
        if run.status != "ok" and run.tail:
            print("   " + run.tail.replace("\n", "\n   "), flush=True)
    # Sections a script writes itself (bench_model.py's ablation table) survive the rewrite.
    kept = ""
    if args.output.exists() and KEPT_SECTION in args.output.read_text():
        kept = "\n" + KEPT_SECTION + args.output.read_text().split(KEPT_SECTION, 1)[1]
    args.output.write_text(render(runs, started) + kept)
    print(f"wrote {args.output}")
    # The table is written either way; a failed or timed-out script still fails `make bench`.
    return 1 if any(r.status.startswith(("failed", "timed out")) for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
