"""OpenCV's own thread pool in the sonoplane process (`sonoplane run --opencv-threads`).

OpenCV splits a resize or a colour conversion over all cores by default. On the 2-core box that
helps no one: the other core is already busy with the decode, the model or the frames worker, and
OpenCV's helper thread spins (sched_yield) while it waits for work, so the split costs more CPU
than it saves. Measured (docs/latency.md, Session 7): that helper thread alone took ~1.5 ms of CPU
per 1080p60 frame, the "unexplained rest of the process" of Session 6's budget. One thread (the
default) runs each OpenCV call on the thread that makes it. The pixels are the same whatever the
count: every call computes each output pixel the same way, only the split of rows changes
(tests/test_cvthreads.py).
"""
from __future__ import annotations

DEFAULT_OPENCV_THREADS = 1


def set_opencv_threads(n: int | None) -> None:
    """n >= 1: OpenCV runs on at most n threads (1: on the calling thread only); 0 or None:
    OpenCV's own default (one thread per core)."""
    import cv2
    cv2.setNumThreads(int(n) if n and n > 0 else -1)
