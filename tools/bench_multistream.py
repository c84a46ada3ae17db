#!/usr/bin/env python3
"""Many streams on one box: N sources in ONE `sonoplane run` (one model session, cross-stream
batching) side by side with N separate `sonoplane run` processes (one session each).

    python tools/bench_multistream.py VIDEO [--streams 1,2,4] [--layouts shared,separate]
                                      [--max-frames N] [--frames] [--json OUT.json] [-- extra run args]

Every stream plays VIDEO at its native rate (each its own capture process, as N scanners would
feed it). Per N and layout: per-stream classified fps and % of frames classified, capture->publish
p50 / p99 over all streams (after each stream's warm-up; blank frames left out), CPU cores of the
whole process tree and per stream, and the session's batch sizes (shared layout). The frames topic
is off unless --frames. Layouts are interleaved per N so a noisy neighbour hits both alike.
`--pin-each` (separate layout): stream k's process runs wholly on CPU k mod the CPU count
(`--cpu-affinity capture=K,loop=K,model=K,workers=K`): one core per scanner.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_report import MeasuredProcess, _env, free_port  # noqa: E402
from bench_live import RssSampler, count_frames, load_average  # noqa: E402
from streamer import latency as L  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run_cmd(sources: list[str], record: Path, ids: list[str], args, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "streamer", "run"]
    for s in sources:
        cmd += ["--source", s]
    cmd += ["--record", str(record), "--publish", f"tcp://127.0.0.1:{free_port()}", "--stream-id", ",".join(ids)
            if len(ids) > 1 else ids[0]]
    if not args.frames:
        cmd.append("--no-frames")
    if args.max_frames:
        cmd += ["--max-frames", str(args.max_frames)]
    return cmd + extra


def run_layout(video: str, n: int, layout: str, args, extra: list[str], n_frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ids = [f"s{k}" for k in range(n)]
        infos, records = [], []
        if layout == "shared" or n == 1:
            record = Path(tmp) / "run.jsonl"
            procs = [MeasuredProcess(_run_cmd([video] * n, record, ids, args, extra), ROOT, _env())]
            records = [record if n == 1 else Path(tmp) / f"run.{sid}.jsonl" for sid in ids]
        else:
            procs = []
            cpus = sorted(os.sched_getaffinity(0)) if args.pin_each else []
            for k, sid in enumerate(ids):
                record = Path(tmp) / f"run.{sid}.jsonl"
                pin = [f"--cpu-affinity", ",".join(f"{role}={cpus[k % len(cpus)]}" for role in
                                                   ("capture", "loop", "model", "workers"))] if cpus else []
                procs.append(MeasuredProcess(_run_cmd([video], record, [sid], args, extra + pin), ROOT, _env()))
                records.append(record)
        samplers = [RssSampler(p.proc.pid) for p in procs]   # RSS of each run + its capture processes
        for r in samplers:
            r.start()
        for p in procs:
            infos.append(p.wait(timeout_s=args.run_timeout))
        for r in samplers:
            r.stop.set()
        # peak of the summed RSS series (samples of the processes align to within a second)
        series = [[m for _, m in r.series] for r in samplers]
        length = min((len(x) for x in series), default=0)
        rss_peak = max((sum(x[i] for x in series) for i in range(length)), default=0.0)
        for info in infos:
            if info.get("timed_out") or info["returncode"] != 0:
                last = (info["stderr"].strip().splitlines() or ["?"])[-1]
                raise SystemExit(f"sonoplane run failed ({layout}, N={n}): {last}")
        per_stream, lat = [], []
        for rec in records:
            results = L.read_results_jsonl(rec)
            kept, _ = L.drop_warmup(results, L.DEFAULT_WARMUP_FRAMES, 0.0)
            lat += [L.stage_durations_ms(r)["capture->publish"] for r in kept]
            expected = min(n_frames, args.max_frames or n_frames)
            per_stream.append({"classified": len(results), "pct": 100.0 * len(results) / max(1, expected),
                               "fps": L.classified_fps(results)})
        batches = None
        if layout == "shared" and n > 1:
            m = re.search(r"--- model: (\d+) frames in (\d+) session calls \(([^)]*)\)", infos[0]["stdout"])
            batches = m.group(0)[len("--- model: "):] if m else None
    wall = max(i["wall_s"] for i in infos)
    cpu = sum(i["cpu_s"] for i in infos)
    lat_a = np.asarray(lat, float)
    return {"n": n, "layout": layout if n > 1 else "single", "streams": per_stream,
            "fps_min": min(s["fps"] for s in per_stream), "pct_min": min(s["pct"] for s in per_stream),
            "p50": float(np.percentile(lat_a, 50)) if lat_a.size else None,
            "p99": float(np.percentile(lat_a, 99)) if lat_a.size else None,
            "cores": cpu / wall, "cores_per_stream": cpu / wall / n, "batches": batches,
            "rss_mb_peak": rss_peak, "rss_mb_per_stream": rss_peak / n}


def _ms(value: float | None) -> str:
    """p50 / p99 print as n/a when no frame was left after the warm-up (a starved run)."""
    return "n/a" if value is None else f"{value:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--streams", default="1,2,4")
    ap.add_argument("--layouts", default="shared,separate", help="shared (one process), separate (N processes)")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--frames", action="store_true", help="publish the frames topic too")
    ap.add_argument("--pin-each", action="store_true", help="separate layout: each stream's process on its own CPU")
    ap.add_argument("--run-timeout", type=float, default=900)
    ap.add_argument("--json")
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if not Path(args.video).is_file():
        print(f"error: video file not found: {args.video}", file=sys.stderr)
        return 2
    n_frames, rate = count_frames(args.video)
    print(f"video {args.video}: {n_frames} frames at {rate:g} fps; load {load_average()}; {os.cpu_count()} cores",
          flush=True)
    rows = []
    for n in [int(x) for x in args.streams.split(",")]:
        for layout in ([l.strip() for l in args.layouts.split(",")] if n > 1 else ["shared"]):
            r = run_layout(args.video, n, layout, args, extra, n_frames)
            rows.append(r)
            print(f"  N={n} {r['layout']:<8} per-stream fps min {r['fps_min']:.1f}, classified min {r['pct_min']:.1f} %, "
                  f"p50 {_ms(r['p50'])} p99 {_ms(r['p99'])} ms, cores {r['cores']:.2f} ({r['cores_per_stream']:.2f}/stream), "
                  f"RSS {r['rss_mb_peak']:.0f} MB ({r['rss_mb_per_stream']:.0f}/stream)"
                  f"{', batches ' + r['batches'] if r['batches'] else ''}; load {load_average()}", flush=True)
    print("\n| N | layout | per-stream fps (min) | classified % (min) | p50 ms | p99 ms | cores | cores/stream | "
          "peak RSS MB | RSS MB/stream | session calls |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['layout']} | {r['fps_min']:.1f} | {r['pct_min']:.1f} | {_ms(r['p50'])} | {_ms(r['p99'])} | "
              f"{r['cores']:.2f} | {r['cores_per_stream']:.2f} | {r['rss_mb_peak']:.0f} | {r['rss_mb_per_stream']:.0f} | "
              f"{r['batches'] or ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"video": args.video, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
