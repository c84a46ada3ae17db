"""Soak test: a looped live stream for N minutes; RSS and open fds of `sonoplane run` and its capture
process every 30 s; pass / fail on growth.

    python tools/soak.py --minutes 60                      # bundled clip looped by ffmpeg over UDP
    python tools/soak.py --minutes 10 --json soak.json
    python tools/soak.py --streams 2 --minutes 30 --clip VIDEO.mp4 -- --model planes_lite0_128

ffmpeg (`-stream_loop -1 -re`) streams the clip as MPEG-TS to udp://127.0.0.1; `sonoplane run`
consumes it with the frames topic on; a subscriber here counts results and frames. Every
--interval seconds one row: minutes, RSS (MB) and fds of both processes, results received,
skipped total, decode errors. At the end `run` gets SIGTERM (exit 143 expected).

--streams N runs N such streams at once (N senders on N ports, N `sonoplane run` processes, as
separate scanners on one box); rows carry a `stream` column and the verdict one entry per stream.

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


class Stream:
    """One looped live stream: an ffmpeg sender to a UDP port, a `sonoplane run` on it (its own
    process, as separate scanners would be), and a subscriber counting what it publishes."""

    def __init__(self, index: int, clip: str, env: dict, extra: list[str]):
        import zmq
        from streamer import schema
        self.index = index
        udp, self.pub = free_port(socket.SOCK_DGRAM), f"tcp://127.0.0.1:{free_port()}"
        self.run = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--source", f"udp://127.0.0.1:{udp}",
                                     "--publish", self.pub, "--quiet", "--stream-id", str(index), *extra],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sender = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-stream_loop", "-1", "-re", "-i", clip,
                                        "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{udp}?pkt_size=1316"],
                                       stdin=subprocess.DEVNULL)
        self.counts = {"results": 0, "frames": 0, "skipped_total": 0, "decode_errors": 0, "stale_results": 0}
        self.stop = threading.Event()
        self._zmq, self._schema = zmq, schema
        self.sub = threading.Thread(target=self._subscribe, daemon=True)
        self.sub.start()

    def _subscribe(self) -> None:
        zmq, schema, counts = self._zmq, self._schema, self.counts
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"sonoplane.")
        sock.setsockopt(zmq.RCVTIMEO, 200)
        sock.connect(self.pub)
        while not self.stop.is_set():
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

    def sample(self, t_min: float) -> dict | None:
        child = capture_child(self.run.pid)
        try:
            return {"stream": self.index, "min": t_min, "main_mb": round(rss_mb(self.run.pid), 1),
                    "main_fds": fds(self.run.pid),
                    "cap_mb": round(rss_mb(child), 1) if child else None,
                    "cap_fds": fds(child) if child else None, **self.counts}
        except OSError:
            return None

    def close(self) -> None:
        self.sender.terminate()
        try:
            self.sender.wait(10)
        except subprocess.TimeoutExpired:
            self.sender.kill()
        self.run.send_signal(signal.SIGTERM)
        try:
            self.run.wait(30)
        except subprocess.TimeoutExpired:
            self.run.kill()
            self.run.wait()
        self.stop.set()
        self.sub.join(5)


def verdict_of(rows: list[dict], rc: int, minutes: float, max_growth: float) -> dict:
    """Pass / fail of one stream's series (see the module doc)."""
    warm = max(2.0, minutes / 3)
    tail = [r for r in rows if r["min"] >= warm and r["cap_mb"] is not None]
    verdict = {"rc": rc, "samples": len(rows), "warmup_min": warm}
    ok = rc == 143 and len(tail) >= 3
    for who in ("main", "cap"):
        s = slope_kb_per_min([r["min"] for r in tail], [r[f"{who}_mb"] for r in tail])
        fd_range = (max(r[f"{who}_fds"] for r in tail) - min(r[f"{who}_fds"] for r in tail)) if tail else None
        verdict[f"{who}_rss_slope_kb_per_min"] = round(s, 1)
        verdict[f"{who}_fd_range"] = fd_range
        ok = ok and s < max_growth and fd_range is not None and fd_range <= 2
    verdict["pass"] = bool(ok)
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--interval", type=float, default=30, help="seconds between samples")
    ap.add_argument("--clip", default=str(CLIP))
    ap.add_argument("--streams", type=int, default=1,
                    help="looped streams at once, each its own sender and `sonoplane run` process")
    ap.add_argument("--max-growth-kb-per-min", type=float, default=20.0)
    ap.add_argument("--json", help="write the series and verdict here")
    ap.add_argument("run_args", nargs="*", help="after --: extra `sonoplane run` arguments (e.g. --model NAME)")
    args = ap.parse_args()
    if args.streams < 1:
        print("soak: --streams must be at least 1", file=sys.stderr)
        return 2
    if shutil.which("ffmpeg") is None:
        print("soak: needs ffmpeg", file=sys.stderr)
        return 2
    if not Path(args.clip).is_file():
        print(f"soak: no such clip: {args.clip}", file=sys.stderr)
        return 2

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    streams = [Stream(i, args.clip, env, args.run_args) for i in range(args.streams)]
    rows = []
    t0 = time.monotonic()
    print(f"{'stream':>6} {'min':>6} {'main MB':>8} {'main fds':>8} {'cap MB':>7} {'cap fds':>7} {'results':>8} "
          f"{'frames':>7} {'skipped':>8} {'dec.err':>7}", flush=True)
    try:
        next_t = t0 + min(args.interval, 10)
        running = True
        while running and time.monotonic() - t0 < args.minutes * 60:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += args.interval
            t_min = round((time.monotonic() - t0) / 60, 2)
            for st in streams:
                if st.run.poll() is not None:
                    print(f"soak: stream {st.index}: run exited early with {st.run.returncode}: "
                          f"{st.run.stderr.read()[-500:]}", file=sys.stderr)
                    running = False
                    break
                if st.sender.poll() is not None:   # e.g. an unreadable clip: nothing would arrive
                    print(f"soak: stream {st.index}: ffmpeg sender exited with {st.sender.returncode}",
                          file=sys.stderr)
                    running = False
                    break
                row = st.sample(t_min)
                if row is None:
                    continue
                rows.append(row)
                print(f"{row['stream']:6d} {row['min']:6.1f} {row['main_mb']:8.1f} {row['main_fds']:8d} "
                      f"{row['cap_mb'] or 0:7.1f} {row['cap_fds'] or 0:7d} {row['results']:8d} {row['frames']:7d} "
                      f"{row['skipped_total']:8d} {row['decode_errors']:7d}", flush=True)
    finally:
        for st in streams:
            st.close()
    verdicts = [verdict_of([r for r in rows if r["stream"] == st.index], st.run.returncode, args.minutes,
                           args.max_growth_kb_per_min) for st in streams]
    verdict = verdicts[0] if len(streams) == 1 else {"streams": verdicts, "pass": all(v["pass"] for v in verdicts)}
    print(json.dumps(verdict))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "verdict": verdict}, indent=1))
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
