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
delivered frame, and the capture hand-over's counters (frames skipped because the ring overwrote
them or because they were too old to catch up, frames taken behind a newer one). Timers add ~1 us per call.
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

from runlib import CLOCK_TICKS, proc_stat_cpu  # noqa: E402
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


def profile(pipeline: Pipeline, tail: "TailProbe | None" = None, warmup: int = 30) -> tuple[dict, dict, object]:
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
    if tail is not None:
        tail.attach(pipeline, spans, cpu)
    # Steady state: per-thread CPU and the capture process's CPU from the warmup-th frame on (the
    # capture's start-up, ~0.5 s of imports, and the first crop detection left out).
    sampler = ThreadCpuSampler()
    timed_process = pipeline._process
    steady: dict = {}

    def process(frame, cap, summary, recent):
        if summary.classified == warmup:
            sampler.mark()
            steady.update(frames=summary.frames_seen, classified=summary.classified,
                          capture_cpu=_pid_cpu(cap.proc.pid), capture_pid=cap.proc.pid)
        timed_process(frame, cap, summary, recent)
        if "capture_pid" in steady and cap.proc.pid == steady["capture_pid"]:
            # the last sample before the capture process ends (its CPU is gone once it exits)
            steady["capture_cpu_last"] = _pid_cpu(cap.proc.pid) if summary.classified % 30 == 0 \
                else steady.get("capture_cpu_last")
            steady["capture_frames_last"] = summary.frames_seen if summary.classified % 30 == 0 \
                else steady.get("capture_frames_last")
    pipeline._process = process
    # The capture process is our only child: its CPU (decode, conversion, copy into shared memory)
    # is what RUSAGE_CHILDREN gains over the run (it is joined before run() returns).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        summary = pipeline.run()
    finally:
        sampler.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary.capture_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary.thread_cpu = sampler.totals()
    summary.steady_classified = summary.classified - steady.get("classified", 0)
    if steady.get("capture_cpu_last") is not None and steady["capture_frames_last"] > steady["frames"]:
        summary.steady_capture_ms = 1e3 * (steady["capture_cpu_last"] - steady["capture_cpu"]) / \
            (steady["capture_frames_last"] - steady["frames"])
    return spans, cpu, summary


def _schedstat() -> tuple[int, int, int]:
    """This thread's (ns on CPU, ns waiting on a run queue, times run) from /proc/thread-self/schedstat."""
    with open("/proc/thread-self/schedstat") as f:
        on_cpu, run_delay, runs = f.read().split()
    return int(on_cpu), int(run_delay), int(runs)


# The spans that run on the loop thread, summed per frame by TailProbe.
LOOP_SPANS = ("crop", "image_state", "preprocess", "model", "smooth", "result msg", "frames topic")


class TailProbe:
    """--tail: where the time of each frame goes, to explain the frames that miss one frame period.

    Per frame: waiting (capture stamp -> the loop starts taking it from the slot: wake-up of the
    loop, or the previous frame's body still running), the slot copy, the loop body's wall time,
    its thread CPU, its run-queue delay (the kernel's schedstat: runnable but another thread had
    the CPU), the garbage collector's time inside it (gc.callbacks), and what is left (blocked:
    the GIL, ONNX Runtime waiting for its other intra-op thread, I/O). ~60 us per frame of reads."""

    def __init__(self):
        import gc
        self.gcs: list[tuple[float, float, int, int, int]] = []   # (start, end, generation, thread, collected)
        self._gc_start: dict[int, float] = {}
        self.frames: list[dict] = []
        self.takes: list[tuple[float, float]] = []
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        import threading
        tid = threading.get_native_id()
        if phase == "start":
            self._gc_start[tid] = time.monotonic()
        elif tid in self._gc_start:
            self.gcs.append((self._gc_start.pop(tid), time.monotonic(), info["generation"], tid,
                             info.get("collected", 0)))

    def attach(self, pipeline: Pipeline, spans: dict, cpu: dict) -> None:
        """spans / cpu: profile()'s per-call lists; the loop's spans are summed per frame."""
        import streamer.capture as capture_module
        probe = self
        take = capture_module.CaptureProcess._take

        def timed_take(cap):
            t0 = time.monotonic()
            frame = take(cap)
            if frame is not None:
                probe.takes.append((t0, time.monotonic()))
            return frame
        pipeline_module.CaptureProcess._take = timed_take
        process = pipeline._process

        def timed_process(frame, *a, **k):
            t_take = probe.takes[-1] if probe.takes else (None, None)
            loop_spans = [n for n in LOOP_SPANS if n in spans]   # the publisher's appear once run() made it
            n0 = {n: len(spans[n]) for n in loop_spans}
            t0, c0, s0 = time.monotonic(), time.thread_time(), _schedstat()
            try:
                return process(frame, *a, **k)
            finally:
                t1, c1, s1 = time.monotonic(), time.thread_time(), _schedstat()
                probe.frames.append({"t_cap": frame.t_capture_mono, "take": t_take, "start": t0, "end": t1,
                                     "cpu_ms": (c1 - c0) * 1e3, "run_delay_ms": (s1[1] - s0[1]) / 1e6,
                                     "runs": s1[2] - s0[2], "tid": __import__("threading").get_native_id(),
                                     "spans": {n: (sum(spans[n][n0[n]:]), sum(cpu[n][n0[n]:])) for n in loop_spans},
                                     # no model call: a blank frame (bench_live leaves those out too)
                                     "blank": "model" in n0 and len(spans["model"]) == n0["model"]})
                parts = probe.frames[-1]["spans"].values()
                probe.frames[-1]["spans"]["rest of the body"] = ((t1 - t0) * 1e3 - sum(w for w, _ in parts),
                                                                 (c1 - c0) * 1e3 - sum(c for _, c in parts))
        pipeline._process = timed_process

    def report(self, warmup: int, period_ms: float) -> dict:
        import gc
        gc.callbacks.remove(self._on_gc)
        rows = []
        blank = 0
        for f in self.frames[warmup:]:
            take0, take1 = f["take"]
            if take0 is None:
                continue
            if f["blank"]:
                blank += 1
                continue
            in_body = [(a, b) for a, b, _, tid, _ in self.gcs if tid == f["tid"] and a >= f["start"] and b <= f["end"]]
            gc_ms = sum(b - a for a, b in in_body) * 1e3
            body = (f["end"] - f["start"]) * 1e3
            rows.append({"total": (f["end"] - f["t_cap"]) * 1e3, "wait": (take0 - f["t_cap"]) * 1e3,
                         "copy": (take1 - take0) * 1e3, "gap": (f["start"] - take1) * 1e3, "body": body,
                         "cpu": f["cpu_ms"], "run_delay": f["run_delay_ms"], "gc": gc_ms, "gcs": len(in_body),
                         "blocked": max(0.0, body - f["cpu_ms"] - f["run_delay_ms"]), "runs": f["runs"],
                         "model": f["spans"].get("model", (0.0, 0.0))[0],
                         "model_cpu": f["spans"].get("model", (0.0, 0.0))[1], "spans": f["spans"]})
        gens = {}
        for a, b, gen, _, _ in self.gcs:
            gens.setdefault(gen, []).append((b - a) * 1e3)
        keys = ("total", "wait", "copy", "gap", "body", "cpu", "run_delay", "blocked", "gc", "gcs", "runs", "model",
                "model_cpu")
        slow = [r for r in rows if r["total"] > period_ms]
        summary = {"frames": len(rows), "blank_left_out": blank, "over_period": len(slow), "period_ms": period_ms,
                   "all_mean": {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in keys},
                   "slow_mean": {k: float(np.mean([r[k] for r in slow])) if slow else 0.0 for k in keys},
                   "all_p99": {k: float(np.percentile([r[k] for r in rows], 99)) if rows else 0.0 for k in keys},
                   "gc": {str(g): {"n": len(v), "mean_ms": float(np.mean(v)), "max_ms": float(np.max(v)),
                                   "total_ms": float(np.sum(v))} for g, v in sorted(gens.items())},
                   "gc_in_loop_body": int(sum(r["gcs"] for r in rows)),
                   "slow_with_gc": int(sum(1 for r in slow if r["gcs"]))}
        names = list(rows[-1]["spans"]) if rows else []
        for key, group in (("spans_all", rows), ("spans_slow", slow)):
            summary[key] = {n: {"wall": float(np.mean([r["spans"].get(n, (0.0, 0.0))[0] for r in group])) if group else 0.0,
                                "cpu": float(np.mean([r["spans"].get(n, (0.0, 0.0))[1] for r in group])) if group else 0.0}
                            for n in names}
        return summary


def print_tail(t: dict) -> None:
    print(f"\ntail: {t['over_period']} of {t['frames']} frames over {t['period_ms']:.1f} ms capture->loop end "
          f"({t['blank_left_out']} blank frames left out)")
    print(f"{'ms per frame':<22} " + " ".join(f"{k:>9}" for k in t["all_mean"]))
    for name, key in (("mean, all frames", "all_mean"), ("p99, all frames", "all_p99"),
                      ("mean, frames over", "slow_mean")):
        print(f"{name:<22} " + " ".join(f"{v:>9.2f}" for v in t[key].values()))
    print("(wait: capture stamp -> the loop takes the frame; copy: slot copy; gap: take -> body; blocked: body wall "
          "- CPU - run-queue delay; gcs, runs: counts; model, model_cpu: the plane model's wall and thread CPU)")
    if t.get("spans_all"):
        print(f"{'loop span, mean ms':<22} {'all: wall':>10} {'all: CPU':>9} {'over: wall':>11} {'over: CPU':>10}")
        for n, a in t["spans_all"].items():
            o = t["spans_slow"][n]
            print(f"{n:<22} {a['wall']:>10.2f} {a['cpu']:>9.2f} {o['wall']:>11.2f} {o['cpu']:>10.2f}")
    for gen, g in t["gc"].items():
        print(f"gc generation {gen}: {g['n']} collections (all threads), mean {g['mean_ms']:.2f} ms, "
              f"max {g['max_ms']:.2f} ms, total {g['total_ms']:.1f} ms")
    print(f"gc inside loop bodies: {t['gc_in_loop_body']}; frames over the period with a gc in their body: "
          f"{t['slow_with_gc']}")


def _pid_cpu(pid: int) -> float | None:
    """User + system CPU s of a whole process (all its threads) while it runs (Linux /proc)."""
    got = proc_stat_cpu(f"/proc/{pid}/stat")
    return None if got is None else got[1]


def _task_cpu(tid: int) -> tuple[str, float] | None:
    """(kernel thread name, user + system CPU s) of one of this process's threads (Linux /proc)."""
    return proc_stat_cpu(f"/proc/self/task/{tid}/stat")


class ThreadCpuSampler:
    """CPU of every thread of this process over the run, by role: Python threads by their name,
    the others (ONNX Runtime's pools, ZeroMQ's I/O thread) by their kernel name. Threads that end
    during the run keep their last sample (every SAMPLE_S); the figures are deltas over the run."""
    SAMPLE_S = 0.25

    def __init__(self):
        import threading
        self._threading = threading
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="profile-sampler", daemon=True)
        self._thread.start()

    def mark(self) -> None:
        """Count from now on (threads that start later count from zero)."""
        self._sample(first=True, reset=True)

    def _sample(self, first: bool = False, reset: bool = False) -> None:
        for t in self._threading.enumerate():
            if t.native_id is not None:
                self._names[t.native_id] = t.name
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return
        for tid in tids:
            got = _task_cpu(tid)
            if got is None:
                continue
            if tid not in self._start or reset:
                self._start[tid] = got[1] if first else 0.0
            self._last[tid] = got

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self._sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def totals(self) -> dict[str, float]:
        """CPU s over the run per role (threads of the same role summed)."""
        out: dict[str, float] = {}
        for tid, (comm, cpu) in self._last.items():
            name = self._names.get(tid, comm)
            if tid == os.getpid():
                name = "main (the loop)"
            name = name.rstrip("0123456789_").rstrip("-_") or name   # one row per pool
            out[name] = out.get(name, 0.0) + cpu - self._start.get(tid, 0.0)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


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


def record_handover() -> dict:
    """The capture's hand-over counters (streamer/capture.py ring), read when the run closes it;
    empty for a version of the pipeline without the ring."""
    handover: dict = {}
    cls = pipeline_module.CaptureProcess
    close = cls.close

    def recording_close(cap):
        handover.update({k: getattr(cap, k) for k in ("slots", "skipped_total", "skipped_overwritten",
                                                      "skipped_passed_over", "caught_up") if hasattr(cap, k)})
        close(cap)
    cls.close = recording_close
    return handover


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--warmup", type=int, default=30, help="leave out the first N calls of each span")
    ap.add_argument("--json", help="write the table and run figures as JSON")
    ap.add_argument("--tail", action="store_true",
                    help="also break each frame's capture->loop-end time into wait / copy / body (CPU, "
                         "run-queue delay, GC, blocked) and list the garbage collections (TailProbe)")
    ap.add_argument("--period-ms", type=float, default=1000 / 60, help="with --tail: the frame period (60 fps)")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="sys.setswitchinterval for the run: how long a thread waiting for the GIL lets the "
                         "holder run before asking it to drop the GIL (Python's default 5 ms)")
    ap.add_argument("--gc", choices=("default", "freeze", "off"), default="default",
                    help="the garbage collector during the run: as is, gc.freeze() after the models load "
                         "(what exists then is never scanned again), or disabled (to measure its share)")
    add_pipeline_arguments(ap)
    args = ap.parse_args(argv)
    if args.publish == "tcp://127.0.0.1:5555":
        args.publish = "tcp://127.0.0.1:*"
    cfg = pipeline_config(args, args.video)
    pipeline = Pipeline(cfg, log=lambda *a, **k: None)
    import gc
    if args.gc == "freeze":
        gc.collect()
        gc.freeze()
    elif args.gc == "off":
        gc.disable()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    tail = TailProbe() if args.tail else None
    handover = record_handover()
    spans, cpu, summary = profile(pipeline, tail, args.warmup)
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
    threads = getattr(summary, "thread_cpu", {})
    steady_n = max(1, getattr(summary, "steady_classified", summary.classified))
    steady_capture = getattr(summary, "steady_capture_ms", None)
    if threads:
        print(f"steady state (after the first {args.warmup} classified frames): sonoplane process "
              f"{sum(threads.values()) * 1e3 / steady_n:.2f} ms per classified frame"
              + (f", capture process {steady_capture:.2f} ms per delivered frame" if steady_capture else ""))
        print("  per thread (ms per classified frame; /proc ticks of "
              f"{1e3 / CLOCK_TICKS:.0f} ms): " + ", ".join(
                  f"{name} {1e3 * cpu / steady_n:.2f}" for name, cpu in threads.items()))
    if "caught_up" in handover:
        print(f"capture hand-over ({handover['slots']} slots): {handover['skipped_total']} frames skipped "
              f"({handover['skipped_overwritten']} overwritten in the ring before the loop was free, "
              f"{handover['skipped_passed_over']} passed over as too old for the catch-up budget), "
              f"{handover['caught_up']} taken behind a newer one")
    tail_summary = tail.report(args.warmup, args.period_ms) if tail is not None else None
    if tail_summary is not None:
        print_tail(tail_summary)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "video": args.video, "rows": rows, "tail": tail_summary, "classified": summary.classified,
            "frames": summary.frames_seen, "latency": pct, "capture_cpu_ms_per_frame": capture_ms,
            "process_cpu_ms_per_classified": main_ms,
            "steady_thread_cpu_ms_per_classified": {k: 1e3 * v / steady_n for k, v in threads.items()},
            "steady_capture_cpu_ms_per_frame": steady_capture,
            "cores": summary.cpu_s / max(summary.wall_s, 1e-9), "handover": handover}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
