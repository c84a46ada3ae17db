"""Soak test: a looped live stream for N minutes; RSS and open fds of `sonoplane run` and its capture
process every 30 s; pass / fail on growth.

    python tools/soak.py --minutes 60                      # bundled clip looped by ffmpeg over UDP
    python tools/soak.py --minutes 10 --json soak.json

ffmpeg (`-stream_loop -1 -re`) streams the clip as MPEG-TS to udp://127.0.0.1; `sonoplane run`
consumes it with the frames topic on; a subscriber here counts results and frames. Every
--interval seconds one row: minutes, RSS (MB) and fds of both processes, results received,
skipped total, decode errors. At the end `run` gets SIGTERM (exit 143 expected).

Pass when, after a warm-up (the first third of the run, at least 2 minutes), the main process's
RSS grows less than --max-growth-kb-per-min (least-squares slope; the per-frame summary lists
this replaces grew ~60 KB/min), the capture process's likewise, and neither's fd count moves by
more than 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT / "streamer" / "assets" / "sample_scan.mp4"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def capture_child(pid: int) -> int | None:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for c in out:
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            return int(c)
    return None


def slope_kb_per_min(t_min: list[float], mb: list[float]) -> float:
    if len(t_min) < 3:
        return float("nan")
    return float(np.polyfit(t_min, mb, 1)[0] * 1024)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--interval", type=float, default=30, help="seconds between samples")
    ap.add_argument("--clip", default=str(CLIP))
    ap.add_argument("--max-growth-kb-per-min", type=float, default=20.0)
    ap.add_argument("--json", help="write the series and verdict here")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("soak: needs ffmpeg", file=sys.stderr)
        return 2
    import zmq
    from streamer import schema

    udp, pub = free_port(socket.SOCK_DGRAM), f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--source", f"udp://127.0.0.1:{udp}",
                            "--publish", pub, "--quiet"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-stream_loop", "-1", "-re", "-i", args.clip,
                               "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{udp}?pkt_size=1316"],
                              stdin=subprocess.DEVNULL)
    counts = {"results": 0, "frames": 0, "skipped_total": 0, "decode_errors": 0, "stale_results": 0}
    stop = threading.Event()

    def subscribe():
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"sonoplane.")
        sock.setsockopt(zmq.RCVTIMEO, 200)
        sock.connect(pub)
        while not stop.is_set():
            try:
                _, p = schema.decode(sock.recv())
            except zmq.Again:
                continue
            if p["kind"] == "result":
                counts["results"] += 1
                counts["skipped_total"] = p["skipped_total"]
                counts["stale_results"] += bool(p["flags"].get("stale"))
            elif p["kind"] == "frame":
                counts["frames"] += 1
            elif p["kind"] == "status":
                counts["decode_errors"] = p.get("decode_errors", 0)
        sock.close(0)

    sub = threading.Thread(target=subscribe, daemon=True)
    sub.start()
    rows = []
    t0 = time.monotonic()
    print(f"{'min':>6} {'main MB':>8} {'main fds':>8} {'cap MB':>7} {'cap fds':>7} {'results':>8} "
          f"{'frames':>7} {'skipped':>8} {'dec.err':>7}", flush=True)
    try:
        next_t = t0 + min(args.interval, 10)
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += args.interval
            if run.poll() is not None:
                print(f"soak: run exited early with {run.returncode}: {run.stderr.read()[-500:]}", file=sys.stderr)
                break
            child = capture_child(run.pid)
            try:
                row = {"min": round((time.monotonic() - t0) / 60, 2), "main_mb": round(rss_mb(run.pid), 1),
                       "main_fds": fds(run.pid),
                       "cap_mb": round(rss_mb(child), 1) if child else None,
                       "cap_fds": fds(child) if child else None, **counts}
            except OSError:
                continue
            rows.append(row)
            print(f"{row['min']:6.1f} {row['main_mb']:8.1f} {row['main_fds']:8d} {row['cap_mb'] or 0:7.1f} "
                  f"{row['cap_fds'] or 0:7d} {row['results']:8d} {row['frames']:7d} {row['skipped_total']:8d} "
                  f"{row['decode_errors']:7d}", flush=True)
    finally:
        sender.terminate()
        try:
            sender.wait(10)
        except subprocess.TimeoutExpired:
            sender.kill()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        stop.set()
        sub.join(5)
    warm = max(2.0, args.minutes / 3)
    tail = [r for r in rows if r["min"] >= warm and r["cap_mb"] is not None]
    verdict = {"rc": run.returncode, "samples": len(rows), "warmup_min": warm}
    ok = run.returncode == 143 and len(tail) >= 3
    for who in ("main", "cap"):
        s = slope_kb_per_min([r["min"] for r in tail], [r[f"{who}_mb"] for r in tail])
        fd_range = (max(r[f"{who}_fds"] for r in tail) - min(r[f"{who}_fds"] for r in tail)) if tail else None
        verdict[f"{who}_rss_slope_kb_per_min"] = round(s, 1)
        verdict[f"{who}_fd_range"] = fd_range
        ok = ok and s < args.max_growth_kb_per_min and fd_range is not None and fd_range <= 2
    verdict["pass"] = bool(ok)
    print(json.dumps(verdict))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "verdict": verdict}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
