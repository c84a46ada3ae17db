"""INT8 by explicit quantization: representative frames -> QDQ ONNX (onnxruntime.quantization),
plus the calibration table TensorRT can read.

    python -m calibration.int8 engines/zoo/sononet16.onnx --frames DIR_OR_VIDEO [--method entropy]
           [--out sononet16.int8.onnx] [--compare-frames DIR_OR_VIDEO]

Frames are preprocessed exactly as the runtime does (engines.crop + engines.preprocess), so the
ranges are those the model sees live. The sonoplane metadata is copied into the QDQ model with
`precision: int8` and the calibration method. The TensorRT-format cache and a JSON of the ranges
go to calibration/caches/. Prints INT8 vs FP32 top-1 agreement and latency side by side.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from engines.metadata import METADATA_KEY, read_model_info
from engines.crop import CropTracker
from engines.preprocess import Preprocessor

CACHE_DIR = Path(__file__).resolve().parent / "caches"


def load_frames(source: str, limit: int) -> list[np.ndarray]:
    p = Path(source)
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.suffix.lower() in (".png", ".jpg", ".jpeg"))
        return [cv2.imread(str(f)) for f in files[:limit]]
    import av
    with av.open(str(p)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    step = max(1, len(frames) // limit)
    return frames[::step][:limit]


def preprocess_all(info, frames) -> list[np.ndarray]:
    pre = Preprocessor(info)
    out = []
    for f in frames:
        tracker = CropTracker(info.crop_preset or "auto")
        out.append(pre(tracker.update(f).apply(f)))
    return out


def _reader(batches: list[np.ndarray], input_name: str):
    """The preprocessed frames as an onnxruntime CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    return Reader()


def quantize(model: Path, batches: list[np.ndarray], out: Path, method: str) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info = read_model_info(model)

    prepped = out.with_suffix(".prep.onnx")
    quant_pre_process(str(model), str(prepped))
    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
               "minmax": CalibrationMethod.MinMax}
    quantize_static(str(prepped), str(out), _reader(batches, info.input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method])
    prepped.unlink()
    q = onnx.load(str(out))
    meta = json.loads(next(p.value for p in onnx.load(str(model)).metadata_props if p.key == METADATA_KEY))
    meta["precision"] = "int8"
    meta["calibration"] = {"method": method, "frames": len(batches), "fp32_sha256": info.sha256}
    del q.metadata_props[:]
    e = q.metadata_props.add()
    e.key, e.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    onnx.save(q, str(out))
    return out


def write_tensorrt_cache(model: Path, batches: list[np.ndarray], method: str, name: str) -> Path:
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, write_calibration_table

    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
               "minmax": CalibrationMethod.MinMax}
    info = read_model_info(model)
    import tempfile
    # ORT writes an augmented copy of the model; keep it out of the working directory.
    augmented = Path(tempfile.mkdtemp()) / "augmented_model.onnx"
    calibrator = create_calibrator(str(model), augmented_model_path=str(augmented),
                                   calibrate_method=methods[method])
    calibrator.collect_data(_reader(batches, info.input_name))
    ranges = calibrator.compute_data()
    CACHE_DIR.mkdir(exist_ok=True)
    table = {k: (float(v.range_value[0]), float(v.range_value[1])) if hasattr(v, "range_value") else
             (float(v[0]), float(v[1])) for k, v in ranges.items()}
    # ORT writes calibration.flatbuffers / calibration.cache / calibration.json in the cwd dir given.
    out_dir = CACHE_DIR / f"{name}.{method}"
    out_dir.mkdir(exist_ok=True)
    write_calibration_table(ranges, dir=str(out_dir))
    (out_dir / "ranges.json").write_text(json.dumps(table, indent=1))
    return out_dir


def compare(fp32: Path, int8: Path, batches: list[np.ndarray]) -> dict:
    from engines.backends import create_backend

    a, b = create_backend("onnxruntime", fp32), create_backend("onnxruntime", int8)
    agree, ta, tb = 0, [], []
    for x in batches:
        t0 = time.perf_counter()
        la = a.infer(x).logits
        t1 = time.perf_counter()
        lb = b.infer(x).logits
        t2 = time.perf_counter()
        agree += int(la.argmax() == lb.argmax())
        ta.append((t1 - t0) * 1e3)
        tb.append((t2 - t1) * 1e3)
    return {"frames": len(batches), "top1_agreement": agree / len(batches),
            "fp32_ms_p50": float(np.percentile(ta, 50)), "int8_ms_p50": float(np.percentile(tb, 50)),
            "fp32_size_mb": fp32.stat().st_size / 1e6, "int8_size_mb": int8.stat().st_size / 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--frames", required=True, help="folder of images or a video: representative frames")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare-frames", help="held-out frames for INT8 vs FP32 (default: --frames)")
    args = ap.parse_args(argv)
    info = read_model_info(args.model)
    batches = preprocess_all(info, load_frames(args.frames, args.count))
    out = args.out or args.model.with_name(f"{args.model.stem}.int8.onnx")
    quantize(args.model, batches, out, args.method)
    cache = write_tensorrt_cache(args.model, batches, args.method, info.model_id)
    held = preprocess_all(info, load_frames(args.compare_frames or args.frames, args.count))
    print(json.dumps({"int8_model": str(out), "tensorrt_cache": str(cache), **compare(args.model, out, held)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
