"""Entry point of the `meshlab` command.

Each sub-command lives in its own module under :mod:`meshlab.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status. Errors meant for a person
(:class:`meshlab.errors.MeshlabError`) are printed on stderr with exit status 2; Ctrl-C ends
with 130, as shells expect; a reader that goes away (``meshlab rules | head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from meshlab.errors import MeshlabError

SUBCOMMANDS = ("rules", "trace", "inject", "walk", "live")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlab",
        description="See, trace and prove how an Istio sidecar captures a pod's traffic.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"meshlab.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MeshlabError as error:
        print(f"meshlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meshlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader closed the pipe: stop writing, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
