"""Build TensorRT engines from sonoplane ONNX models (an explicit step, never on the first frame).

UNTESTED IN THIS WORKPLACE: TensorRT's libraries cannot be installed here (PyPI holds only
placeholders that download from NVIDIA; the GPU machines lent here lack them). The code follows
the documented TensorRT 10 Python API (Builder, OnnxParser, BuilderConfig, IProgressMonitor,
optimisation profiles, build_serialized_network) and is guarded: without `tensorrt` it stops
with a one-line message.

Engine files are keyed so a wrong one is never loaded silently:
    <model_id>.<gpu>.sm<major><minor>.trt<version>.<precision>.<onnx sha12>[.<calib sha12>].engine
with a JSON sidecar (`.engine.json`) holding the key and the model's sonoplane metadata.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTUnavailable(RuntimeError):
    pass


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed here (pip install tensorrt needs NVIDIA's "
                                  "index and a CUDA GPU); use --backend onnxruntime") from None
    return trt


def engine_key(model_id: str, gpu_name: str, capability: tuple[int, int], trt_version: str,
               precision: str, onnx_sha256: str, calib_sha256: str | None = None) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    parts = [model_id, gpu, f"sm{capability[0]}{capability[1]}", f"trt{trt_version}", precision, onnx_sha256[:12]]
    if calib_sha256:
        parts.append(calib_sha256[:12])
    return ".".join(parts)


def gpu_identity() -> tuple[str, tuple[int, int]]:
    """GPU name and compute capability, through torch.cuda (present on GPU boxes) or cuda-python."""
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    except ImportError:
        pass
    raise TensorRTUnavailable("no CUDA GPU visible (torch.cuda.is_available() is False)")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_engine(onnx_path: str | Path, precision: str = "fp16", out_dir: str | Path = "engines/built",
                 calib_cache: str | Path | None = None, workspace_mb: int = 1024, max_batch: int = 4,
                 log=print) -> Path:
    trt = import_tensorrt()
    from .metadata import read_model_info

    onnx_path = Path(onnx_path)
    info = read_model_info(onnx_path)
    gpu, cap = gpu_identity()
    calib_sha = _sha(Path(calib_cache)) if calib_cache else None
    key = engine_key(info.model_id, gpu, cap, trt.__version__, precision, info.sha256, calib_sha)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine_path = out_dir / f"{key}.engine"

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)            # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)       # layers without INT8 kernels fall back to FP16
        if calib_cache:                              # implicit quantization from a calibration cache
            config.int8_calibrator = CacheCalibrator(Path(calib_cache), trt)
        # else: a QDQ ONNX (calibration/int8.py) carries explicit scales.
    shape = (info.channels, info.height, info.width)
    profile = builder.create_optimization_profile()
    profile.set_shape(info.input_name, (1, *shape), (1, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, log)
    log(f"building {precision} engine for {info.model_id} on {gpu} (sm{cap[0]}{cap[1]}, TensorRT {trt.__version__})")
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT build failed (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    sidecar = {"key": key, "gpu": gpu, "capability": list(cap), "tensorrt": trt.__version__,
               "precision": precision, "onnx": str(onnx_path), "onnx_sha256": info.sha256,
               "calibration_sha256": calib_sha, "build_s": round(time.monotonic() - t0, 1),
               "metadata": json.loads(_metadata_text(onnx_path))}
    Path(str(engine_path) + ".json").write_text(json.dumps(sidecar, indent=1))
    log(f"wrote {engine_path} in {sidecar['build_s']} s")
    return engine_path


def _metadata_text(onnx_path: Path) -> str:
    import onnxruntime as ort
    from .metadata import METADATA_KEY
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.get_modelmeta().custom_metadata_map[METADATA_KEY]


def _progress_monitor(trt, log):
    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            log(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True                              # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return Progress()


class CacheCalibrator:
    """An IInt8EntropyCalibrator2 that only replays a calibration cache (calibration/caches/)."""

    def __new__(cls, cache: Path, trt):
        class _Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                return None                          # no data: the cache has every scale

            def read_calibration_cache(self):
                return cache.read_bytes()

            def write_calibration_cache(self, data):
                pass

        return _Calibrator()
