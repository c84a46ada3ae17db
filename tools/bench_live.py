#!/usr/bin/env python3
"""Live bench: does `sonoplane run` classify every frame of a video in time, frames topic on,
with an overlay subscriber attached?

    python tools/bench_live.py VIDEO [--modes file,udp] [--config NAME="extra run args" ...]
                               [--repeat N] [--json OUT.json]

Modes:
- file: `sonoplane run --source VIDEO` at native rate (the capture paces the file);
- udp: ffmpeg streams VIDEO as MPEG-TS to udp://127.0.0.1 at native rate (`-re -c copy`),
  `sonoplane run --source udp://...` consumes it, as a scanner's network output would be.

Each run publishes results AND the frames topic (JPEG) as by default; an OverlaySubscriber (the
overlay's own receiving code: CONFLATE, JPEG decode) runs in this process for the whole run.
Per run: % of the source's frames classified (results / frames in the file), capture->publish p50 /
p99 after the warm-up (blank frames, which skip the model, left out unless --include-blank), CPU
cores of the sonoplane process tree (os.wait4 rusage / wall), peak RSS, frames the overlay got.
The frames not classified are counted by where they sit: the first 3 s, within 4 frames before a
keyframe (the decoder's burst), elsewhere (UDP: indices count from the first frame received).
A config may name another checkout with `--tree=DIR` (e.g. a `git worktree` of the commit
before a change) to measure before / after side by side in one run.
Configs are interleaved (A B A B per repeat) so a noisy neighbour hits each alike; ratios are
against the first config. `uptime` load is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_report import MeasuredProcess, _env, free_port, parse_configs  # noqa: E402
from runlib import child_pids  # noqa: E402
from streamer import latency as L  # noqa: E402
from engines.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def count_frames(video: str) -> tuple[int, float]:
    import av
    with av.open(video) as c:
        s = c.streams.video[0]
        n = s.frames or sum(1 for _ in c.demux(s) if _.size)
        rate = float(s.average_rate or s.guessed_rate or 0)
    return n, rate


def keyframe_positions(video: str) -> list[int]:
    """Display-order positions of the keyframes (demuxed packets only, no decoding)."""
    import av
    with av.open(video) as c:
        s = c.streams.video[0]
        pkts = [(p.pts, p.is_keyframe) for p in c.demux(s) if p.size and p.pts is not None]
    order = sorted(pkts)
    return [i for i, (_, key) in enumerate(order) if key]


def where_missed(missing: list[int], keyframes: list[int], rate: float, startup_s: float = 3.0) -> dict:
    """Frames not classified, by where they sit: the first startup_s of the file (opening, no
    crop region yet), within 4 frames before a keyframe (the decoder's burst), or elsewhere."""
    import bisect
    startup = int(startup_s * rate) if rate else 0
    out = {"startup": 0, "before_keyframe": 0, "other": 0}
    for i in missing:
        j = bisect.bisect_right(keyframes, i)        # the first keyframe after frame i
        if i < startup:
            out["startup"] += 1
        elif j < len(keyframes) and keyframes[j] - i <= 4:
            out["before_keyframe"] += 1
        else:
            out["other"] += 1
    return out


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its direct children (the capture process), MB."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class OverlayThread(threading.Thread):
    """The overlay's subscriber, polled continuously, as `sonoplane overlay` would."""

    def __init__(self, connect: str):
        super().__init__(daemon=True)
        from streamer.overlay.subscriber import OverlaySubscriber
        self.sub = OverlaySubscriber(connect)
        self.stop = threading.Event()
        self.frames = 0

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            self.sub.poll(50)
            if self.sub.frame_index is not None and self.sub.frame_index != last:
                last = self.sub.frame_index
                self.frames += 1
        self.sub.close()


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.series: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.series.append((round(time.monotonic() - self.t0, 1), round(tree_rss_mb(self.pid), 1)))


def split_tree(extra: list[str]) -> tuple[Path, list[str]]:
    """A config's `--tree=DIR` runs sonoplane from another checkout (before/after side by side)."""
    trees = [a for a in extra if a.startswith("--tree=")]
    root = Path(trees[-1].split("=", 1)[1]).resolve() if trees else ROOT
    if not (root / "streamer").is_dir():
        raise UserError(f"--tree={root}: not a sonoplane checkout")
    return root, [a for a in extra if not a.startswith("--tree=")]


def sonoplane(source: str, extra: list[str], record: Path, publish: str) -> list[str]:
    return [sys.executable, "-m", "streamer", "run", "--source", source, "--record", str(record),
            "--publish", publish, "--quiet", *extra]


def run_once(video: str, mode: str, extra: list[str], args, n_frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "run.jsonl"
        publish = f"tcp://127.0.0.1:{free_port()}"
        if mode == "file":
            source = video
        else:
            port = free_port()
            source = f"udp://127.0.0.1:{port}?timeout=3000000"
            extra = [*extra, "--no-reconnect"]
        root, extra = split_tree(extra)
        env = {**_env(), "PYTHONPATH": str(root)}
        proc = MeasuredProcess(sonoplane(source, extra, record, publish), root, env)
        overlay = OverlayThread(publish)
        overlay.start()
        rss = RssSampler(proc.proc.pid)
        rss.start()
        sender = None
        if mode == "udp":
            time.sleep(args.udp_start_s)          # UDP has no handshake: the receiver must be up first
            sender = subprocess.run(["ffmpeg", "-loglevel", "error", "-re", "-i", video, "-c", "copy",
                                     "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                                    capture_output=True, text=True)
        info = proc.wait(timeout_s=args.run_timeout)
        overlay.stop.set()
        rss.stop.set()
        overlay.join(2)
        if info.get("timed_out") or info["returncode"] != 0:
            last = (info["stderr"].strip().splitlines() or [f"exit status {info['returncode']}"])[-1]
            raise UserError(f"sonoplane run ({mode}, {' '.join(extra)}) failed: {last}")
        if sender is not None and sender.returncode != 0:
            raise UserError(f"ffmpeg sender failed: {sender.stderr.strip()[-200:]}")
        results = L.read_results_jsonl(record)
    kept, _ = L.drop_warmup(results, args.warmup_frames, 0.0, include_blank=args.include_blank)
    lat = np.asarray([L.stage_durations_ms(r)["capture->publish"] for r in kept], float)
    series = [m for _, m in rss.series]
    return {"mode": mode, "classified": len(results), "source_frames": n_frames,
            "classified_pct": 100.0 * len(results) / max(1, n_frames),
            "skipped": int(results[-1].get("skipped_total", 0)) if results else 0,
            "p50": float(np.percentile(lat, 50)) if lat.size else None,
            "p99": float(np.percentile(lat, 99)) if lat.size else None,
            "max": float(lat.max()) if lat.size else None,
            "missing": sorted(set(range(n_frames)) - {int(r["frame"]) for r in results}),
            "over_frame_period_pct": None,
            "latency_ms": lat.tolist(),
            "cores": info["cores"], "wall_s": info["wall_s"],
            # CPU per classified frame: robust to a busy neighbour (it slows, but does not add, our CPU)
            "cpu_ms_per_classified": 1e3 * info["cpu_s"] / max(1, len(results)),
            "rss_mb_peak": max(series) if series else None,
            "rss_mb_series": rss.series, "overlay_frames": overlay.frames}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--modes", default="file,udp", help="comma list of file, udp")
    ap.add_argument("--config", action="append", default=[],
                    help='NAME="extra sonoplane run args" (repeatable; default: one config "default")')
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--warmup-frames", type=int, default=L.DEFAULT_WARMUP_FRAMES)
    ap.add_argument("--include-blank", action="store_true")
    ap.add_argument("--udp-start-s", type=float, default=3.0, help="receiver start-up before ffmpeg sends")
    ap.add_argument("--run-timeout", type=float, default=900)
    ap.add_argument("--json", help="write every run's figures (latencies, RSS series) as JSON")
    args = ap.parse_args(argv)
    try:
        if not Path(args.video).is_file():
            raise UserError(f"video file not found: {args.video}")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in ("file", "udp")]
        if bad:
            raise UserError(f"unknown mode(s) {', '.join(bad)} (choose file, udp)")
        configs = parse_configs(args.config) if args.config else [("default", [])]
        n_frames, rate = count_frames(args.video)
        period = 1000.0 / rate if rate else None
        keyframes = keyframe_positions(args.video)
        print(f"video {args.video}: {n_frames} frames at {rate:g} fps (frame period {period or 0:.1f} ms); "
              f"load {load_average()}; {os.cpu_count()} cores", flush=True)
        runs: list[dict] = []
        for rep in range(args.repeat):
            for mode in modes:
                for name, extra in configs:
                    r = run_once(args.video, mode, extra, args, n_frames)
                    r.update(config=name, repeat=rep)
                    if period and r["latency_ms"]:
                        r["over_frame_period_pct"] = 100.0 * float(np.mean(np.asarray(r["latency_ms"]) > period))
                    r["missed_where"] = where_missed(r["missing"], keyframes, rate)
                    runs.append(r)
                    print(f"  [{rep}] {mode:<4} {name:<14} classified {r['classified_pct']:6.2f} % "
                          f"p50 {r['p50']:.1f} p99 {r['p99']:.1f} ms  cores {r['cores']:.2f}  "
                          f"CPU {r['cpu_ms_per_classified']:.1f} ms/frame  wall {r['wall_s']:.0f} s  "
                          f"RSS {r['rss_mb_peak']} MB  load {load_average()}", flush=True)
                    w = r["missed_where"]
                    print(f"      missed {len(r['missing'])}: first 3 s {w['startup']}, <= 4 before a keyframe "
                          f"{w['before_keyframe']}, elsewhere {w['other']}", flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n| mode | config | classified % | p50 ms | p99 ms | max ms | > frame period % | cores | "
          f"CPU ms per classified frame | peak RSS MB | overlay frames | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        ref = None
        for name, _ in configs:
            rs = [r for r in runs if r["mode"] == mode and r["config"] == name]
            lat = np.concatenate([r["latency_ms"] for r in rs]) if rs else np.zeros(0)
            pct = float(np.mean([r["classified_pct"] for r in rs]))
            p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99)) if lat.size else (float("nan"),) * 2
            ref = p99 if ref is None else ref
            over = 100.0 * float(np.mean(lat > period)) if period and lat.size else float("nan")
            print(f"| {mode} | {name} | {pct:.2f} | {p50:.1f} | {p99:.1f} | {lat.max() if lat.size else 0:.1f} | "
                  f"{over:.2f} | {np.mean([r['cores'] for r in rs]):.2f} | "
                  f"{np.mean([r['cpu_ms_per_classified'] for r in rs]):.1f} | "
                  f"{max((r['rss_mb_peak'] or 0) for r in rs):.0f} | {sum(r['overlay_frames'] for r in rs)} | "
                  f"{p99 / ref if ref else float('nan'):.2f} |")
    print(f"\nload after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"video": args.video, "frames": n_frames, "fps": rate,
                                               "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
