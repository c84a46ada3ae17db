"""ZeroMQ publishing of results, frames and status (schema: streamer/schema.py, docs/messages.md)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import zmq

from . import schema
from engines.errors import UserError

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
FRAME_MAX_WIDTH = 640


class Publisher:
    def __init__(self, address: str = DEFAULT_ADDRESS, stream: str = "0", send_frames: bool = True,
                 record_path: str | None = None):
        self.stream = stream
        self.send_frames = send_frames
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        # PUB never blocks: beyond the high-water mark it drops the NEWEST messages for that
        # subscriber, so the mark must sit above any burst (~3 s of results+frames). Subscribers
        # that want only the newest use CONFLATE, which drains the queue continuously.
        self.sock.setsockopt(zmq.SNDHWM, 200)
        self.sock.setsockopt(zmq.LINGER, 200)
        try:
            self.sock.bind(address)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise UserError(f"cannot publish on {address}: {exc}") from None
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.record = open(record_path, "w") if record_path else None
        self.sent = 0

    def result(self, payload: dict) -> None:
        self.sock.send(schema.encode(schema.RESULT, self.stream, payload), copy=False)
        self.sent += 1
        if self.record is not None:
            self.record.write(json.dumps({"v": schema.SCHEMA_VERSION, "kind": schema.RESULT,
                                          "stream": self.stream, **payload}, default=_jsonable) + "\n")

    def frame(self, image: np.ndarray, frame_index: int, t_capture_mono: float, crop: list[int]) -> None:
        if not self.send_frames:
            return
        h, w = image.shape[:2]
        scale = min(1.0, FRAME_MAX_WIDTH / w)
        small = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else image
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return
        self.sock.send(schema.encode(schema.FRAME, self.stream, {
            "frame": frame_index, "t_capture_mono": t_capture_mono, "jpeg": jpeg.tobytes(),
            "width": small.shape[1], "height": small.shape[0], "scale": scale, "crop": crop}), copy=False)

    def status(self, payload: dict) -> None:
        self.sock.send(schema.encode(schema.STATUS, self.stream, payload), copy=False)
        if self.record is not None:
            self.record.write(json.dumps({"v": schema.SCHEMA_VERSION, "kind": schema.STATUS,
                                          "stream": self.stream, **payload}, default=_jsonable) + "\n")

    def exam(self, payload: dict) -> None:
        """Exam state (streamer/exam): the same document as DIR/exam.json."""
        self.sock.send(schema.encode(schema.EXAM, self.stream, payload), copy=False)

    def close(self) -> None:
        if self.record is not None:
            self.record.close()
            self.record = None
        self.sock.close()


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, bytes):
        return None
    raise TypeError(f"not JSON serialisable: {type(x)}")
