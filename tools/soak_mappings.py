"""Where a soak's capture processes keep their memory: resident KB per kind of mapping, sampled.

    python tools/soak.py --streams 2 --minutes 30 --clip val_1080p30.mp4 --json soak.json &
    python tools/soak_mappings.py --root $! --minutes 29 --burst-every 180 --burst-s 4 --out smaps.jsonl

Every --interval seconds, for each capture process under --root (the processes that
multiprocessing spawned, resource tracker left out), it sums /proc/PID/smaps' Rss by kind: heap,
anonymous mappings of at least 1 MB (glibc's per-thread malloc arenas are 64 MB-aligned ones among
them), smaller anonymous ones, shared memory (the frame slot), files, the rest. One JSON line per
sample. With --burst-every the captures are stopped (SIGSTOP) for --burst-s seconds that often: a
starvation burst, after which a live source's backlog arrives at once (docs/soak/README.md,
Session 7). Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runlib import child_pids  # noqa: E402

MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$")


def mapping_kind(size: int, name: str) -> str:
    if name == "[heap]":
        return "heap"
    if name.startswith("/dev/shm") or "psm_" in name:
        return "shm"
    if name == "":
        return "anon>=1MB" if size >= 1 << 20 else "anon<1MB"
    if name.startswith("["):
        return "other"
    return "files"


def resident_by_kind(pid: int) -> dict[str, int] | None:
    """Resident KB per mapping kind, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    kind = None
    for line in text.splitlines():
        m = MAPPING.match(line)
        if m:
            kind = mapping_kind(int(m[2], 16) - int(m[1], 16), m[3].strip())
        elif line.startswith("Rss:") and kind:
            out[kind] = out.get(kind, 0) + int(line.split()[1])
    return out


def descendants(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        for kid in child_pids(todo.pop()):
            out.append(kid)
            todo.append(kid)
    return out


def capture_processes(root: int) -> list[int]:
    caps = []
    for pid in descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            caps.append(pid)
    return sorted(caps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=int, required=True, help="PID whose descendants are watched (e.g. soak.py's)")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument("--burst-every", type=float, default=0, help="stop the captures this often, seconds (0: never)")
    ap.add_argument("--burst-s", type=float, default=4, help="how long each stop lasts")
    ap.add_argument("--out", required=True, help="JSON lines, appended")
    args = ap.parse_args(argv)
    if not Path(f"/proc/{args.root}").exists():
        print(f"soak_mappings: no process {args.root}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    next_burst = t0 + args.burst_every
    with open(args.out, "a") as log:
        while time.monotonic() - t0 < args.minutes * 60 and Path(f"/proc/{args.root}").exists():
            caps = capture_processes(args.root)
            row = {"min": round((time.monotonic() - t0) / 60, 2)}
            row.update({str(pid): resident_by_kind(pid) for pid in caps})
            log.write(json.dumps(row) + "\n")
            log.flush()
            if args.burst_every > 0 and caps and time.monotonic() >= next_burst:
                for pid in caps:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(args.burst_s)
                finally:
                    for pid in caps:
                        os.kill(pid, signal.SIGCONT)
                log.write(json.dumps({"burst_at_min": round((time.monotonic() - t0) / 60, 2)}) + "\n")
                next_burst += args.burst_every
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
