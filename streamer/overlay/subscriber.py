"""Overlay-side ZeroMQ subscriber: newest result and newest frame, nothing queued behind them."""
from __future__ import annotations

import time

import cv2
import numpy as np
import zmq

from .. import schema
from ..netsec import secure_subscriber


# The publisher's CURVE public key file (`sonoplane overlay --curve-server-key`), None: plain.
CURVE_SERVER_KEY: str | None = None


class OverlaySubscriber:
    """Two SUB sockets with CONFLATE (one per topic: CONFLATE keeps one message per socket)."""

    def __init__(self, connect: str = "tcp://127.0.0.1:5555", stream: str = ""):
        self.ctx = zmq.Context.instance()
        self.poller = zmq.Poller()
        self.sockets = {}
        for kind in (schema.RESULT, schema.FRAME, schema.STATUS, schema.EXAM):
            sock = self.ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.CONFLATE, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, schema.topic(kind, stream))
            secure_subscriber(sock, CURVE_SERVER_KEY)   # a CURVE publisher beyond loopback
            sock.connect(connect)
            self.poller.register(sock, zmq.POLLIN)
            self.sockets[sock] = kind
        self.result: dict | None = None
        self.result_received: float | None = None
        self.frame: np.ndarray | None = None
        self.frame_index: int | None = None
        self.frame_jpeg: bytes | None = None      # as published (the web page forwards it undecoded)
        self.frame_seq = 0
        self.exam: dict | None = None             # exam state (sonoplane.exam.<stream>), when an exam runs
        self.status: dict | None = None
        self.bad_messages = 0
        self.results_received = 0

    def poll(self, timeout_ms: int = 50) -> bool:
        """Take whatever arrived; True if anything new."""
        got = False
        for sock, _ in self.poller.poll(timeout_ms):
            try:
                _, payload = schema.decode(sock.recv(zmq.NOBLOCK))
            except (zmq.Again, schema.SchemaError):
                self.bad_messages += 1
                continue
            got = True
            kind = payload.get("kind")
            if kind == schema.RESULT:
                self.result, self.result_received = payload, time.monotonic()
                self.results_received += 1
            elif kind == schema.FRAME:
                img = cv2.imdecode(np.frombuffer(payload.get("jpeg", b""), np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    self.bad_messages += 1
                else:
                    self.frame, self.frame_index = img, payload.get("frame")
                    self.frame_jpeg, self.frame_seq = bytes(payload["jpeg"]), self.frame_seq + 1
            elif kind == schema.EXAM:
                self.exam = payload
            elif kind == schema.STATUS:
                self.status = payload
                # A status from a source that is not live makes the last result stale at once.
                if self.result is not None and payload.get("state") != "live":
                    self.result = {**self.result, "source": {**(self.result.get("source") or {}),
                                                             "state": payload.get("state")}}
        return got

    @property
    def ended(self) -> bool:
        return bool(self.status and self.status.get("state") in ("ended", "error"))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(0)
