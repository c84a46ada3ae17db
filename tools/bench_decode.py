#!/usr/bin/env python3
"""Decode cost of the capture process: PyAV threading modes and the colour conversion, measured.

    python tools/bench_decode.py VIDEO [--frames 300] [--rounds 2] [--pin CPUS] [--skip-loop-filter] [--json OUT.json]

The capture process (streamer/capture.py, streamer/sources.py) decodes with PyAV; YUV 4:2:0 video
goes into shared memory as the decoder's planes (the luma path, streamer/yuv.py), anything else is
converted to BGR first (before the luma path every frame was). Per variant, over the first --frames frames:
decode fps and CPU ms per frame (process CPU: FFmpeg's threads included), and the BGR conversion
alone (PyAV's `to_ndarray(format="bgr24")` through swscale, vs OpenCV's cvtColor from the YUV420p
planes), and decode + conversion together as the capture process does them (`--combined`): alone,
OpenCV's conversion is faster, but together with FFmpeg's decode threads on 2 busy cores it was
not (docs/latency.md), so the capture kept swscale; `--combined` also times the planes copy the
capture does now. Variants are interleaved in rounds. Frame threading decodes several frames at once:
more throughput, but each frame leaves the decoder (thread_count - 1) frames later: the "delay"
column counts it (the most packets fed in before their frame came out, minus one), and at native
rate each delayed frame is a frame period added before the capture even stamps the frame, a delay
capture->publish does not show. `--pin 0` runs the bench on one CPU as `sonoplane run
--cpu-affinity capture=0` runs the capture (FFmpeg's automatic thread count follows the mask).
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

VARIANTS = [("no threads", "NONE", 1), ("slice (default up to 1080p)", "SLICE", 0), ("frame, auto count", "FRAME", 0),
            ("auto (default above 1080p)", "AUTO", 0), ("frame, 2 threads", "FRAME", 2), ("slice+frame, 2", "AUTO", 2),
            ("slice, 2 threads", "SLICE", 2), ("frame, 3 threads", "FRAME", 3)]
# --skip-loop-filter (pixel-changing, opt-in: sonoplane run --skip-loop-filter): deblocking left out
SKIP_VARIANTS = [("no threads, skip_loop_filter noref", "NONE", 1, "noref"),
                 ("no threads, skip_loop_filter bidir", "NONE", 1, "bidir"),
                 ("no threads, skip_loop_filter all", "NONE", 1, "all"),
                 ("auto, skip_loop_filter all", "AUTO", 0, "all")]


def decode(video: str, thread_type: str, count: int, frames: int,
           skip_loop_filter: str | None = None) -> tuple[float, float, int, int]:
    """(wall s, process CPU s, frames, decoder delay in frames) over the first `frames` frames."""
    import av
    with av.open(video) as c:
        s = c.streams.video[0]
        s.thread_type = thread_type
        if count:
            s.codec_context.thread_count = count
        if skip_loop_filter:
            s.codec_context.options = {"skip_loop_filter": skip_loop_filter}
        n = fed = delay = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for packet in c.demux(s):
            if packet.size:
                fed += 1
            for _ in packet.decode():
                n += 1
                delay = max(delay, fed - n)
            if n >= frames:
                break
        return time.perf_counter() - t0, time.process_time() - c0, n, delay


def conversions(video: str, frames: int) -> dict[str, list[float]]:
    import av
    import cv2
    out = {"to_ndarray bgr24 (swscale)": [], "cvtColor I420->BGR (OpenCV)": []}
    with av.open(video) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for k, f in enumerate(c.decode(s)):
            if k >= frames:
                break
            t0 = time.perf_counter()
            f.to_ndarray(format="bgr24")
            out["to_ndarray bgr24 (swscale)"].append((time.perf_counter() - t0) * 1e3)
            if f.format.name == "yuv420p":
                t0 = time.perf_counter()
                yuv = f.to_ndarray()          # (h*3/2, w) planar I420, no conversion
                cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
                out["cvtColor I420->BGR (OpenCV)"].append((time.perf_counter() - t0) * 1e3)
    return out


def combined(video: str, frames: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Decode + hand-over per frame (wall ms, process CPU ms): the YUV planes copied as they are
    (what the capture does for YUV 4:2:0 since the luma path), swscale BGR, OpenCV 1/2 threads."""
    import av
    import cv2

    from streamer.sources import _yuv420_planes
    from streamer.yuv import i420_rows, write_planes

    def one(mode: str) -> tuple[float, float]:
        with av.open(video) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            t0, c0, n = time.perf_counter(), time.process_time(), 0
            slot = None
            for f in c.decode(s):
                if mode == "swscale":
                    f.to_ndarray(format="bgr24")
                elif mode == "planes":   # the luma path: the decoder's planes copied into a slot, no conversion
                    planes = _yuv420_planes(f)
                    if slot is None:
                        slot = np.empty((i420_rows(f.height), f.width), np.uint8)
                    write_planes(slot, f.height, f.width, planes)
                else:
                    cv2.cvtColor(f.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
                n += 1
                if n >= frames:
                    break
            return (time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3

    out: dict[str, list] = {}
    threads = cv2.getNumThreads()
    for _ in range(rounds):
        for name, mode, nt in (("decode + planes copied, no conversion (luma path, capture now)", "planes", threads),
                               ("decode + swscale bgr24", "swscale", threads),
                               (f"decode + cvtColor ({threads} OpenCV threads)", "cv2", threads),
                               ("decode + cvtColor (1 OpenCV thread)", "cv2", 1)):
            cv2.setNumThreads(nt)
            out.setdefault(name, []).append(one(mode))
    cv2.setNumThreads(threads)
    return {k: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--combined", action="store_true", help="also decode + conversion together")
    ap.add_argument("--skip-loop-filter", action="store_true",
                    help="also decode without the H.264 loop filter (noref / bidir / all frames; pixel-changing)")
    ap.add_argument("--pin", metavar="CPUS", help="run on these CPUs only (e.g. 0; as --cpu-affinity capture=0)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"error: video file not found: {args.video}", file=sys.stderr)
        return 2
    if args.pin:
        from engines.errors import UserError
        from streamer.affinity import parse_affinity, pin_process
        try:
            pin_process(parse_affinity(f"capture={args.pin}").capture)
        except UserError as exc:
            print(f"error: --pin: {exc}", file=sys.stderr)
            return 2
    import av
    with av.open(args.video) as c:
        s = c.streams.video[0]
        desc = f"{s.codec_context.name} {s.codec_context.width}x{s.codec_context.height} {s.codec_context.pix_fmt} " \
               f"{float(s.average_rate or 0):g} fps"
    print(f"{args.video}: {desc}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    variants = [(*v, None) for v in VARIANTS] + (SKIP_VARIANTS if args.skip_loop_filter else [])
    res = {name: [] for name, _, _, _ in variants}
    for _ in range(args.rounds):
        for name, tt, count, skip in variants:
            res[name].append(decode(args.video, tt, count, args.frames, skip))
    print(f"pinned to CPUs {sorted(os.sched_getaffinity(0))}" if args.pin else "not pinned")
    print("| decoder threading | decode fps | CPU ms per frame | decoder delay (frames) | fps ratio |")
    print("|---|---|---|---|---|")
    rows = []
    ref = None
    for name, _, _, _ in variants:
        wall = sum(r[0] for r in res[name])
        cpu = sum(r[1] for r in res[name])
        n = sum(r[2] for r in res[name])
        delay = max(r[3] for r in res[name])
        fps = n / wall
        ref = ref or fps
        rows.append({"variant": name, "fps": fps, "cpu_ms": 1e3 * cpu / n, "delay_frames": delay,
                     "ratio": fps / ref})
        print(f"| {name} | {fps:.1f} | {1e3 * cpu / n:.2f} | {delay} | {fps / ref:.2f} |")
    conv = conversions(args.video, min(args.frames, 120))
    print("\n| colour conversion | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, v in conv.items():
        if v:
            print(f"| {name} | {np.percentile(v, 50):.2f} | {np.percentile(v, 99):.2f} |")
    both = combined(args.video, min(args.frames, 150), args.rounds) if args.combined else {}
    if both:
        print("\n| decode + conversion (capture loop) | wall ms per frame | CPU ms per frame |")
        print("|---|---|---|")
        for name, (w, c) in both.items():
            print(f"| {name} | {w:.2f} | {c:.2f} |")
    print(f"load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"video": args.video, "decode": rows,
                                               "conversion": {k: v for k, v in conv.items()},
                                               "combined": both}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
