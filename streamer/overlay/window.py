"""OpenCV window output, where there is a screen."""
from __future__ import annotations

import os
import threading
import time

import cv2

from engines.errors import UserError
from .render import render_overlay
from .subscriber import OverlaySubscriber

WINDOW = "sonoplane"


def check_display() -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise UserError("no screen here (DISPLAY is not set): use --record OUT.mp4 or --web 127.0.0.1:8090")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise UserError("this OpenCV has no window support (opencv-python-headless): "
                        "pip install opencv-python, or use --record / --web") from None


def show_window(connect: str, stop: threading.Event, stale_after_s: float = 0.5, fps: float = 30,
                stream: str = "", size: tuple[int, int] = (1280, 720)) -> None:
    check_display()
    sub = OverlaySubscriber(connect, stream)
    try:
        while not stop.is_set():
            sub.poll(timeout_ms=int(1000 / fps))
            cv2.imshow(WINDOW, render_overlay(sub.frame, sub.result, time.monotonic(), sub.result_received,
                                              stale_after_s, size, exam=sub.exam))
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                break
    finally:
        sub.close()
        cv2.destroyAllWindows()
