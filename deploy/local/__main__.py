"""``python -m deploy.local up|down|status`` — manage the embedded local stack."""

from __future__ import annotations

import argparse
import json
import sys

from deploy.local import down, status, up
from helpers.core.errors import PipelineError
from helpers.pipeline.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "up":
            result = up(settings)
            print(f"local stack running at {result.endpoint} (pid {result.pid}); log: {result.log_file}")
        elif args.command == "down":
            stopped = down(settings)
            print("local stack stopped" if stopped else "local stack was not running")
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
