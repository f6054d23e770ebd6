"""``propensity``: operator commands that don't need the Airflow UI.

propensity audit [--limit N]           every alias move (promote, refuse, rollback, deploy)
propensity champion                    the champion's version, AUC and baselines
propensity rollback --reason TEXT      restore the previous champion (then deploy it)
propensity fetch-data                  make sure the demo dataset is present (download once)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="propensity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", help="list the registry's audit log, newest first")
    audit.add_argument("--limit", type=int, default=30)
    audit.add_argument("--json", action="store_true")
    sub.add_parser("champion", help="the current champion")
    rollback = sub.add_parser("rollback", help="restore the previous champion and deploy it")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument(
        "--date", type=dt.date.fromisoformat, default=None, help="logical date to record (default: today)"
    )
    rollback.add_argument("--no-deploy", action="store_true")
    sub.add_parser("fetch-data", help="download and convert the demo dataset when it is absent")
    args = parser.parse_args(argv)

    from propensity.settings import get_settings

    settings = get_settings()
    if args.command == "audit":
        from propensity.registry import Registry

        rows = Registry(settings).audit(args.limit)
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        print(f"{'at':25} {'action':13} {'alias':10} {'from':>5} {'to':>5}  {'actor':24} reason")
        for r in rows:
            print(
                f"{r['at']:25} {r['action']:13} {r['alias'] or '':10} {r['from_version'] or '-':>5} "
                f"{r['to_version'] or '-':>5}  {r['actor'][:24]:24} {r['reason'] or ''}"
            )
        return 0
    if args.command == "champion":
        from propensity.training_pipeline import champion_summary

        print(json.dumps(champion_summary(settings), indent=2))
        return 0
    if args.command == "rollback":
        from propensity.training_pipeline import deploy_champion, rollback_champion

        day = args.date or dt.date.today()
        print(json.dumps(rollback_champion(settings, day, reason=args.reason), indent=2))
        if not args.no_deploy:
            print(json.dumps(deploy_champion(settings, day), indent=2, default=str))
        return 0
    if args.command == "fetch-data":
        from propensity.datasets import ensure_source

        print(ensure_source(settings))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
