"""``python -m deploy.local up|down|status|reset|faults`` — manage the embedded local stack.

State is saved under the state folder and comes back with the next ``up`` (see
:mod:`deploy.local.persist`); ``reset`` (stack stopped) or ``up --fresh`` starts empty, and
``status`` reports the saved state's age and size, running or not.

``up --faults FILE_OR_JSON`` starts it with a fault plan; ``faults show``, ``faults set
FILE_OR_JSON`` and ``faults clear`` read, replace and switch off the running stack's plan (see
:mod:`deploy.local.faults` for the spec). A stack started here has no owner: it stays up until
``down``. ``status`` of a port where another checkout's stack answers exits 3 with a ``note``.

IAM is enforced unless ``up --no-iam`` (or ``STP_LOCAL_IAM=0``): the notebooks sign as the
runner user with the shipped runner policy, functions as their execution roles (see
:mod:`deploy.local.access`).
"""

from __future__ import annotations

import argparse
import json
import sys

from deploy.local import down_report, reset, status, up
from deploy.local.faults import clear_faults, get_faults, set_faults
from helpers.core.errors import PipelineError
from helpers.pipeline.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack in the background (idempotent)")
    start.add_argument("--faults", metavar="FILE_OR_JSON", help="a fault plan to start with")
    start.add_argument("--fresh", action="store_true", help="forget the saved state first (as reset)")
    start.add_argument(
        "--iam", action=argparse.BooleanOptionalAction, default=None,
        help="enforce IAM policies (default on; STP_LOCAL_IAM=0 turns it off)",
    )  # fmt: skip
    commands.add_parser("reset", help="forget the saved state of the stopped stack: the next up starts empty")
    commands.add_parser("down", help="stop this checkout's stack and its workers (never another's)")
    commands.add_parser(
        "status", help="health, fault plan and counters (exit 3 when not running, or another checkout's)"
    )
    faults = commands.add_parser("faults", help="show, set or clear the running stack's fault plan")
    faults.add_argument("action", choices=["show", "set", "clear"])
    faults.add_argument("spec", nargs="?", metavar="FILE_OR_JSON", help="the plan, for set")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "reset" or (args.command == "up" and args.fresh):
            forgot = reset(settings)
            print(f"saved state of {settings.state_dir} {'removed' if forgot else 'was empty'}")
        if args.command == "up":
            result = up(settings, faults=args.faults, iam=args.iam)
            print(f"local stack running at {result.endpoint} (pid {result.pid}); log: {result.log_file}")
        elif args.command == "down":
            print(down_report(settings).message)
        elif args.command == "reset":
            pass
        elif args.command == "faults":
            if args.action == "set" and not args.spec:
                parser.error("faults set needs FILE_OR_JSON")
            if args.action == "set":
                answer = set_faults(settings, args.spec)
            else:
                answer = get_faults(settings) if args.action == "show" else clear_faults(settings)
            print(json.dumps(answer, indent=2))
        else:
            current = status(settings)
            print(json.dumps(current.to_dict(), indent=2))
            return 0 if current.running else 3
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
