"""`sonoplane` command line. Each subcommand lives in streamer/commands/<name>.py and exposes
`register(subparsers)` (adds its parser and sets `func`) so owners of one command never edit another.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from engines.errors import UserError

# Subcommand modules, in the order `sonoplane --help` lists them.
COMMANDS = ("demo", "run", "check", "overlay", "report", "classify", "models", "engine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sonoplane",
        description="Real-time fetal-ultrasound plane guidance: video in, stable plane label out.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"streamer.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("streamer.commands"):
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"sonoplane {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sonoplane {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
