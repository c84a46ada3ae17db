"""ONNX Runtime backend: the embedded CPU default."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import ModelFileError, ModelInfo, read_model_info
from . import InferenceOutput


def validate_session(session, info: ModelInfo, model_path) -> None:
    """The graph must match its metadata: input name and shape, logits output of one value per
    label. Checked at load with one dry run (dynamic dimensions are only known by running), so a
    wrong model is refused with one line instead of failing at the first frame."""
    name = Path(model_path).name
    inputs = {i.name: i for i in session.get_inputs()}
    if info.input_name not in inputs:
        raise ModelFileError(f"{name}: metadata names input '{info.input_name}' but the graph's inputs are "
                             f"{', '.join(inputs) or 'none'}")
    expected = (info.channels, info.height, info.width)
    shape = list(inputs[info.input_name].shape)
    if len(shape) != 4:
        raise ModelFileError(f"{name}: input '{info.input_name}' has {len(shape)} dimensions, expected 4 (N, C, H, W)")
    for dim, want, what in zip(shape[1:], expected, ("channels", "height", "width")):
        if isinstance(dim, int) and dim != want:
            raise ModelFileError(f"{name}: input {what} is {dim} in the graph but {want} in its metadata")
    outputs = [o.name for o in session.get_outputs()]
    if info.logits_output not in outputs:
        raise ModelFileError(f"{name}: metadata names output '{info.logits_output}' but the graph's outputs are "
                             f"{', '.join(outputs) or 'none'}")
    try:
        logits = session.run([info.logits_output],
                             {info.input_name: np.zeros((1, *expected), np.float32)})[0]
    except Exception as exc:
        raise ModelFileError(f"{name}: a {info.channels}x{info.height}x{info.width} input does not run "
                             f"({str(exc).splitlines()[0]})") from None
    if logits.ndim != 2 or logits.shape[1] != len(info.labels):
        raise ModelFileError(f"{name}: outputs {logits.shape[-1] if logits.ndim else 0} classes "
                             f"(shape {list(logits.shape)}) but its metadata lists {len(info.labels)} labels")


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1):
    """The runtime's ONNX Runtime session options; evaluation, open-set fits and ONNX teachers use the
    same ones, so what they measure is what the runtime runs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Capture, preprocessing and publishing share a 2-core box with inference:
    # oversubscribing the cores halves throughput, so thread counts are explicit.
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = int(inter_op_threads)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the core the capture process needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def cpu_session(model: str | Path | bytes, threads: int = 1):
    """An ONNX Runtime CPU session of a model file (or serialized bytes) with the runtime's options,
    for offline tools (evaluate, open-set, distillation teachers) that need no metadata checks."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_path: str | Path, intra_op_threads: int = 1,
                 inter_op_threads: int = 1, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = session_options(intra_op_threads, inter_op_threads)
        if providers is None:
            providers = ["CPUExecutionProvider"]
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise ModelFileError(
                f"onnxruntime here lacks {', '.join(missing)} (available: {', '.join(sorted(available))})")
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelFileError(
                f"{model_path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from exc
        self.info: ModelInfo = read_model_info(model_path, session=self.session)
        self.input_name = self.info.input_name
        validate_session(self.session, self.info, model_path)
        outputs = {o.name for o in self.session.get_outputs()}
        self._names = [self.info.logits_output]
        self._cam = bool(self.info.cam_output and self.info.cam_output in outputs)
        if self._cam:
            self._names.append(self.info.cam_output)
        self.open_set_output = self.info.open_set_output if self.info.open_set_output in outputs else None
        if self.open_set_output:
            self._names.append(self.open_set_output)

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        res = self.session.run(self._names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return InferenceOutput(logits=res[0], cam=res[1] if self._cam else None,
                               open_set=res[-1] if self.open_set_output else None)

    def close(self) -> None:
        self.session = None
