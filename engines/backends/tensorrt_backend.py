"""TensorRT backend: runs an engine built by `sonoplane engine build`.

UNTESTED IN THIS WORKPLACE (no TensorRT libraries can be installed here). Written against the
TensorRT 10 Python API (Runtime.deserialize_cuda_engine, the tensor-address API and
execute_async_v3); device memory and the stream come from torch.cuda, present on GPU boxes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..metadata import ModelFileError, info_from_dict
from ..tensorrt_build import TensorRTUnavailable, engine_key, gpu_identity, import_tensorrt
from . import BackendUnavailable, InferenceOutput


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, model_path: str | Path, **_):
        path = Path(model_path)
        sidecar_path = Path(str(path) + ".json")
        if path.suffix not in (".engine", ".plan") or not sidecar_path.is_file():
            raise ModelFileError(f"{path}: the tensorrt backend needs an engine built by "
                                 f"`sonoplane engine build` (with its .engine.json sidecar)")
        try:
            trt = import_tensorrt()
            import torch
            gpu, cap = gpu_identity()
        except (TensorRTUnavailable, ImportError) as exc:
            raise BackendUnavailable(str(exc)) from None
        side = json.loads(sidecar_path.read_text())
        key = engine_key(side["metadata"]["model_id"], gpu, tuple(cap), trt.__version__, side["precision"],
                         side["onnx_sha256"], side.get("calibration_sha256"))
        if key != side["key"]:
            raise ModelFileError(f"{path} was built for {side['key']}, this machine is {key}: rebuild it "
                                 f"with `sonoplane engine build`")
        self.info = info_from_dict(side["metadata"], path, side["onnx_sha256"])
        self.input_name = self.info.input_name
        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.outputs = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
                        if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda(non_blocking=True)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, out[name].data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        cam = out.get(self.info.cam_output) if self.info.cam_output else None
        return InferenceOutput(out[self.info.logits_output].cpu().numpy(),
                               None if cam is None else cam.cpu().numpy())

    def close(self) -> None:
        self.context = self.engine = None
