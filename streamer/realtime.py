"""Real-time scheduling of the pipeline's parts (`sonoplane run --realtime-priority`), Linux only.

    --realtime-priority 10                      # the loop thread only
    --realtime-priority loop=10,model=10,capture=5

Roles (each SCHED_FIFO at the given priority, 1-99):
- loop: the thread that runs the pipeline's loop, from the first frame to the end of the run. Its
  policy is set with SCHED_RESET_ON_FORK, so threads it starts later (crop re-detection, the
  sub-plane refiner) and processes do not inherit it; it goes back to SCHED_OTHER when run() ends.
- model: ONNX Runtime's extra intra-op threads of the plane model (`--threads 2`), the ones that
  run the model's parallel halves beside the loop. Not the anomaly or sub-plane models' threads.
  The runtime's session options keep `session.intra_op.allow_spinning` 0: a waiting intra-op
  thread blocks instead of spinning, so a FIFO one cannot keep its core busy between operators.
- capture: the capture process, set before the source opens so FFmpeg's decoder threads inherit it.

Why: on a shared 2-core box the loop's work fits in a frame period, but its wall time does not
(the capture, the frames worker and the overlay preempt it: docs/latency.md, Session 7). A FIFO
thread runs as soon as it is runnable, ahead of every normal thread on its CPU.

Safety: every role is a thread that sleeps between frames; the kernel's real-time throttling
(/proc/sys/kernel/sched_rt_runtime_us of sched_rt_period_us, 950000 of 1000000 here) keeps 5 % of
each period for normal threads even if one of them looped.

Needs root, CAP_SYS_NICE, or an RLIMIT_RTPRIO (`ulimit -r`) at least the priority asked for.
Without it the run stops before anything starts with one line (check_permission): asking for
real-time and silently running without it would make the latency figures a lie.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from engines.errors import UserError

ROLES = ("loop", "model", "capture")
MIN_PRIORITY, MAX_PRIORITY = 1, 99


@dataclass(frozen=True)
class Realtime:
    loop: int | None = None
    model: int | None = None
    capture: int | None = None

    @property
    def highest(self) -> int:
        return max(p for p in (self.loop, self.model, self.capture) if p is not None)


def is_off(spec: str | None) -> bool:
    return spec is None or str(spec).strip().lower() in ("", "off", "none", "0")


def _priority(role: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise UserError(f"--realtime-priority {role}={text}: not a priority (a whole number "
                        f"{MIN_PRIORITY}-{MAX_PRIORITY})") from None
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise UserError(f"--realtime-priority {role}={value}: out of range ({MIN_PRIORITY}-{MAX_PRIORITY})")
    return value


def parse_realtime(spec: str | None) -> Realtime | None:
    """`off` / None -> None; `N` (the loop only); or role=N pairs. Bad input: UserError (one line)."""
    if is_off(spec):
        return None
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_FIFO"):
        raise UserError("--realtime-priority needs Linux (sched_setscheduler); use off here")
    spec = str(spec).strip()
    if "=" not in spec:
        return Realtime(loop=_priority("loop", spec))
    roles: dict[str, int] = {}
    for item in spec.split(","):
        role, _, value = item.partition("=")
        role = role.strip().lower()
        if role not in ROLES:
            raise UserError(f"--realtime-priority: {item.strip()!r} is not ROLE=PRIORITY "
                            f"(roles: {', '.join(ROLES)}; e.g. loop=10,model=10)")
        if role in roles:
            raise UserError(f"--realtime-priority: {role} given twice")
        roles[role] = _priority(role, value)
    return Realtime(**roles)


def set_fifo(priority: int, native_id: int | None = None, reset_on_fork: bool = True) -> None:
    """SCHED_FIFO at `priority` for one thread (default: the calling one). OSError when not allowed."""
    policy = os.SCHED_FIFO | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)
    os.sched_setscheduler(native_id if native_id is not None else threading.get_native_id(), policy,
                          os.sched_param(priority))


def set_fifo_process(priority: int) -> None:
    """SCHED_FIFO for every thread of this process now, and (inherited) the threads they start later."""
    for tid in os.listdir("/proc/self/task"):
        try:
            set_fifo(priority, int(tid), reset_on_fork=False)
        except ProcessLookupError:
            pass                 # ended meanwhile


def set_normal(native_id: int | None = None) -> None:
    """Back to SCHED_OTHER (always allowed: lowering one's own policy needs no privilege)."""
    try:
        os.sched_setscheduler(native_id if native_id is not None else threading.get_native_id(),
                              os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass          # the thread is gone


def thread_policy(native_id: int) -> tuple[str, int]:
    """("fifo" | "rr" | "other" | ..., priority) of a thread of this process."""
    policy = os.sched_getscheduler(native_id) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    names = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr",
             getattr(os, "SCHED_BATCH", -1): "batch", getattr(os, "SCHED_IDLE", -2): "idle"}
    return names.get(policy, str(policy)), os.sched_getparam(native_id).sched_priority


def check_permission(rt: Realtime | None) -> None:
    """Try SCHED_FIFO at the highest priority asked for on a short-lived thread; one line if refused."""
    if rt is None:
        return
    failure: list[OSError] = []

    def probe() -> None:
        try:
            set_fifo(rt.highest)
        except OSError as exc:
            failure.append(exc)

    t = threading.Thread(target=probe, name="realtime-probe")
    t.start()
    t.join()
    if failure:
        exc = failure[0]
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
            limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        except (ImportError, OSError, AttributeError):
            limit = "unknown"
        raise UserError(f"--realtime-priority: real-time scheduling refused here ({exc.strerror or exc}); it needs "
                        f"root, CAP_SYS_NICE or RLIMIT_RTPRIO >= {rt.highest} (`ulimit -r` is {limit}); "
                        f"run without --realtime-priority")


def rt_throttle() -> str:
    """The kernel's real-time throttling, e.g. '950000/1000000 us'; '' when not readable."""
    try:
        with open("/proc/sys/kernel/sched_rt_runtime_us") as a, open("/proc/sys/kernel/sched_rt_period_us") as b:
            return f"{a.read().strip()}/{b.read().strip()} us"
    except OSError:
        return ""


@contextmanager
def realtime_thread(priority: int | None):
    """The calling thread at SCHED_FIFO `priority` (reset on fork) for the block; normal again after.
    None: nothing. The permission was checked before the run (check_permission); should the
    kernel refuse anyway (a cgroup without real-time runtime), the block runs normal."""
    if priority is None:
        yield False
        return
    try:
        set_fifo(priority)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        set_normal()
