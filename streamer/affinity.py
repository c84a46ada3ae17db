"""CPU pinning of the pipeline's parts (`sonoplane run --cpu-affinity`), Linux only.

    --cpu-affinity capture=0,loop=1,workers=0[,model=0]

Roles:
- capture: the capture process and every thread it starts (FFmpeg's decoder threads included: it is
  pinned before the source is opened, and FFmpeg sizes its automatic thread count from the mask);
- loop: the pipeline's own thread, and so ONNX Runtime's intra-op threads made when the model loads;
- model: ONNX Runtime's extra intra-op threads only (`--threads 2`), moved after the model loads
  (default: the loop's CPUs);
- workers: the frames-topic worker, crop re-detection and the sub-plane refiner's thread
  (default: the loop's CPUs).

Why: on a 2-core box the decoder's threads, the loop and the frames worker otherwise preempt each
other on both cores; with the loop alone on one core a frame's path is never queued behind a decode
(measured in docs/latency.md, Session 6). The value of each role is one CPU (`1`), a range (`0-1`)
or several joined with `+` (`0+2`). `auto` is capture=0,loop=1,model=0,workers=0 on a box with at least two
CPUs, and capture=0,loop=1,model=0,workers=1 when the loop is real-time (`--realtime-priority loop=N`);
`off` (the default) leaves scheduling to the OS.

Why the workers go to the loop's core when the loop is real-time: they are Python threads, and the
loop needs the GIL they hold between their C calls. On core 0 a worker holding the GIL sits behind
the capture's decode (a keyframe's long decode) and the model's FIFO intra-op thread, while the
FIFO loop on core 1 waits for the GIL: a priority inversion that made the loop miss the frames just
before keyframes (docs/latency.md, Session 8). Beside a FIFO loop a worker runs only in the loop's
idle time, so it never delays the loop, and when the loop waits for the GIL the holder has the core.
Without real-time, a worker on the loop's core competes with it as an equal, so `auto` keeps it on
core 0 (Session 6's measurement).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engines.errors import UserError

ROLES = ("capture", "loop", "model", "workers")
AUTO = "capture=0,loop=1,model=0,workers=0"
AUTO_REALTIME_LOOP = "capture=0,loop=1,model=0,workers=1"   # the workers beside a FIFO loop (the GIL)


@dataclass(frozen=True)
class Affinity:
    capture: tuple[int, ...] | None = None
    loop: tuple[int, ...] | None = None
    model: tuple[int, ...] | None = None
    workers: tuple[int, ...] | None = None

    @property
    def model_cpus(self) -> tuple[int, ...] | None:
        return self.model or self.loop

    @property
    def worker_cpus(self) -> tuple[int, ...] | None:
        return self.workers or self.loop


def _cpus(role: str, text: str, allowed: set[int]) -> tuple[int, ...]:
    out: set[int] = set()
    for part in text.split("+"):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise UserError(f"--cpu-affinity {role}={text}: not a CPU list (e.g. 1, 0-1, 0+2)") from None
    missing = sorted(out - allowed)
    if missing:
        raise UserError(f"--cpu-affinity {role}={text}: CPU {missing[0]} is not available here "
                        f"(this process may use {', '.join(map(str, sorted(allowed)))})")
    return tuple(sorted(out))


def is_off(spec: str | None) -> bool:
    """No pinning asked for: None, empty, `off` or `none`."""
    return spec is None or spec.strip().lower() in ("", "off", "none")


def parse_affinity(spec: str | None, realtime_loop: bool = False) -> Affinity | None:
    """`off` / None -> None; `auto` (AUTO, or AUTO_REALTIME_LOOP when realtime_loop: the loop runs
    SCHED_FIFO); or role=cpus pairs. Bad input: UserError (one line)."""
    if is_off(spec):
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise UserError("--cpu-affinity needs Linux (sched_setaffinity); use off here")
    allowed = set(os.sched_getaffinity(0))
    spec = spec.strip()
    if spec.lower() == "auto":
        if len(allowed) < 2 or not {0, 1} <= allowed:
            raise UserError(f"--cpu-affinity auto needs CPUs 0 and 1 (this process may use "
                            f"{', '.join(map(str, sorted(allowed)))}); give roles explicitly")
        spec = AUTO_REALTIME_LOOP if realtime_loop else AUTO
    roles: dict[str, tuple[int, ...]] = {}
    for item in spec.split(","):
        role, sep, value = item.partition("=")
        role = role.strip().lower()
        if not sep or role not in ROLES:
            raise UserError(f"--cpu-affinity: {item.strip()!r} is not ROLE=CPUS "
                            f"(roles: {', '.join(ROLES)}; e.g. {AUTO})")
        if role in roles:
            raise UserError(f"--cpu-affinity: {role} given twice")
        roles[role] = _cpus(role, value, allowed)
    return Affinity(**roles)


def pin_thread(cpus: tuple[int, ...] | None, native_id: int | None = None) -> bool:
    """Pin one thread (default: the calling one) to `cpus`; False when not allowed here."""
    if not cpus:
        return False
    try:
        os.sched_setaffinity(native_id if native_id is not None else threading.get_native_id(), cpus)
        return True
    except OSError:
        return False


def pinned_worker(name: str, cpus: tuple[int, ...] | None) -> ThreadPoolExecutor:
    """One background worker thread, pinned to `cpus` when given (`--cpu-affinity workers=...`)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=pin_thread, initargs=(cpus,))


def process_threads() -> set[int]:
    """Native ids of this process's threads (Linux /proc)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def pin_process(cpus: tuple[int, ...] | None) -> None:
    """Every thread of this process now, and (through inheritance) the ones its threads start later."""
    if not cpus:
        return
    for tid in process_threads():
        pin_thread(cpus, tid)


def thread_cpus(native_id: int) -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(native_id)))
