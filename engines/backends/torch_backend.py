"""torch backend: the reference implementation of a shipped model, in eager torch.

The model family comes from the ONNX metadata (`training.family`, else the model id) and its
weights from a `.pt` checkpoint beside the ONNX file (`{"state_dict", "kwargs"}`), or, for
`sononet16`, from the authors' npz (needs ../shared). On CUDA it runs in fp16 with a captured CUDA graph for batch 1. The CUDA path is
UNTESTED in this session (no GPU was lent to it); CPU parity with ONNX Runtime is tested.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import ModelFileError, read_model_info
from . import BackendUnavailable, InferenceOutput


class TorchBackend:
    name = "torch"

    def __init__(self, model_path: str | Path, device: str = "cpu", fp16: bool | None = None,
                 cuda_graph: bool = True, intra_op_threads: int = 1, **_):
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("torch is not installed (pip install torch==2.13.0)") from None
        self.torch = torch
        self.info = read_model_info(model_path)
        self.input_name = self.info.input_name
        family = (self.info.extra.get("training") or {}).get("family") or self.info.model_id
        ckpt = Path(str(model_path)).with_suffix(".pt")
        from ..models import create_model
        if ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            model = create_model(family, **state.get("kwargs", {}))
            model.load_state_dict(state["state_dict"])
        elif family == "sononet16":
            model = create_model("sononet16", pretrained=True)   # from the authors' npz
        else:
            raise ModelFileError(f"{model_path}: no torch checkpoint ({ckpt.name}) beside it")
        torch.set_num_threads(max(1, intra_op_threads))
        self.device = torch.device(device)
        self.fp16 = (self.device.type == "cuda") if fp16 is None else fp16
        self.model = model.eval().to(self.device)
        if self.fp16:
            self.model = self.model.half()
        self.graph = None
        if self.device.type == "cuda" and cuda_graph:
            self._capture_graph()

    def _capture_graph(self) -> None:
        torch = self.torch
        shape = (1, self.info.channels, self.info.height, self.info.width)
        dtype = torch.float16 if self.fp16 else torch.float32
        self.static_in = torch.zeros(shape, device=self.device, dtype=dtype)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):                       # warm-up before capture, as CUDA graphs need
                self.model(self.static_in)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_out = self.model(self.static_in)

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        if self.fp16:
            x = x.half()
        with torch.no_grad():
            if self.graph is not None and x.shape == self.static_in.shape:
                self.static_in.copy_(x)
                self.graph.replay()
                logits, cam = self.static_out
            else:
                logits, cam = self.model(x)
        return InferenceOutput(logits.float().cpu().numpy(), cam.float().cpu().numpy())

    def close(self) -> None:
        self.model = self.graph = None
