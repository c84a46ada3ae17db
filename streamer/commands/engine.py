"""`sonoplane engine build`: compile a TensorRT engine (untested here: no TensorRT in this workplace)."""
from __future__ import annotations

from engines.errors import UserError


def main(args) -> int:
    from engines.tensorrt_build import TensorRTUnavailable, build_engine
    from engines.zoo import resolve

    try:
        build_engine(resolve(args.model), args.precision, args.out, args.calib_cache, args.workspace_mb)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except TensorRTUnavailable as exc:
        raise UserError(str(exc)) from None
    return 0


def register(sub) -> None:
    p = sub.add_parser("engine", help="TensorRT engines (build)")
    esub = p.add_subparsers(dest="engine_command", required=True)
    b = esub.add_parser("build", help="build a TensorRT engine from a sonoplane ONNX model")
    b.add_argument("model", help="shipped model name or .onnx path")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    b.add_argument("--calib-cache", help="INT8 calibration cache (calibration/caches/...) for a non-QDQ model")
    b.add_argument("--workspace-mb", type=int, default=1024)
    b.add_argument("--out", default="engines/built", help="output folder")
    b.set_defaults(func=main)
