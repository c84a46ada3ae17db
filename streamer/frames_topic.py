"""The frames topic off the hot path: resize + JPEG + send on a worker thread, at most N per second.

At 1080p60 the frames topic's downscale and JPEG cost as much as the model; in the loop they push
every frame past its frame period. The loop now only hands the image over (a reference: the
caller must not modify it afterwards; the live loop's crops are views of a frame it owns and
never reuses) and the worker encodes and sends it. A display refreshes at 30-60 Hz and the
overlay draws the newest frame only, so `fps` (sonoplane run --frames-fps, default 30) throttles
by capture time; when the worker is still busy, the newest hand-over replaces a waiting one.
OpenCV and ZeroMQ release the GIL while they work, so the worker runs beside the loop.
"""
from __future__ import annotations

import threading
from typing import Callable


class FramesWorker:
    def __init__(self, send: Callable[..., None], fps: float | None = 30.0):
        self.send = send
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

    def _run(self) -> None:
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
