"""Export a torch model to ONNX with sonoplane metadata, and check ORT-vs-torch parity.

Every sonoplane model's forward returns (logits, cam); the ONNX file has input "image"
(N, C, H, W float32, dynamic batch) and outputs "logits" (N, classes) and "cam"
(N, classes, h, w). The metadata contract is engines/metadata.py.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metadata import METADATA_KEY, metadata_json


def export_onnx(model: torch.nn.Module, meta: dict[str, Any], path: str | Path,
                example_input: torch.Tensor, opset: int = 17, atol: float = 1e-3) -> Path:
    import onnx
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "outputs": {"logits": "logits", "cam": "cam"},
            "input": {**meta.get("input", {}), "name": "image"}}
    meta_text = metadata_json(meta)  # validates the contract before anything is written
    model = model.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        # The TorchScript exporter folds BatchNorm into the convolutions (eval mode,
        # constant folding) and gives a compact, fast graph for ONNX Runtime.
        torch.onnx.export(model, (example_input,), buf, input_names=["image"],
                          output_names=["logits", "cam"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "cam": {0: "batch"}},
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta_text
    proto.producer_name = "sonoplane"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    diff = onnx_torch_max_abs_diff(model, path, example_input)
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB); ORT vs torch max |logit diff| = {diff:.2e}")
    if diff > atol:
        raise RuntimeError(f"ORT/torch parity failed: max |diff| {diff:.3e} > {atol}")
    return path


def onnx_torch_max_abs_diff(model: torch.nn.Module, path: str | Path, example_input: torch.Tensor) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_input.detach().cpu().numpy().astype(np.float32)
    ort_logits, ort_cam = sess.run(["logits", "cam"], {"image": x})
    with torch.no_grad():
        t_logits, t_cam = model.eval()(example_input)
    return float(max(np.abs(ort_logits - t_logits.numpy()).max(), np.abs(ort_cam - t_cam.numpy()).max()))
