#!/usr/bin/env python3
"""Does a SCHED_FIFO ONNX Runtime intra-op thread hog its core? Spinning on/off x FIFO on/off, paced.

    python tools/bench_ort_spinning.py [--model planes_lite0_128] [--threads 2] [--fps 60] [--n 90]
                                       [--caller-cpu 1] [--extra-cpu 0] [--priority 10]

As `sonoplane run --threads 2 --cpu-affinity auto --realtime-priority loop=N,model=N` runs the model:
the caller (the loop) on one CPU, ONNX Runtime's extra intra-op thread(s) on the other, one inference
per frame period (sleeping the rest of it, as the loop waits for the next frame). Per variant: the
extra threads' CPU per inference (/proc/self/task/TID/stat; their CPU between inferences included,
where a spinning thread burns it) and the caller's thread CPU. A FIFO thread that spins takes its
core from everything of normal priority there (the capture's decode with `auto` pinning).
Variants: session.intra_op.allow_spinning 0 (the runtime's setting, engines/backends) and 1, each
normal and FIFO. FIFO needs root / CAP_SYS_NICE: without it those variants are skipped (one line).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.errors import UserError  # noqa: E402
from runlib import proc_stat_cpu  # noqa: E402


def task_cpu_s(tid: int) -> float:
    got = proc_stat_cpu(f"/proc/self/task/{tid}/stat")
    if got is None:
        raise OSError(f"thread {tid} of this process is gone")
    return got[1]


def run_variant(path: str, threads: int, spin: str, fifo: int | None, args) -> dict:
    import onnxruntime as ort

    from engines.backends.onnxruntime_backend import session_options
    from streamer.affinity import process_threads
    from streamer.realtime import set_fifo, set_normal
    ort.set_default_logger_severity(3)             # the overwritten spinning entry warns otherwise
    home = os.sched_getaffinity(0)
    before = process_threads()
    opts = session_options(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    extra = sorted(process_threads() - before)     # the session's intra-op pool
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1, *inp.shape[1:]]).astype(np.float32)
    for tid in extra:
        os.sched_setaffinity(tid, {args.extra_cpu})
        if fifo:
            set_fifo(fifo, tid)
    os.sched_setaffinity(0, {args.caller_cpu})
    if fifo:
        set_fifo(fifo)
    try:
        for _ in range(5):                          # warm-up
            session.run(None, {inp.name: x})
        extra0 = {t: task_cpu_s(t) for t in extra}
        caller0, wall0 = time.thread_time(), time.monotonic()
        walls = []
        for _ in range(args.n):
            t0 = time.monotonic()
            session.run(None, {inp.name: x})
            walls.append((time.monotonic() - t0) * 1e3)
            time.sleep(max(0.0, 1 / args.fps - (time.monotonic() - t0)))
        wall_s = time.monotonic() - wall0
        extra_ms = 1e3 * sum(task_cpu_s(t) - extra0[t] for t in extra) / args.n
        caller_ms = 1e3 * (time.thread_time() - caller0) / args.n
    finally:
        if fifo:
            set_normal()
        os.sched_setaffinity(0, home)
    return {"extra_threads": len(extra), "extra_cpu_ms": extra_ms, "caller_cpu_ms": caller_ms,
            "extra_core_share": extra_ms * args.n / 1e3 / wall_s, "p50_ms": float(np.percentile(walls, 50)),
            "p99_ms": float(np.percentile(walls, 99))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="planes_lite0_128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--n", type=int, default=90, help="inferences per variant")
    ap.add_argument("--caller-cpu", type=int, default=1)
    ap.add_argument("--extra-cpu", type=int, default=0)
    ap.add_argument("--priority", type=int, default=10)
    args = ap.parse_args(argv)
    try:
        if args.threads < 2:
            raise UserError("--threads must be 2 or more (the extra intra-op threads are what is measured)")
        if args.n < 1 or args.fps <= 0:
            raise UserError("--n and --fps must be positive")
        allowed = os.sched_getaffinity(0)
        for name, cpu in (("--caller-cpu", args.caller_cpu), ("--extra-cpu", args.extra_cpu)):
            if cpu not in allowed:
                raise UserError(f"{name} {cpu}: not available here (this process may use {sorted(allowed)})")
        from engines.zoo import resolve
        from streamer.realtime import Realtime, check_permission
        try:
            path = str(resolve(args.model))
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
        fifo_ok = True
        try:
            check_permission(Realtime(loop=args.priority))
        except UserError as exc:
            print(f"FIFO variants skipped: {exc}", file=sys.stderr)
            fifo_ok = False
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.model}, {args.threads} intra-op threads, {args.n} inferences at {args.fps:g}/s, caller on CPU "
          f"{args.caller_cpu}, extra threads on CPU {args.extra_cpu}; load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| allow_spinning | extra threads | extra threads' CPU ms per inference | share of their core | "
          "caller CPU ms | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for spin in ("0", "1"):
        for fifo in (None, args.priority if fifo_ok else None) if fifo_ok else (None,):
            r = run_variant(path, args.threads, spin, fifo, args)
            print(f"| {spin} | {'FIFO ' + str(fifo) if fifo else 'normal'} | {r['extra_cpu_ms']:.2f} | "
                  f"{100 * r['extra_core_share']:.0f} % | {r['caller_cpu_ms']:.2f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
