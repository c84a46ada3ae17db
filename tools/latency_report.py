#!/usr/bin/env python3
"""Per-stage latency of the real pipeline, side by side, with ratios.

    # from a recorded run (sonoplane run --record RUN.jsonl)
    python tools/latency_report.py report RUN.jsonl [--cdf cdf.png]
    # live: subscribe to a running pipeline (adds capture->subscriber)
    python tools/latency_report.py live --connect tcp://127.0.0.1:5555 --duration 20
    # several configurations on one video, native rate and fast, plus the seed-style baseline
    python tools/latency_report.py compare --video clip.mp4 \
        --config sononet16-1t="--model sononet16 --threads 1" --config sononet16-2t="--threads 2" \
        [--baseline] [--two-stream] [--repeat 2] [--json out.json]

Warm-up (first 30 results) is dropped. Durations in ms; `tail` = p100 - p95, `flatness` = p90 - p10.
Glass-to-glass estimate: one frame of capture + capture->publish + subscriber, rounded up to the
display's vsync, + one frame of display (docs/latency.md).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runlib import run_pipeline, start_run  # noqa: E402
from streamer.bench_metrics import percentiles, stage_durations_ms  # noqa: E402

WARMUP = 30
STAGES = ("capture->preprocess", "preprocess->infer", "infer->smooth", "smooth->publish", "capture->publish",
          "capture->subscriber")


def stage_table(results: list[dict], received: list[float] | None = None) -> dict[str, dict]:
    per = [stage_durations_ms(r, received[i] if received else None) for i, r in enumerate(results)]
    return {s: percentiles([p[s] for p in per if s in p], drop_first=WARMUP) for s in STAGES if any(s in p for p in per)}


def print_table(title: str, table: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'stage (ms)':<22}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}{'tail':>8}{'flat':>8}{'n':>6}")
    for stage, s in table.items():
        if s.get("count"):
            print(f"{stage:<22}{s['p50']:8.2f}{s['p90']:8.2f}{s['p99']:8.2f}{s['p99.9']:8.2f}{s['max']:8.2f}"
                  f"{s['tail']:8.2f}{s['flatness']:8.2f}{s['count']:6d}")


def glass_to_glass_ms(source_fps: float, processing_ms: float, display_hz: float = 60.0) -> float:
    frame = 1000.0 / source_fps
    vsync = 1000.0 / display_hz
    return frame + math.ceil(processing_ms / vsync) * vsync + vsync


def cdf_png(tables: dict[str, list[float]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, v in tables.items():
        v = np.sort(np.asarray(v)[WARMUP:])
        ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
    ax.set_xlabel("capture -> publish (ms)")
    ax.set_ylabel("fraction of frames")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def cmd_report(args) -> dict:
    out = {}
    for f in args.jsonl:
        rows = [json.loads(x) for x in Path(f).read_text().splitlines()]
        res = [r for r in rows if r.get("kind") == "result"]
        out[f] = stage_table(res)
        print_table(f"{f} ({len(res)} results, skipped {res[-1]['skipped_total'] if res else 0})", out[f])
    if args.cdf:
        cdf_png({f: [stage_durations_ms(r)["capture->publish"] for r in
                     [json.loads(x) for x in Path(f).read_text().splitlines()] if r.get("kind") == "result"]
                 for f in args.jsonl}, args.cdf)
    return out


def cmd_live(args) -> dict:
    import zmq

    from streamer import schema
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, schema.topic(schema.RESULT))
    sub.setsockopt(zmq.RCVTIMEO, 500)
    sub.connect(args.connect)
    res, recv = [], []
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        try:
            msg = sub.recv()
        except zmq.Again:
            continue
        recv.append(time.monotonic())
        res.append(schema.decode(msg)[1])
    table = stage_table(res, recv)
    print_table(f"live {args.connect}: {len(res)} results", table)
    return table


def cmd_compare(args) -> dict:
    configs = [c.split("=", 1) for c in args.config] or [["default", ""]]
    report: dict = {"video": args.video, "configs": {}}
    for rep in range(args.repeat):                    # interleaved: A B A B cancels machine drift
        for name, extra in configs:
            for mode in ("native", "fast"):
                flags = shlex.split(extra) + (["--fast"] if mode == "fast" else [])
                results, info = run_pipeline(args.video, flags)
                entry = report["configs"].setdefault(name, {}).setdefault(mode, {"runs": []})
                lat = [stage_durations_ms(r)["capture->publish"] for r in results]
                entry["runs"].append({"latency": lat, "classified": len(results),
                                      "skipped": results[-1]["skipped_total"] if results else 0,
                                      "fps": len(results) / info["wall_s"], "cores": info["cores"],
                                      "infer": [stage_durations_ms(r)["preprocess->infer"] for r in results]})
    ref = configs[0][0]
    print(f"\nvideo {args.video}; {args.repeat} interleaved repeat(s); ratios against '{ref}'")
    print(f"{'config':<22}{'mode':<8}{'p50':>8}{'p99':>8}{'max':>8}{'infer p50':>10}{'fps':>8}{'skipped':>9}"
          f"{'cores':>7}{'p50 ratio':>10}{'fps ratio':>10}")
    summary = {}
    for name, _ in configs:
        for mode in ("native", "fast"):
            runs = report["configs"][name][mode]["runs"]
            lat = [v for r in runs for v in r["latency"][WARMUP:]]
            inf = [v for r in runs for v in r["infer"][WARMUP:]]
            s = percentiles(lat)
            summary[(name, mode)] = {"p50": s["p50"], "p99": s["p99"], "max": s["max"],
                                     "infer_p50": percentiles(inf)["p50"],
                                     "fps": sum(r["fps"] for r in runs) / len(runs),
                                     "skipped": sum(r["skipped"] for r in runs) / len(runs),
                                     "cores": sum(r["cores"] for r in runs) / len(runs)}
    for (name, mode), s in summary.items():
        r = summary[(ref, mode)]
        print(f"{name:<22}{mode:<8}{s['p50']:8.1f}{s['p99']:8.1f}{s['max']:8.1f}{s['infer_p50']:10.1f}"
              f"{s['fps']:8.1f}{s['skipped']:9.0f}{s['cores']:7.2f}{s['p50'] / r['p50']:10.2f}{s['fps'] / r['fps']:10.2f}")
    report["summary"] = {f"{k[0]}/{k[1]}": v for k, v in summary.items()}
    import av
    with av.open(args.video) as c:
        fps = float(c.streams.video[0].average_rate or 30)
    g2g = glass_to_glass_ms(fps, summary[(ref, "native")]["p50"])
    report["glass_to_glass_ms_p50"] = g2g
    print(f"\nglass-to-glass estimate ({ref}, native, p50): {1000 / fps:.1f} ms capture frame + "
          f"{summary[(ref, 'native')]['p50']:.1f} ms processing rounded up to 60 Hz vsync + 16.7 ms display "
          f"= {g2g:.1f} ms")
    if args.baseline:
        from seed_baseline import run_baseline
        b = run_baseline(args.video, args.baseline_frames)
        ours = summary[(ref, "fast")]
        report["seed_baseline"] = b
        print(f"\nseed-style baseline (fastNlMeans + equalizeHist at full res + eager torch SonoNet16, "
              f"{b['frames']} frames): p50 {b['ms_p50']:.0f} ms/frame, {b['fps']:.2f} fps")
        print(f"speed-up of '{ref}' (fast mode) over it: throughput x{ours['fps'] / b['fps']:.1f}, "
              f"per-frame latency p50 x{b['ms_p50'] / ours['p50']:.1f}")
    if args.two_stream:
        report["two_stream"] = two_stream(args.video, shlex.split(configs[0][1]))
    for m in report["configs"].values():
        for e in m.values():
            for r in e["runs"]:
                r.pop("latency")
                r.pop("infer")
    return report


def two_stream(video: str, extra: list[str]) -> dict:
    """Two pipelines at once on this machine, native rate, separate ports and stream ids."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = [(sid, Path(tmp) / f"{sid}.jsonl") for sid in ("a", "b")]
        running = [start_run(video, extra, rec, stream_id=sid) for sid, rec in procs]
        for p in running:
            p.communicate()
        out = {}
        for (sid, rec), p in zip(procs, running):
            res = [json.loads(x) for x in rec.read_text().splitlines()]
            res = [r for r in res if r["kind"] == "result"]
            s = percentiles([stage_durations_ms(r)["capture->publish"] for r in res], drop_first=WARMUP)
            out[sid] = {"classified": len(res), "skipped": res[-1]["skipped_total"] if res else 0,
                        "p50": s.get("p50"), "p99": s.get("p99")}
    print("\ntwo streams at once (native rate): " + "; ".join(
        f"stream {k}: {v['classified']} classified, {v['skipped']} skipped, capture->publish p50 {v['p50']:.1f} "
        f"p99 {v['p99']:.1f} ms" for k, v in out.items()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("report")
    r.add_argument("jsonl", nargs="+")
    r.add_argument("--cdf")
    lv = sub.add_parser("live")
    lv.add_argument("--connect", default="tcp://127.0.0.1:5555")
    lv.add_argument("--duration", type=float, default=20)
    c = sub.add_parser("compare")
    c.add_argument("--video", required=True)
    c.add_argument("--config", action="append", default=[], metavar="NAME=ARGS")
    c.add_argument("--repeat", type=int, default=1)
    c.add_argument("--baseline", action="store_true")
    c.add_argument("--baseline-frames", type=int, default=20)
    c.add_argument("--two-stream", action="store_true")
    for p in (r, lv, c):
        p.add_argument("--json")
    args = ap.parse_args(argv)
    out = {"report": cmd_report, "live": cmd_live, "compare": cmd_compare}[args.mode](args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
