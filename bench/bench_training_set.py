"""Point-in-time training sets: the direct snapshot join vs Feast's file offline store vs the floor.

One run builds synthetic inputs in the real layouts (snapshots under ``offline/customer_features/
date=D/``, validated events under ``validated/events/date=D/``), then builds the training set of
each variant three ways, each in its own child process:

* ``direct``: :func:`propensity.training.snapshot_join.build_training_table` (what training will use);
* ``feast``: :func:`propensity.training.dataset.build_training_set`, Feast ``get_historical_features``
  on the file offline store (today's path). It may blow up: the child is killed past
  ``--feast-max-rss-gb`` or ``--feast-timeout`` and the table says so;
* ``floor``: the same partitions read with pyarrow and the labels joined, with no checks.

For each: the build's wall time (imports and set-up excluded; best of up to 5 runs while they
take under 15 s together, Feast once), the child's peak RSS (VmHWM read
right after the build; the parent also polls VmRSS to enforce the cap), the Arrow size of the
result, and a digest of the rows (direct and floor must agree; Feast too where it finishes).

Goals (issue 16): direct <= 2x the floor's time; its peak RSS <= 3x the result's size; no growth
with the number of snapshots per customer (variant ``growth-1`` vs ``growth-7``: the same cutoffs,
1 or 7 snapshots per cutoff in the store; the direct builds of both are also alternated in one
process, 7 rounds, and their medians compared, since sub-second builds in separate processes on a
shared machine differ by load alone).

    .venv/bin/python bench/bench_training_set.py                    # every variant (~15 min, 2 cores)
    .venv/bin/python bench/bench_training_set.py --only growth-1,growth-7 --scale 0.1
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger("bench_training_set")

HORIZON = 30
FIRST_CUTOFF = dt.date(2021, 1, 4)  # a Monday; the bench's own synthetic calendar
LINES_PER_CUSTOMER_DAY = 0.02  # each customer buys on ~2% of days: ~45% positive 30-day labels


@dataclass(frozen=True)
class Variant:
    name: str
    customers: int
    cutoffs: int
    snapshots_per_cutoff: int = 1  # 7: a daily snapshot store (what the daily features DAG keeps)

    def cutoff_dates(self) -> list[dt.date]:
        return [FIRST_CUTOFF + dt.timedelta(weeks=k) for k in range(self.cutoffs)]

    def snapshot_dates(self) -> list[dt.date]:
        step = 7 // self.snapshots_per_cutoff
        return [
            c + dt.timedelta(days=i * step)
            for c in self.cutoff_dates()
            for i in range(self.snapshots_per_cutoff)
        ]


VARIANTS = (
    Variant("20k x 60", 20_000, 60),
    Variant("200k x 12", 200_000, 12),
    Variant("growth-1", 20_000, 12, 1),
    Variant("growth-7", 20_000, 12, 7),
)


# -- inputs --------------------------------------------------------------------------------


def settings_for(workdir: Path):
    from propensity.core.settings import committed_settings

    overrides = {
        "zone_root": str(workdir / "zones"),
        "cache_dir": str(workdir / "cache"),
        "features": {
            "label_days": HORIZON,
            "registry": str(workdir / "feast" / "registry.db"),
            "sqlite_path": str(workdir / "feast" / "online.db"),
        },
    }
    return committed_settings(**overrides)


def customer_ids(n: int) -> np.ndarray:
    width = len(str(n)) + 1
    return np.char.zfill(np.arange(1, n + 1).astype(str), width).astype(object)


def write_inputs(variant: Variant, workdir: Path, seed: int = 16) -> None:
    """Snapshots (every customer in each) and validated events covering every label window."""
    from propensity.core.schema import VALIDATED_SCHEMA
    from propensity.core.storage import write_partition
    from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS, zone_store
    from propensity.features.spec import INT_FEATURES, MODEL_FEATURES, SNAPSHOT_SCHEMA

    store = zone_store(settings_for(workdir))
    ids = customer_ids(variant.customers)
    id_array = pa.array(ids, pa.string())
    n = variant.customers
    rng = np.random.default_rng(seed)
    country = pa.array(rng.choice(np.array(["US", "CA", "MX"], dtype=object), n), pa.string())
    for day in variant.snapshot_dates():
        r = np.random.default_rng([seed, day.toordinal()])
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        cols: dict[str, Any] = {
            "customer_id": id_array,
            "event_timestamp": pa.repeat(pa.scalar(midnight, pa.timestamp("us", tz="UTC")), n),
        }
        for name in MODEL_FEATURES:
            cols[name] = (
                pa.array(r.integers(0, 365, n)) if name in INT_FEATURES else pa.array(r.gamma(2.0, 20.0, n))
            )
        cols["country"] = country
        write_partition(store, *SNAPSHOTS, day, pa.table(cols).cast(SNAPSHOT_SCHEMA))
    cutoffs = variant.cutoff_dates()
    first, last = cutoffs[0], cutoffs[-1] + dt.timedelta(days=HORIZON - 1)
    per_day = int(n * LINES_PER_CUSTOMER_DAY)
    for i in range((last - first).days + 1):
        day = first + dt.timedelta(days=i)
        r = np.random.default_rng([seed, day.toordinal(), 1])
        who = ids[r.integers(0, n, per_day)].copy()
        who[r.random(per_day) < 0.05] = None  # guests
        seconds = np.sort(r.integers(0, 86_400, per_day))
        times = np.datetime64(day, "us") + seconds.astype("timedelta64[s]")
        is_return = r.random(per_day) < 0.03
        qty = np.where(is_return, -1, 1 + r.poisson(1.0, per_day))
        price = np.round(r.gamma(2.0, 5.0, per_day), 2)
        kind = np.where(r.random(per_day) < 0.02, "non_product", "product").astype(object)
        table = pa.table(
            {
                "customer_id": pa.array(who, pa.string()),
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
                "order_id": pa.array([f"{day:%Y%m%d}-{k}" for k in range(per_day)], pa.string()),
                "item_id": pa.array(
                    np.char.add("SKU-", r.integers(0, 5000, per_day).astype(str)).astype(object)
                ),
                "quantity": pa.array(qty, pa.int64()),
                "unit_price": pa.array(price),
                "amount": pa.array(qty * price),
                "is_return": pa.array(is_return),
                "country": pa.array(np.full(per_day, "US", dtype=object), pa.string()),
                "_source_file": pa.array(np.full(per_day, "bench", dtype=object), pa.string()),
                "_source_row": pa.array(np.arange(1, per_day + 1), pa.int64()),
                "_parse_errors": pa.nulls(per_day, pa.string()),
                "line_kind": pa.array(kind, pa.string()),
            }
        )
        write_partition(store, *VALIDATED_EVENTS, day, table.cast(VALIDATED_SCHEMA))


# -- the three ways (children) -------------------------------------------------------------


def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def floor_build(workdir: Path, cutoffs: list[dt.date]) -> pa.Table:
    """The same partitions read with pyarrow and the labels joined: nothing but the work itself."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from propensity.core.zones import SNAPSHOTS, VALIDATED_EVENTS
    from propensity.features.spec import MODEL_FEATURES

    zones = workdir / "zones"
    days = sorted({c + dt.timedelta(days=i) for c in cutoffs for i in range(HORIZON)})
    buyers = {}
    for day in days:
        t = pq.read_table(
            zones / VALIDATED_EVENTS.zone / VALIDATED_EVENTS.name / f"date={day}" / "part-0.parquet",
            columns=["customer_id", "is_return", "line_kind"],
        )
        keep = pc.and_(
            pc.and_(pc.is_valid(t["customer_id"]), pc.equal(t["line_kind"], "product")),
            pc.invert(t["is_return"]),
        )
        buyers[day] = pc.unique(t["customer_id"].filter(keep).combine_chunks())
    parts = []
    for c in cutoffs:
        snap = pq.read_table(
            zones / SNAPSHOTS.zone / SNAPSHOTS.name / f"date={c}" / "part-0.parquet",
            columns=["customer_id", *MODEL_FEATURES, "country"],
        )
        window = pc.unique(
            pa.chunked_array([buyers[c + dt.timedelta(days=i)] for i in range(HORIZON)]).combine_chunks()
        )
        columns = [snap["customer_id"], pa.repeat(pa.scalar(c, pa.date32()), snap.num_rows)]
        columns += [snap[name].cast(pa.float64()) for name in MODEL_FEATURES]
        columns += [snap["country"], pc.is_in(snap["customer_id"], value_set=window).cast(pa.int64())]
        parts.append(
            pa.Table.from_arrays(
                columns, names=["customer_id", "cutoff", *MODEL_FEATURES, "country", "label"]
            )
        )
    return pa.concat_tables(parts)


def digest(table: pa.Table) -> str:
    """SHA-256 over fixed 100,000-row slices (independent of how the table is chunked)."""
    h = hashlib.sha256()
    for start in range(0, table.num_rows, 100_000):
        part = table.slice(start, 100_000).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:16]


def child(way: str, workdir: Path) -> dict[str, Any]:
    meta = json.loads((workdir / "variant.json").read_text())
    cutoffs = [dt.date.fromisoformat(d) for d in meta["cutoffs"]]
    settings = settings_for(workdir)
    import pandas as pd  # noqa: F401  (imported by every way; outside the clock)

    from propensity.training.snapshot_join import TRAINING_SCHEMA, build_training_table

    if way == "feast":
        import feast  # noqa: F401

        from propensity.training.dataset import build_training_set, training_rows
    before = _status_kb("self", "VmRSS")
    # Short builds are timed best of up to five (the machine is shared); Feast's once.
    runs = []
    while not runs or (way != "feast" and len(runs) < 5 and sum(runs) < 15.0):
        table = frame = None
        started = time.perf_counter()
        if way == "direct":
            table = build_training_table(settings, cutoffs)
        elif way == "floor":
            table = floor_build(workdir, cutoffs)
        else:
            frame = build_training_set(settings, training_rows(settings, cutoffs))
        runs.append(time.perf_counter() - started)
    seconds = min(runs)
    peak = _status_kb("self", "VmHWM")
    if way == "feast":
        frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
        frame = frame.sort_values(["cutoff", "customer_id"], kind="mergesort", ignore_index=True)
        table = pa.Table.from_pandas(frame, schema=TRAINING_SCHEMA, preserve_index=False)
    return {
        "way": way,
        "seconds": seconds,
        "runs": len(runs),
        "rss_before_mb": before / 1024,
        "peak_mb": peak / 1024,
        "rows": table.num_rows,
        "result_mb": table.nbytes / 2**20,
        "positives": int(table["label"].to_numpy().sum()),
        "digest": digest(table.select(TRAINING_SCHEMA.names).cast(TRAINING_SCHEMA)),
    }


def growth_child(one: Path, seven: Path, rounds: int = 7) -> dict[str, Any]:
    """The direct build on the 1- and 7-snapshot stores, alternated round by round (the machine is
    shared: load that changes between two child processes would read as growth)."""
    from propensity.training.snapshot_join import build_training_table

    inputs = {}
    for key, workdir in (("one", one), ("seven", seven)):
        meta = json.loads((workdir / "variant.json").read_text())
        inputs[key] = (settings_for(workdir), [dt.date.fromisoformat(d) for d in meta["cutoffs"]])
    times: dict[str, list[float]] = {"one": [], "seven": []}
    for _ in range(rounds):
        for key, (settings, cutoffs) in inputs.items():
            started = time.perf_counter()
            build_training_table(settings, cutoffs)
            times[key].append(time.perf_counter() - started)
    return {key: float(np.median(v)) for key, v in times.items()} | {"rounds": rounds}


def run_child(way: str, workdir: Path, *, timeout: float, max_rss_mb: float) -> dict[str, Any]:
    """Run one way in a child process, polling its RSS; killed past the cap or the timeout."""
    cmd = [sys.executable, __file__, "--child", way, "--workdir", str(workdir)]
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, start_new_session=True)
    started, highest, killed = time.monotonic(), 0, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _status_kb(proc.pid, "VmRSS") or 0
        highest = max(highest, rss)
        elapsed = time.monotonic() - started
        if rss / 1024 > max_rss_mb or elapsed > timeout:
            killed = (
                f"killed at {rss / 2**20:.1f} GB RSS after {elapsed:.0f} s"
                if rss / 1024 > max_rss_mb
                else f"killed after the {timeout:.0f} s timeout ({rss / 2**20:.1f} GB RSS)"
            )
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read() if proc.stderr else ""
    out.seek(0)
    lines = out.read().decode().strip().splitlines()
    max_rss_child = usage.ru_maxrss / 1024  # KB on Linux: the whole child, digest included
    if killed or proc.returncode != 0 or not lines:
        return {
            "way": way,
            "failed": killed or f"rc {proc.returncode}: {stderr.strip().splitlines()[-1:]}",
            "wall_s": time.monotonic() - started,
            "max_rss_mb": max(max_rss_child, highest / 1024),
        }
    result = json.loads(lines[-1])
    result["max_rss_mb"] = max_rss_child
    return result


# -- the table -----------------------------------------------------------------------------


def bench_line(
    figure: str, ours: float | None, peer: float | None, goal: str | None, met: bool | None, unit: str
) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchline import bench_line as line

    if ours is None:
        data = {
            "figure": figure,
            "ours": None,
            "peer": peer,
            "ratio": None,
            "goal": goal,
            "met": met,
            "unit": unit,
        }
        return "BENCH " + json.dumps(data)
    return line(figure, ours, peer, goal, met, unit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--ways", default="floor,direct,feast")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the customer counts (quick runs)")
    parser.add_argument("--feast-timeout", type=float, default=240.0)
    parser.add_argument("--feast-max-rss-gb", type=float, default=6.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.child == "growth":
        base = Path(args.workdir)
        print(json.dumps(growth_child(base / "growth-1", base / "growth-7")))
        return 0
    if args.child:
        print(json.dumps(child(args.child, Path(args.workdir))))
        return 0

    import pyarrow as pa_version  # noqa: F401

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    variants = [v for v in VARIANTS if not names or v.name in names]
    ways = [w.strip() for w in args.ways.split(",")]
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench-training-set-"))
    print(
        f"training-set bench: {os.cpu_count()} cores, pyarrow {pa.__version__}, label {HORIZON} days, "
        f"Feast capped at {args.feast_max_rss_gb:g} GB / {args.feast_timeout:.0f} s; inputs under {base}"
    )
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for v in variants:
            v = Variant(v.name, max(100, int(v.customers * args.scale)), v.cutoffs, v.snapshots_per_cutoff)
            workdir = base / v.name.replace(" ", "")
            t = time.perf_counter()
            write_inputs(v, workdir)
            (workdir / "variant.json").write_text(
                json.dumps(asdict(v) | {"cutoffs": [d.isoformat() for d in v.cutoff_dates()]})
            )
            print(
                f"\n{v.name}: {v.customers:,} customers x {v.cutoffs} cutoffs, {len(v.snapshot_dates())} "
                f"snapshots in the store, inputs written in {time.perf_counter() - t:.1f} s"
            )
            results[v.name] = {}
            for way in ways:
                cap = args.feast_max_rss_gb * 1024 if way == "feast" else 1e9
                timeout = args.feast_timeout if way == "feast" else 3600
                r = run_child(way, workdir, timeout=timeout, max_rss_mb=cap)
                results[v.name][way] = r
                if "failed" in r:
                    print(f"  {way:7} FAILED: {r['failed']} (peak {r['max_rss_mb']:,.0f} MB)")
                else:
                    print(
                        f"  {way:7} {r['seconds']:8.2f} s  peak {r['peak_mb']:7,.0f} MB (before build "
                        f"{r['rss_before_mb']:5,.0f} MB)  result {r['result_mb']:6,.0f} MB  rows {r['rows']:,}  "
                        f"positives {r['positives']:,}  digest {r['digest']}"
                    )
            if not v.name.startswith("growth"):
                shutil.rmtree(workdir, ignore_errors=True)
        growth = None
        if {"growth-1", "growth-7"} <= set(results) and "direct" in ways:
            out = subprocess.run(
                [sys.executable, __file__, "--child", "growth", "--workdir", str(base)],
                capture_output=True,
                text=True,
                check=True,
            )
            growth = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"\ngrowth, direct build alternated over {growth['rounds']} rounds (medians): "
                f"1 snapshot per cutoff {growth['one']:.3f} s, 7 per cutoff {growth['seven']:.3f} s"
            )
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)

    print(
        "\n| variant | way | build s | x floor | peak RSS MB | result MB | peak / result | (peak - before) / result | rows equal |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, by_way in results.items():
        floor = by_way.get("floor", {})
        for way, r in by_way.items():
            if "failed" in r:
                print(f"| {name} | {way} | {r['failed']} | | {r['max_rss_mb']:,.0f} | | | | |")
                continue
            ratio = r["seconds"] / floor["seconds"] if floor.get("seconds") else float("nan")
            equal = "yes" if r["digest"] == floor.get("digest") else "NO"
            print(
                f"| {name} | {way} | {r['seconds']:.2f} | {ratio:.2f} | {r['peak_mb']:,.0f} | {r['result_mb']:,.0f} | "
                f"{r['peak_mb'] / r['result_mb']:.2f} | {(r['peak_mb'] - r['rss_before_mb']) / r['result_mb']:.2f} | {equal} |"
            )
    print()
    for name, by_way in results.items():
        direct, floor, feast = by_way.get("direct", {}), by_way.get("floor", {}), by_way.get("feast", {})
        if "seconds" in direct and "seconds" in floor:
            ratio = direct["seconds"] / floor["seconds"]
            print(
                bench_line(
                    f"training set {name}: direct build time vs the pyarrow floor",
                    direct["seconds"],
                    floor["seconds"],
                    "ratio <= 2",
                    ratio <= 2,
                    "s",
                )
            )
            rss = direct["peak_mb"] / direct["result_mb"]
            # The growth variants' 40 MB results are smaller than the interpreter itself (~130 MB).
            sized = not name.startswith("growth")
            print(
                bench_line(
                    f"training set {name}: direct peak RSS / result size",
                    rss,
                    None,
                    "ours <= 3" if sized else None,
                    rss <= 3 if sized else None,
                    "x",
                )
            )
        if feast and "direct" in by_way:
            if "seconds" in feast:
                print(
                    bench_line(
                        f"training set {name}: Feast file store build time (direct as peer)",
                        feast["seconds"],
                        direct.get("seconds"),
                        None,
                        None,
                        "s",
                    )
                )
            else:
                print(
                    bench_line(
                        f"training set {name}: Feast file store ({feast['failed']})",
                        None,
                        direct.get("seconds"),
                        None,
                        None,
                        "s",
                    )
                )
    if "growth-1" in results and "growth-7" in results:
        one, seven = results["growth-1"].get("feast", {}), results["growth-7"].get("feast", {})
        if "seconds" in one and "seconds" in seven:
            print(
                bench_line(
                    "training set 20k x 12: Feast time with 7 snapshots per cutoff vs 1",
                    seven["seconds"],
                    one["seconds"],
                    None,
                    None,
                    "s",
                )
            )
    if growth:
        g = growth["seven"] / growth["one"]
        print(
            bench_line(
                "training set 20k x 12: direct time with 7 snapshots per cutoff vs 1 (alternated, median)",
                growth["seven"],
                growth["one"],
                "ratio <= 1.2 (no growth)",
                g <= 1.2,
                "s",
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
