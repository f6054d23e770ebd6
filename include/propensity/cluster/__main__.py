"""``python -m propensity.cluster up|status|down|conf|demo`` (the Makefile's cluster-* targets)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="propensity.cluster")
    parser.add_argument("command", choices=["up", "status", "down", "conf", "compose", "demo"])
    args = parser.parse_args(argv)
    from propensity.cluster import control

    if args.command == "up":
        return control.up()
    if args.command == "status":
        return control.status()
    if args.command == "down":
        return control.down()
    if args.command == "conf":
        from propensity.cluster.supervisor import render
        from propensity.core.settings import project_home

        cfg, _, services = control.spec()
        print(render(cfg, services, str(project_home())))
        return 0
    if args.command == "compose":
        from propensity.cluster.compose import compose_path, render_compose
        from propensity.cluster.config import cluster_settings

        compose_path().write_text(render_compose(cluster_settings()))
        print(f"wrote {compose_path()}")
        return 0
    from propensity.cluster.demo import main as demo

    return demo()


if __name__ == "__main__":
    sys.exit(main())
