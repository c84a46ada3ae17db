"""Annotated MP4 output (H.264 via PyAV) and the overlay's record loop.

`record_overlay(connect, out_path, stop_event, fps=30, stale_after_s=0.5, size=(1280, 720))`
runs until stop_event is set (or the publisher reports the end), rendering the newest state at a
fixed rate: the MP4 shows what a screen would have shown, stale periods included.
"""
from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .render import render_overlay
from .subscriber import OverlaySubscriber


class Mp4Recorder:
    def __init__(self, path: str | Path, fps: float = 30, size: tuple[int, int] | None = None):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.size = size
        self.container = av.open(str(self.path), "w")
        self.stream = None
        self.frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        import av

        if self.stream is None:
            if self.size is None:
                self.size = (frame_bgr.shape[1] // 2 * 2, frame_bgr.shape[0] // 2 * 2)
            self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "23", "preset": "veryfast"}
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame_bgr, format="bgr24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        self.container = None


def record_overlay(connect: str, out_path: str | Path, stop_event: threading.Event, fps: float = 30,
                   stale_after_s: float = 0.5, size: tuple[int, int] = (1280, 720),
                   stream: str = "", duration_s: float | None = None) -> int:
    """Subscribe, render and record until stopped; returns frames written."""
    sub = OverlaySubscriber(connect, stream)
    rec = Mp4Recorder(out_path, fps, size)
    period = 1.0 / fps
    t_next = time.monotonic()
    t_end = None if duration_s is None else t_next + duration_s
    ended_at = None
    try:
        while not stop_event.is_set():
            sub.poll(timeout_ms=max(0, int((t_next - time.monotonic()) * 1000)))
            now = time.monotonic()
            if now < t_next:
                continue
            if sub.results_received:   # start recording with the first result
                rec.write(render_overlay(sub.frame, sub.result, now, sub.result_received, stale_after_s, size,
                                          exam=sub.exam))
            t_next += period
            if now - t_next > 1.0:     # fell behind (slow machine): skip ahead, don't burst
                t_next = now + period
            if t_end is not None and now >= t_end:
                break
            if sub.ended:
                ended_at = ended_at or now
                if now - ended_at > 0.5:
                    break
    finally:
        rec.close()
        sub.close()
    return rec.frames
