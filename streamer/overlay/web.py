"""Web overlay on 127.0.0.1: `/` page, `/stream.mjpg` (MJPEG of the rendered overlay), `/state.json`.

Standard library only. The subscriber loop renders the newest overlay into a single slot; every
HTTP client thread reads the newest slot, so a slow browser gets fewer frames, never old ones.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from engines.errors import UserError
from .render import is_stale, render_overlay
from .subscriber import OverlaySubscriber

PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()


class OverlayState:
    def __init__(self):
        self.cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.state: dict = {"plane": None, "stale": True, "state_text": "NO SIGNAL"}


def state_summary(result: dict | None, now: float, received: float | None, stale_after_s: float) -> dict:
    stale, why = is_stale(result, now, received, stale_after_s)
    r = result or {}
    flags = r.get("flags") or {}
    text = why if stale else ("NO IMAGE" if flags.get("none") else "FROZEN" if flags.get("frozen")
                              else "UNCERTAIN" if flags.get("uncertain") else "LIVE")
    st = r.get("stages") or {}
    return {"plane": r.get("plane"), "label": r.get("label"), "confidence": r.get("confidence"),
            "topk": r.get("topk"), "anomaly": r.get("anomaly"), "stale": stale, "state_text": text,
            "frame": r.get("frame"), "fps": r.get("fps", 0.0),
            "latency_ms": (st["publish"] - st["capture"]) * 1e3 if "publish" in st else None}


def _handler(shared: OverlayState, stop: threading.Event):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # quiet: one line per request is noise on a scanner box
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif path == "/state.json":
                with shared.cond:
                    body = json.dumps(shared.state).encode()
                self._send(200, "application/json", body)
            elif path == "/stream.mjpg":
                self._mjpeg()
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code, ctype, body):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _mjpeg(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = -1
            try:
                while not stop.is_set():
                    with shared.cond:
                        shared.cond.wait_for(lambda: shared.seq != seen or stop.is_set(), timeout=1.0)
                        jpeg, seen = shared.jpeg, shared.seq
                    if jpeg is None:
                        continue
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def serve_web(connect: str, bind: str, stop: threading.Event, stale_after_s: float = 0.5,
              fps: float = 15, stream: str = "", size: tuple[int, int] = (1280, 720),
              on_ready=None) -> None:
    host, _, port = bind.rpartition(":")
    host = host or "127.0.0.1"
    try:
        server = ThreadingHTTPServer((host, int(port)), _handler(shared := OverlayState(), stop))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot serve the web overlay on {bind}: {exc}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="overlay-http", daemon=True)
    thread.start()
    if on_ready:
        on_ready(f"http://{host}:{server.server_address[1]}/")
    sub = OverlaySubscriber(connect, stream)
    period = 1.0 / fps
    try:
        while not stop.is_set():
            sub.poll(timeout_ms=int(period * 1000))
            now = time.monotonic()
            img = render_overlay(sub.frame, sub.result, now, sub.result_received, stale_after_s, size)
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
            with shared.cond:
                shared.state = state_summary(sub.result, now, sub.result_received, stale_after_s)
                if ok:
                    shared.jpeg, shared.seq = jpeg.tobytes(), shared.seq + 1
                shared.cond.notify_all()
    finally:
        stop.set()
        with shared.cond:
            shared.cond.notify_all()
        server.shutdown()
        server.server_close()
        sub.close()
