"""``propensity``: the one command line of the project (also ``python -m propensity.cli``).

propensity demo [--start-at N]                 make demo: the whole loop on the real data
propensity serve                               the prediction API (uvicorn, serving.host:port)
propensity features FROM TO [--every N] [--materialize]
                                               snapshots as of FROM..TO in one Spark pass
propensity feast-yaml                          feature_store.yaml of the active profile (for feast CLI)
propensity drift-calibrate REF_FROM REF_TO CHECK_FROM CHECK_TO [--reference-version N]
                           [--stable FROM TO]  false alarms and detection delay (drift venv)
propensity audit [--limit N] [--json]          every alias move (promote, refuse, rollback, deploy)
propensity champion                            the champion's version, AUC and baselines
propensity rollback --reason TEXT              restore the previous champion (then deploy it)
propensity fetch-data                          make sure the demo dataset is present (download once)
propensity source check PATH [--timezone ZONE] [--name NAME] [--yaml]
                                               read a new transaction file, propose its source: block

Each command imports only what it needs, so the drift venv (no Spark, no Feast) runs
``drift-calibrate`` and every process starts fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="propensity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole pipeline on the real data (make demo)")
    demo.add_argument("--start-at", type=int, default=1, choices=range(1, 7), help="resume at this step")
    sub.add_parser("serve", help="run the prediction API with uvicorn")
    features = sub.add_parser("features", help="compute snapshots as of FROM..TO in one Spark pass")
    features.add_argument("first", type=_date)
    features.add_argument("last", type=_date)
    features.add_argument("--every", type=int, default=1, help="days between snapshot dates")
    features.add_argument("--materialize", action="store_true", help="then load the last one online")
    sub.add_parser("feast-yaml", help="print feature_store.yaml for the active profile")
    calibrate = sub.add_parser("drift-calibrate", help="drift false alarms and delay on stored snapshots")
    for name in ("ref_from", "ref_to", "check_from", "check_to"):
        calibrate.add_argument(name, type=_date)
    calibrate.add_argument("--reference-version", type=int, default=None)
    calibrate.add_argument("--stable", nargs=2, type=_date, default=None, metavar=("FROM", "TO"))
    audit = sub.add_parser("audit", help="list the registry's audit log, newest first")
    audit.add_argument("--limit", type=int, default=30)
    audit.add_argument("--json", action="store_true")
    sub.add_parser("champion", help="the current champion")
    rollback = sub.add_parser("rollback", help="restore the previous champion and deploy it")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument(
        "--date", type=_date, default=None, help="logical date to record (default: today, UTC)"
    )
    rollback.add_argument("--no-deploy", action="store_true")
    sub.add_parser("fetch-data", help="download and convert the demo dataset when it is absent")
    source = sub.add_parser("source", help="work with a transaction source").add_subparsers(
        dest="source_command", required=True
    )
    check = source.add_parser(
        "check",
        help="read a transaction file, propose its source: block, say what the first run will do",
    )
    check.add_argument("path", help="a CSV (any delimiter, line ending, gzip) or Parquet file")
    check.add_argument("--timezone", default=None, help="zone of naive timestamps, when the guess is wrong")
    check.add_argument("--name", default=None, help="the source's name (default: from the file name)")
    check.add_argument("--yaml", action="store_true", help="print only the proposed source: block")
    return parser


def _print(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _demo(args: argparse.Namespace) -> int:
    from propensity.demo import main as demo_main

    return demo_main(["--start-at", str(args.start_at)])


def _serve(args: argparse.Namespace) -> int:  # pragma: no cover - exercised by `make serve`
    import uvicorn

    from propensity.core.settings import get_settings
    from propensity.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    settings = get_settings()
    app = create_app(settings)
    uvicorn.run(app, host=settings.serving.host, port=settings.serving.port, access_log=False)
    return 0


def _features(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.core.timeutil import date_range
    from propensity.features.job import compute_features

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    settings = get_settings()
    dates = date_range(args.first, args.last, args.every)
    compute_features(settings, dates)
    if args.materialize:
        from propensity.features.store import materialize_dates

        materialize_dates(settings, dates)
    return 0


def _feast_yaml(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.features.store import render_yaml

    sys.stdout.write(render_yaml(get_settings()))
    return 0


def _drift_calibrate(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.core.storage import list_partitions
    from propensity.core.zones import SNAPSHOTS, zone_store
    from propensity.monitoring.calibration import calibrate

    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    have = list_partitions(zone_store(settings), *SNAPSHOTS)
    result = calibrate(
        settings,
        [d for d in have if args.ref_from <= d <= args.ref_to],
        [d for d in have if args.check_from <= d <= args.check_to],
        reference_version=args.reference_version,
        stable=tuple(args.stable) if args.stable else None,
    )
    _print(result)
    return 0


def _audit(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.training.registry import Registry

    rows = Registry(get_settings()).audit(args.limit)
    if args.json:
        _print(rows)
        return 0
    print(f"{'at':25} {'action':13} {'alias':10} {'from':>5} {'to':>5}  {'actor':24} reason")
    for r in rows:
        print(
            f"{r['at']:25} {r['action']:13} {r['alias'] or '':10} {r['from_version'] or '-':>5} "
            f"{r['to_version'] or '-':>5}  {r['actor'][:24]:24} {r['reason'] or ''}"
        )
    return 0


def _champion(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.training.steps import champion_summary

    _print(champion_summary(get_settings()))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.training.steps import deploy_champion, rollback_champion

    settings = get_settings()
    # An operator's rollback is recorded on the day it was asked for (audit metadata).
    day = args.date or dt.datetime.now(dt.UTC).date()
    _print(rollback_champion(settings, day, reason=args.reason))
    if not args.no_deploy:
        _print(deploy_champion(settings, day))
    return 0


def _fetch_data(args: argparse.Namespace) -> int:
    from propensity.core.settings import get_settings
    from propensity.ingest.datasets import ensure_source

    print(ensure_source(get_settings()))
    return 0


def _source(args: argparse.Namespace) -> int:
    from propensity.ingest.source_check import run

    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    settings = None
    try:
        from propensity.core.settings import get_settings

        settings = get_settings()  # its validation and training settings shape the report
    except Exception as exc:  # noqa: BLE001 - a new user's config may not load yet: the defaults do
        logging.getLogger("propensity.cli").warning(
            "settings not loaded (%s): the report uses the settings classes' defaults", exc
        )
    return run(args.path, timezone=args.timezone, yaml_only=args.yaml, settings=settings, name=args.name)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "serve": _serve,
    "features": _features,
    "feast-yaml": _feast_yaml,
    "drift-calibrate": _drift_calibrate,
    "audit": _audit,
    "champion": _champion,
    "rollback": _rollback,
    "fetch-data": _fetch_data,
    "source": _source,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
