"""The frames topic off the hot path: resize + JPEG + send on a worker thread, at most N per second.

At 1080p60 the frames topic's downscale and JPEG cost as much as the model; in the loop they push
every frame past its frame period. The loop now only hands the image over (a reference: the
caller must not modify it afterwards; the live loop's crops are views of a frame it owns and
never reuses) and the worker encodes and sends it. A display refreshes at 30-60 Hz and the
overlay draws the newest frame only, so `fps` (sonoplane run --frames-fps, default 30) throttles
by capture time; when the worker is still busy, the newest hand-over replaces a waiting one.
OpenCV and ZeroMQ release the GIL while they work, so the worker runs beside the loop.

At native rate (`sonoplane run` without --fast) the worker thread runs at a lower CPU priority
(Linux: nice +THREAD_NICE for this thread only): when the cores are short, classifying every frame
comes before showing every frame. On a free core it still sends its 30 per second; on a saturated
2-core box it sends fewer (newest wins) and the loop classifies more (docs/latency.md: +11 points
of frames classified, p99 x0.78, at load 6). --fast has no deadline: the worker keeps the loop's
priority there.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

THREAD_NICE = 10     # added to the worker thread's nice value (0: same priority as the loop)


def worker_nice(fast: bool) -> int:
    """The frames worker's nice increment for a run: lower priority at native rate, none with --fast."""
    return 0 if fast else THREAD_NICE


class FramesWorker:
    def __init__(self, send: Callable[..., None], fps: float | None = 30.0, nice: int = 0):
        self.send = send
        self.nice = nice
        self.native_id: int | None = None   # the worker thread's id, once it runs
        self.cpus: tuple[int, ...] | None = None   # pin(): the CPUs this thread may run on
        # Applied on the worker before sending: prepare(handed-over object) -> (image to send, width
        # in source pixels of the crop it shows). The pipeline's colour conversion and redaction of
        # burned-in text (ms per 1080p crop) belong here, not on the per-frame path.
        self.prepare: Callable | None = None
        self.min_interval_s = 1.0 / fps if fps and fps > 0 else 0.0
        self._cond = threading.Condition()
        self._pending: tuple | None = None
        self._last_t: float | None = None
        self._stop = False
        self.sent = 0
        self.throttled = 0       # left out by the rate limit
        self.replaced = 0        # overtaken by a newer frame while the worker was busy
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="frames-topic", daemon=True)
        self._thread.start()

    def submit(self, image, frame_index: int, t_capture_mono: float, crop) -> bool:
        """Queue a frame for sending; False when the rate limit leaves it out."""
        # 5 % slack: a 60 fps source at a 30 fps limit sends every other frame, not every third.
        if self._last_t is not None and 0 <= t_capture_mono - self._last_t < 0.95 * self.min_interval_s:
            self.throttled += 1
            return False
        self._last_t = t_capture_mono
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = (image, frame_index, t_capture_mono, crop)
            self._cond.notify()
        return True

    def _lower_priority(self) -> None:
        """This thread only: on Linux a thread id is a valid target of setpriority."""
        if self.nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
        except OSError:
            pass                       # not allowed here: run at the loop's priority

    def pin(self, cpus: tuple[int, ...] | None) -> None:
        """Run this worker on `cpus` only (sonoplane run --cpu-affinity, streamer/affinity.py)."""
        from .affinity import pin_thread
        self.cpus = cpus            # written before native_id is read, _run the other way round:
        if self.native_id is not None:   # whichever runs second pins the thread
            pin_thread(cpus, self.native_id)

    def _run(self) -> None:
        self._lower_priority()
        self.native_id = threading.get_native_id()
        if self.cpus:
            from .affinity import pin_thread
            pin_thread(self.cpus)
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._pending is None:
                    return
                job, self._pending = self._pending, None
            try:
                if self.prepare is not None:
                    image, source_width = self.prepare(job[0])
                    self.send(image, *job[1:], source_width=source_width)
                else:
                    self.send(*job)
                self.sent += 1
            except Exception:          # a bad frame must not kill the topic; counted
                self.errors += 1

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is waiting, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)
