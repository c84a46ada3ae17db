"""`python -m engines COMMAND`: training-side tools (need torch; the runtime `sonoplane` never imports this).

    python -m engines train     --model efficientnet_lite0 --data ../shared/data/fetal_planes --out runs/lite0
    python -m engines evaluate  --model runs/lite0 | PATH.onnx --out docs/models/NAME/
    python -m engines export    --run runs/lite0 --out engines/zoo/planes_lite0.onnx
    python -m engines bench     (ORT CPU latency of the shipped models: tools/bench_models.py)
    python -m engines open-set  --model engines/zoo/planes_lite0.onnx   (fit open-set rejection into it)

Each command lives in a module with `register(subparsers)` that adds its parser and sets `func`
(as streamer/cli.py does). To add a command, add one entry to COMMANDS: "module" (uses its
`register`) or "module:function" (a register function with another name).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: tuple[str, ...] = (
    "engines.train",
    "engines.evaluate",
    "engines.train:register_export",
    "engines.train:register_bench",
    "engines.open_set",           # open-set rejection fit (writes into the ONNX file)
    "engines.anomaly",            # the anomaly engineer's command (skipped while not present)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for entry in COMMANDS:
        module_name, _, func_name = entry.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue   # command not written yet in this checkout
            raise
        getattr(module, func_name or "register")(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engines.errors import UserError
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"engines {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"engines {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
