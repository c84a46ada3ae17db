"""Shipped models: `--model NAME` resolves to `engines/zoo/NAME.onnx` (model card: NAME.md).

Create-by-name in the spirit of timm's registry, for the runtime: names map to committed ONNX
files, paths are used as they are.
"""
from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent

# The live pipeline's default plane model and the brain anomaly model (None: not shipped).
DEFAULT_PLANE_MODEL = "planes_lite0"
DEFAULT_ANOMALY_MODEL: str | None = None


def available() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.onnx"))


def resolve(name_or_path: str | Path | None, default: str | None = DEFAULT_PLANE_MODEL) -> Path:
    """A zoo name or a file path -> an existing .onnx path; raises FileNotFoundError with the choices."""
    if name_or_path is None:
        if default is None:
            raise FileNotFoundError("no model given and no default")
        name_or_path = default
    p = Path(name_or_path)
    if p.suffix in (".onnx", ".engine", ".plan", ".pt") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
        return p
    candidate = ZOO_DIR / f"{name_or_path}.onnx"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"unknown model '{name_or_path}': not a file and not a shipped model "
        f"(shipped: {', '.join(available()) or 'none'})")
