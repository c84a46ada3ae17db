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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat_cpu(stat_path: str) -> tuple[str, float] | None:
    """(kernel name, user + system CPU s) from a Linux /proc/PID/stat or /proc/self/task/TID/stat;
    None when it cannot be read (the process or thread is gone)."""
    try:
        with open(stat_path) as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS   # utime, stime


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc/PID/task/*/children); [] once it is gone."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


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
