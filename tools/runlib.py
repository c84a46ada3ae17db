"""Shared by the bench tools: run the real `sonoplane run` code path and read its JSONL."""
from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_run(video: str, extra: list[str], record: Path, stream_id: str = "0") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamer", "run", "--source", str(video), "--record", str(record),
           "--publish", f"tcp://127.0.0.1:{free_port()}", "--no-frames", "--stream-id", stream_id, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_pipeline(video: str, extra: list[str]) -> tuple[list[dict], dict]:
    """Run `sonoplane run` on a video; returns (result messages, run info incl. CPU cores used)."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "run.jsonl"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = start_run(video, extra, record)
        out, err = proc.communicate()
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"sonoplane run failed on {video}: {err.strip().splitlines()[-1] if err else proc.returncode}")
        rows = [json.loads(line) for line in record.read_text().splitlines()]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [r for r in rows if r["kind"] == "result"], {"wall_s": wall, "cpu_s": cpu, "cores": cpu / wall}
