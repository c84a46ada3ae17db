"""Runtime inference backends behind one small interface.

    backend = create_backend("onnxruntime", "engines/zoo/sononet16.onnx", intra_op_threads=1)
    out = backend.infer(batch)          # batch: float32 NCHW, already preprocessed
    out.logits                          # (N, C) float32, pre-softmax
    out.cam                             # (N, C, h, w) class activation maps, or None
    out.open_set                        # (N,) open-set distance (engines/open_set.py), or None

Backends: "onnxruntime" (CPU default; CUDA/TensorRT execution providers when the installed
build offers them), "tensorrt" (native TensorRT engine; untested in this workplace), "torch"
(reference; imports torch lazily). Importing this package never imports torch or tensorrt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class InferenceOutput:
    logits: np.ndarray
    cam: np.ndarray | None = None
    open_set: np.ndarray | None = None   # models fitted by `python -m engines open-set` (ONNX Runtime)


class Backend(Protocol):
    name: str
    input_name: str

    def infer(self, batch: np.ndarray) -> InferenceOutput: ...

    def close(self) -> None: ...


class BackendUnavailable(RuntimeError):
    """The backend's library is not installed or cannot use the hardware here."""


BACKENDS = ("onnxruntime", "tensorrt", "torch")


def create_backend(name: str, model_path: str | Path, **options) -> Backend:
    if name in ("onnxruntime", "ort"):
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(model_path, **options)
    if name in ("tensorrt", "trt"):
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(model_path, **options)
    if name == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(model_path, **options)
    raise ValueError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
