#!/usr/bin/env python3
"""ONNX Runtime session options measured side by side on one model, not guessed.

    python tools/bench_ort_options.py [--model planes_lite0] [--runs 300] [--rounds 5]
                                      [--batches 1,2,4] [--json OUT.json]

Each variant is one InferenceSession with the options below changed from the runtime's default
(engines/backends/onnxruntime_backend.py: 1 intra-op thread, sequential, ORT_ENABLE_ALL, no
spinning). Variants are interleaved in rounds (A B C ... A B C ...) so a noisy neighbour hits them
alike. Input: a standard-normal tensor of the model's shape (a per-image-standardised frame looks
like that). Per variant: p50 / p99 wall ms per call, thread-CPU ms per call (all ORT threads of
this process: process CPU time), and the p50 ratio to the default. `--batches` adds the default
session at batch N (ms per call and per frame): what cross-stream batching buys.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def variants():
    import onnxruntime as ort
    A = ort.GraphOptimizationLevel
    base = {"intra": 1, "inter": 1, "mode": "sequential", "level": A.ORT_ENABLE_ALL, "spin": "0",
            "arena": True, "mem_pattern": True}
    return [
        ("default (1 thread, all opts, no spin)", base),
        ("graph opt basic", {**base, "level": A.ORT_ENABLE_BASIC}),
        ("graph opt extended", {**base, "level": A.ORT_ENABLE_EXTENDED}),
        ("graph opt disabled", {**base, "level": A.ORT_DISABLE_ALL}),
        ("parallel execution mode", {**base, "mode": "parallel", "inter": 2}),
        ("2 intra-op threads, no spin", {**base, "intra": 2}),
        ("2 intra-op threads, spinning", {**base, "intra": 2, "spin": "1"}),
        ("no CPU memory arena", {**base, "arena": False}),
        ("no memory pattern", {**base, "mem_pattern": False}),
    ]


def make_session(path: str, v: dict):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = v["intra"]
    o.inter_op_num_threads = v["inter"]
    o.execution_mode = ort.ExecutionMode.ORT_PARALLEL if v["mode"] == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = v["level"]
    o.enable_cpu_mem_arena = v["arena"]
    o.enable_mem_pattern = v["mem_pattern"]
    o.add_session_config_entry("session.intra_op.allow_spinning", v["spin"])
    o.add_session_config_entry("session.inter_op.allow_spinning", v["spin"])
    return ort.InferenceSession(path, sess_options=o, providers=["CPUExecutionProvider"])


def timed_runs(sess, feed: dict, names: list[str], n: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        sess.run(names, feed)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


def main(argv=None) -> int:
    from engines.metadata import read_model_info
    from engines.zoo import resolve

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="shipped name or .onnx path (default: the default model)")
    ap.add_argument("--runs", type=int, default=200, help="calls per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,2,4", help="batch sizes for the default session ('' to skip)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    try:
        path = str(resolve(args.model))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = read_model_info(path)
    shape = (info.channels, info.height, info.width)
    rng = np.random.default_rng(0)
    names = [info.logits_output] + ([info.cam_output] if info.cam_output else [])
    vs = variants()
    sessions = [(name, make_session(path, v)) for name, v in vs]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    for b in batches:
        if b != 1:
            sessions.append((f"default, batch {b}", make_session(path, vs[0][1])))
    feeds = {}
    for name, _ in sessions:
        b = int(name.rsplit(" ", 1)[1]) if name.startswith("default, batch") else 1
        feeds[name] = {info.input_name: rng.standard_normal((b, *shape)).astype(np.float32)}
    for name, s in sessions:                      # warm-up
        timed_runs(s, feeds[name], names, 20)
    load0 = os.getloadavg()
    res = {name: ([], []) for name, _ in sessions}
    for _ in range(args.rounds):
        for name, s in sessions:
            w, c = timed_runs(s, feeds[name], names, args.runs)
            res[name][0].extend(w)
            res[name][1].extend(c)
    ref = float(np.percentile(res[sessions[0][0]][0], 50))
    print(f"model {info.model_id} ({path}), input {shape}, {args.rounds} rounds x {args.runs} calls; "
          f"load {' '.join(f'{x:.2f}' for x in load0)} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores")
    print("| variant | p50 ms | p99 ms | CPU ms/call | ms per frame | p50 ratio |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, _ in sessions:
        w, c = np.asarray(res[name][0]), np.asarray(res[name][1])
        b = feeds[name][info.input_name].shape[0]
        p50 = float(np.percentile(w, 50))
        row = {"variant": name, "batch": b, "p50": p50, "p99": float(np.percentile(w, 99)),
               "cpu_ms": float(c.mean()), "per_frame_ms": p50 / b, "ratio": p50 / ref}
        rows.append(row)
        print(f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['cpu_ms']:.2f} | "
              f"{row['per_frame_ms']:.2f} | {row['ratio']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": info.model_id, "rows": rows, "load": load0}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
