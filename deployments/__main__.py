"""`python -m deployments apply|prefect-yaml|serve`: the catalog onto a server, into prefect.yaml, or served."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("apply", help="work pools, limits, blocks and deployments onto PREFECT_API_URL (idempotent)")
    ap.add_argument("--target", choices=["local", "aws"], default=None,
                    help="default: aws when SPOTLINE_PROFILE=aws, else local")
    py = sub.add_parser("prefect-yaml", help="write prefect.yaml from the catalog (--check: fail if it drifted)")
    py.add_argument("--check", action="store_true")
    sub.add_parser("serve", help="serve every deployment from this process (no work pool, no worker)")
    args = parser.parse_args(argv)

    if args.command == "apply":
        from prefect.settings import PREFECT_API_URL

        from deployments.apply import apply
        from spotline.settings import get_settings

        if not PREFECT_API_URL.value():
            print("error: PREFECT_API_URL is not set: apply needs a running Prefect server "
                  "(`python -m deployments.devserver start` prints one)", file=sys.stderr)
            return 2
        settings = get_settings()
        target = args.target or ("aws" if settings.profile == "aws" else "local")
        changes = apply(target, settings)
        for change in changes:
            print(change)
        changed = sum(c.action != "unchanged" for c in changes)
        print(f"{changed} change(s), {len(changes) - changed} unchanged, target {target}, server {PREFECT_API_URL.value()}")
        return 0
    if args.command == "prefect-yaml":
        from deployments.prefect_yaml import check, write

        if args.check:
            problem = check()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            print("prefect.yaml matches the catalog")
            return 0
        print(f"wrote {write()}")
        return 0
    from deployments.serve_local import serve_all

    serve_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
