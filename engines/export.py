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
                example_input: torch.Tensor, opset: int = 17, atol: float = 1e-3,
                fp16_weights: bool = False) -> Path:
    """fp16_weights: store large weight tensors as float16 + a Cast to float32 (see store_weights_fp16):
    half the file size, same float32 compute; parity tolerance becomes 2e-2 (weight rounding)."""
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
    if fp16_weights:
        store_weights_fp16(proto)
        atol = max(atol, 2e-2)
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


def store_weights_fp16(proto, min_elements: int = 1024) -> int:
    """Rewrite float32 initializers of at least `min_elements` as float16 followed by Cast(to=float).

    Keeps model files small (a few MB) without fp16 arithmetic: ONNX Runtime constant-folds the
    Casts when the session is created, so inference runs on float32 weights exactly as before,
    only rounded to fp16 precision (relative error <= 2^-11). Returns the number rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts, rewritten = [], 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + "__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT,
                                      name=name + "__cast"))
        rewritten += 1
    for node in reversed(casts):   # Casts first: the graph stays topologically sorted
        graph.node.insert(0, node)
    return rewritten
