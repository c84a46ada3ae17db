#!/usr/bin/env python
"""ONNX Runtime CPU latency of plane models, side by side, plus the runtime's preprocessing cost.

    python tools/bench_models.py                       # every model in engines/zoo
    python tools/bench_models.py --models sononet16 planes_lite0 runs/sepcnn/model.onnx --iters 500

For each model and each thread count (default 1 and 2): p50 / p99 / p99.9 milliseconds per frame
(batch 1, one `session.run` per frame, after warm-up), and the ratio of p50 to sononet16's.
Preprocessing is engines.preprocess.Preprocessor on a 1080p-screen-sized crop (the live path).
The machine's load average is printed: on a shared CPU, figures taken under load are pessimistic.
No torch needed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "p99.9": float(np.percentile(a, 99.9)), "mean": float(a.mean())}


def bench_session(path: Path, threads: int, iters: int, warmup: int) -> dict:
    import onnxruntime as ort

    from engines.metadata import read_model_info
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    info = read_model_info(path, session=sess)
    x = np.random.default_rng(0).standard_normal((1, info.channels, info.height, info.width)).astype(np.float32)
    outputs = [info.logits_output] + ([info.cam_output] if info.cam_output else [])
    for _ in range(warmup):
        sess.run(outputs, {info.input_name: x})
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(outputs, {info.input_name: x})
        ms.append((time.perf_counter() - t) * 1e3)
    return {"input": f"{info.width}x{info.height}", "mb": path.stat().st_size / 1e6, **percentiles(ms)}


def bench_preprocess(path: Path, iters: int) -> dict:
    from engines.metadata import read_model_info
    from engines.preprocess import Preprocessor
    info = read_model_info(path)
    pre = Preprocessor(info)
    roi = np.random.default_rng(1).integers(0, 255, (860, 1150, 3), dtype=np.uint8)  # crop of a 1080p screen
    for _ in range(5):
        pre(roi)
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        pre(roi)
        ms.append((time.perf_counter() - t) * 1e3)
    return percentiles(ms)


def label(name: str) -> str:
    """Short row name: the zoo name, or the run folder for runs/NAME/model.onnx."""
    p = Path(name)
    return p.parent.name if p.stem == "model" else p.stem


def main(argv: list[str] | None = None) -> int:
    from engines.zoo import available, resolve
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="zoo names or .onnx paths (default: all in the zoo)")
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    names = args.models or available()
    try:
        paths = {n: resolve(n) for n in names}
    except FileNotFoundError as exc:
        print(f"bench_models: error: {exc}", file=sys.stderr)
        return 2
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; cpus: {os.cpu_count()}; "
          f"iters {args.iters} after {args.warmup} warm-up; batch 1")
    results: dict = {}
    # Interleave: thread count outer, models inner, so drifting background load hits all models alike.
    for t in args.threads:
        for n, p in paths.items():
            results.setdefault(n, {})[t] = bench_session(p, t, args.iters, args.warmup)
    base = next((n for n in results if Path(n).stem == "sononet16"), None)
    header = f"{'model':<28} {'input':>8} {'MB':>5} " + " ".join(
        f"{f'{t}T p50':>8} {f'{t}T p99':>8} {f'{t}T p99.9':>9} {f'{t}T x':>6}" for t in args.threads)
    print(header)
    for n, per in results.items():
        row = f"{label(n):<28} {per[args.threads[0]]['input']:>8} {per[args.threads[0]]['mb']:>5.1f} "
        cells = []
        for t in args.threads:
            r = per[t]
            ratio = r["p50"] / results[base][t]["p50"] if base else float("nan")
            cells.append(f"{r['p50']:>8.2f} {r['p99']:>8.2f} {r['p99.9']:>9.2f} {ratio:>6.2f}")
        print(row + " ".join(cells))
    print("(ms per frame, ONNX Runtime CPU; x = p50 relative to sononet16 at the same thread count)")
    pre = {}
    for n, p in paths.items():
        pre[n] = bench_preprocess(p, max(50, args.iters // 3))
        print(f"preprocess for {label(n):<22} (1150x860 BGR crop -> model input): "
              f"p50 {pre[n]['p50']:.2f} ms, p99 {pre[n]['p99']:.2f} ms")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"inference": results, "preprocess": pre,
                                               "loadavg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
