#!/usr/bin/env python3
"""Per-stage time of the real `sonoplane run` loop, finer than the `stages` of a result message.

    python tools/profile_stages.py VIDEO [--fast] [--max-frames N] [--no-frames] [--model NAME]
                                   [--json OUT.json] [-- extra sonoplane run args]

Runs the real Pipeline in this process (capture in its own process as usual) and wraps the
methods of its parts with timers: crop tracking, blank/frozen detection, preprocess, the model,
smoothing, the result message, the frames topic (resize + JPEG, or the hand-over to its worker),
the frames worker's preparation (colour conversion of the crop + redaction), and the whole
per-frame loop body; each as wall time and as this thread's CPU time (less
noisy on a shared machine). Parts that a version of
the pipeline lacks are left out. Prints p50 / p99 / mean ms per span and the share of frames
classified, and the CPU of the capture process (decode + conversion + copy into shared memory) per
delivered frame. Timers add ~1 us per call.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.commands.run import add_pipeline_arguments, pipeline_config  # noqa: E402
import streamer.pipeline as pipeline_module  # noqa: E402
from streamer.pipeline import Pipeline  # noqa: E402

# (span name, attribute path on the Pipeline, method name). Missing parts are skipped.
SPANS = [
    ("crop", "crop", "update"),
    ("image_state", "image_state", "update"),
    ("preprocess", "classifier", "preprocess"),
    ("model", "classifier.backend", "infer"),
    ("subplane model", "subplanes.backend", "infer"),   # --subplane-model (on its worker with --subplane-every)
    ("smooth", "smoother", "update"),
    ("result msg", "publisher", "result"),
    ("frames topic", "publisher", "frame"),
    ("frames worker", "publisher.frames", "send"),   # resize + JPEG + send on its own thread
]
# The frames worker's preparation (colour conversion of the crop + redaction, on its thread): the
# Pipeline method the worker calls, whichever a version has.
PREPARE_METHODS = ("frames_topic_image", "outgoing_image")


def _resolve(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


class _Timed:
    """Calls through to `inner` and records wall and thread-CPU ms; other attributes pass through."""

    def __init__(self, inner, wall: list, cpu: list):
        self._inner, self._wall, self._cpu = inner, wall, cpu

    def __call__(self, *a, **k):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self._inner(*a, **k)
        finally:
            self._wall.append((time.perf_counter() - t0) * 1e3)
            self._cpu.append((time.thread_time() - c0) * 1e3)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _wrap(owner, name: str, wall: list, cpu: list) -> None:
    setattr(owner, name, _Timed(getattr(owner, name), wall, cpu))


def profile(pipeline: Pipeline) -> tuple[dict, object]:
    spans: dict[str, list] = {}
    cpu: dict[str, list] = {}

    for span, path, method in SPANS:
        if not path.startswith("publisher"):
            owner = _resolve(pipeline, path)
            if owner is not None and callable(getattr(owner, method, None)):
                spans[span], cpu[span] = [], []
                _wrap(owner, method, spans[span], cpu[span])
    # The pipeline makes its Publisher in run(): wrap it as it is made.
    make_publisher = pipeline_module.Publisher

    def publisher_factory(*a, **k):
        pub = make_publisher(*a, **k)
        for span, path, method in SPANS:
            owner = _resolve(pub, path[len("publisher."):]) if path.startswith("publisher.") else \
                pub if path == "publisher" else None
            if owner is not None and callable(getattr(owner, method, None)):
                spans[span], cpu[span] = [], []
                _wrap(owner, method, spans[span], cpu[span])
        return pub
    pipeline_module.Publisher = publisher_factory
    for method in PREPARE_METHODS:
        if callable(getattr(pipeline, method, None)):
            spans["frames prepare"], cpu["frames prepare"] = [], []
            _wrap(pipeline, method, spans["frames prepare"], cpu["frames prepare"])
            break
    spans["loop body"], cpu["loop body"] = [], []
    _wrap(pipeline, "_process", spans["loop body"], cpu["loop body"])
    # The capture process is our only child: its CPU (decode, conversion, copy into shared memory)
    # is what RUSAGE_CHILDREN gains over the run (it is joined before run() returns).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = pipeline.run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary.capture_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spans, cpu, summary


def table(spans: dict, cpu: dict, warmup: int) -> list[dict]:
    rows = []
    for name, vals in spans.items():
        a = np.asarray(vals[warmup:] if len(vals) > warmup else vals, float)
        c = np.asarray(cpu[name][warmup:] if len(vals) > warmup else cpu[name], float)
        if a.size == 0:
            continue
        rows.append({"span": name, "n": int(a.size), "p50": float(np.percentile(a, 50)),
                     "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
                     "cpu_mean": float(c.mean()), "cpu_p50": float(np.percentile(c, 50))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--warmup", type=int, default=30, help="leave out the first N calls of each span")
    ap.add_argument("--json", help="write the table and run figures as JSON")
    add_pipeline_arguments(ap)
    args = ap.parse_args(argv)
    if args.publish == "tcp://127.0.0.1:5555":
        args.publish = "tcp://127.0.0.1:*"
    cfg = pipeline_config(args, args.video)
    spans, cpu, summary = profile(Pipeline(cfg, log=lambda *a, **k: None))
    rows = table(spans, cpu, args.warmup)
    pct = summary.percentiles()
    delivered = max(1, summary.frames_seen)
    print(f"{args.video}: {summary.classified} of {summary.frames_seen} frames classified "
          f"({100.0 * summary.classified / delivered:.2f} %), capture->publish p50 {pct.get('p50', 0):.1f} "
          f"p99 {pct.get('p99', 0):.1f} ms, {summary.cpu_s / max(summary.wall_s, 1e-9):.2f} cores")
    capture_ms = 1e3 * summary.capture_cpu_s / delivered
    main_ms = 1e3 * (summary.cpu_s - summary.capture_cpu_s) / max(1, summary.classified)
    print(f"capture process CPU {capture_ms:.2f} ms per delivered frame (decode + conversion + copy); "
          f"sonoplane process (all threads) {main_ms:.2f} ms per classified frame")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; wall = elapsed, CPU = this thread's CPU time")
    print(f"{'span':<14} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'CPU p50':>8} {'CPU mean':>8}")
    for r in rows:
        print(f"{r['span']:<14} {r['n']:>6} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['mean']:>8.2f} "
              f"{r['cpu_p50']:>8.2f} {r['cpu_mean']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "video": args.video, "rows": rows, "classified": summary.classified,
            "frames": summary.frames_seen, "latency": pct, "capture_cpu_ms_per_frame": capture_ms,
            "process_cpu_ms_per_classified": main_ms,
            "cores": summary.cpu_s / max(summary.wall_s, 1e-9)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
