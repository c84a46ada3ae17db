"""ZeroMQ publishing of results, frames and status (schema: streamer/schema.py, docs/messages.md)."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import zmq

from engines.downscale import downscale_to_width

from . import schema
from .frames_topic import FramesWorker
from .netsec import bind_publisher
from engines.errors import UserError

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
FRAME_MAX_WIDTH = 640
CLOSE_LINGER_MS = 1000


class Publisher:
    def __init__(self, address: str = DEFAULT_ADDRESS, stream: str = "0", send_frames: bool = True,
                 record_path: str | None = None, frames_fps: float | None = None,
                 frames_worker: bool = False, security: dict | None = None, frames_nice: int = 0):
        self.stream = stream
        self.send_frames = send_frames
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        # PUB never blocks: beyond the high-water mark it drops the NEWEST messages for that
        # subscriber, so the mark must sit above any burst (~3 s of results+frames). Subscribers
        # that want only the newest use CONFLATE, which drains the queue continuously.
        self.sock.setsockopt(zmq.SNDHWM, 200)
        self.sock.setsockopt(zmq.LINGER, 200)
        try:   # validated (port range, loopback or CURVE/--insecure: streamer/netsec.py), then bound
            self.address = bind_publisher(self.sock, address, **(security or {}))
        except UserError:
            self.sock.close(0)
            raise
        self.record = open(record_path, "w") if record_path else None
        self.sent = 0
        # ZeroMQ sockets are not thread-safe: the frames worker sends under this lock too.
        self.send_lock = threading.Lock()
        # frames_nice: the worker thread's lower CPU priority (streamer/frames_topic.py THREAD_NICE).
        self.frames = FramesWorker(self._send_frame, frames_fps, nice=frames_nice) \
            if send_frames and frames_worker else None

    @classmethod
    def sharing(cls, owner: "Publisher", stream: str, record_path: str | None = None,
                frames_fps: float | None = None) -> "Publisher":
        """Another stream id on `owner`'s socket (one address for several streams: multistream);
        sends go under the owner's lock; the socket closes with the last of them."""
        pub = cls.__new__(cls)
        pub.stream, pub.send_frames, pub.ctx, pub.sock = stream, owner.send_frames, owner.ctx, owner.sock
        pub.address, pub.sent, pub.send_lock, pub._owner = owner.address, 0, owner.send_lock, owner
        with owner.send_lock:
            owner._users = getattr(owner, "_users", 1) + 1
        pub.record = open(record_path, "w") if record_path else None
        pub.frames = FramesWorker(pub._send_frame, frames_fps, nice=owner.frames.nice) \
            if owner.frames is not None else None
        return pub

    def _send(self, message) -> None:
        with self.send_lock:
            self.sock.send(message, copy=False)

    def result(self, payload: dict) -> None:
        self._send(schema.encode(schema.RESULT, self.stream, payload))
        self.sent += 1
        if self.record is not None:
            self.record.write(json.dumps({"v": schema.SCHEMA_VERSION, "kind": schema.RESULT,
                                          "stream": self.stream, **payload}, default=_jsonable) + "\n")

    def frame(self, image: np.ndarray, frame_index: int, t_capture_mono: float, crop: list[int]) -> None:
        """With the frames worker (sonoplane run), hands `image` over by reference: the caller
        must not modify it afterwards."""
        if not self.send_frames:
            return
        if self.frames is not None:
            self.frames.submit(image, frame_index, t_capture_mono, crop)
        else:
            self._send_frame(image, frame_index, t_capture_mono, crop)

    def _send_frame(self, image: np.ndarray, frame_index: int, t_capture_mono: float, crop: list[int],
                    source_width: int | None = None) -> None:
        """source_width: the crop's width in source pixels when `image` is already a smaller copy
        of it (the message's `scale` is JPEG pixels per source pixel)."""
        h, w = image.shape[:2]
        # Halvings, then one linear step of less than 2x: a direct INTER_AREA from a 1080p crop
        # to 640 wide costs several ms (engines/downscale.py).
        small = downscale_to_width(image, FRAME_MAX_WIDTH, cv2.INTER_LINEAR)
        scale = small.shape[1] / (source_width or w)
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return
        self._send(schema.encode(schema.FRAME, self.stream, {
            "frame": frame_index, "t_capture_mono": t_capture_mono, "jpeg": jpeg.tobytes(),
            "width": small.shape[1], "height": small.shape[0], "scale": scale, "crop": crop}))

    def status(self, payload: dict) -> None:
        self._send(schema.encode(schema.STATUS, self.stream, payload))
        if self.record is not None:
            self.record.write(json.dumps({"v": schema.SCHEMA_VERSION, "kind": schema.STATUS,
                                          "stream": self.stream, **payload}, default=_jsonable) + "\n")

    def exam(self, payload: dict) -> None:
        """Exam state (streamer/exam): the same document as DIR/exam.json."""
        self._send(schema.encode(schema.EXAM, self.stream, payload))

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()
        if self.record is not None:
            self.record.close()
            self.record = None
        owner = getattr(self, "_owner", self)
        with owner.send_lock:
            owner._users = getattr(owner, "_users", 1) - 1
            last = owner._users == 0
        if last:   # linger: the final status still reaches subscribers after close
            owner.sock.close(linger=CLOSE_LINGER_MS)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, bytes):
        return None
    raise TypeError(f"not JSON serialisable: {type(x)}")
