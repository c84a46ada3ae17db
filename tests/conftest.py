import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE_CLIP = ROOT / "streamer" / "assets" / "sample_scan.mp4"
FIXTURES = ROOT / "tests" / "fixtures"

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared data")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TAG_VAR = "SONOPLANE_TEST_TAG"


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries TAG_VAR=tag: a run and every child it started
    (children inherit the environment, even once re-parented to init). Other users' processes
    on a shared box are not counted."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            pids.append(int(d.name))
    return pids


def run_cli(*args, timeout=120, tag: str = "", **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), TAG_VAR: tag}
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env, **kw)
