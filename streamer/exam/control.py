"""Operator control endpoint: ZeroMQ REP on loopback, one JSON object per request and per reply.

    {"op": "state"}                                  -> {"ok": true, "exam": {...exam.json...}}
    {"op": "new"}                                    end + archive the current exam, start a new one
    {"op": "end"}                                    end the exam, write report.html
    {"op": "reject", "view": "femur", "capture": 0}  drop a kept capture (default the best)
    {"op": "manual", "view": "femur"}                mark the view done by hand (keeps the next frame)

Every reply is {"ok": true, ...} or {"ok": false, "error": "one line"}; a malformed request
changes nothing. Why REP: request/reply with one outstanding request per client is exactly a
button press, and pyzmq is already a runtime dependency (no second server in the pipeline).
"""
from __future__ import annotations

import json
import threading
from urllib.parse import urlparse

import zmq

from engines.errors import UserError

from .session import ControlError, ExamSession

DEFAULT_CONTROL = "tcp://127.0.0.1:5556"
OPS = ("state", "new", "end", "reject", "manual")
MAX_REQUEST = 4096
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_loopback(address: str) -> None:
    parsed = urlparse(address)
    if parsed.scheme == "ipc":
        return
    if parsed.scheme != "tcp" or parsed.hostname not in LOOPBACK:
        raise UserError(f"--exam-control {address}: the control endpoint binds loopback only "
                        "(tcp://127.0.0.1:PORT or ipc://PATH)")


def handle_request(session: ExamSession, raw: bytes) -> dict:
    """One request -> one reply; never raises for bad input."""
    if len(raw) > MAX_REQUEST:
        return {"ok": False, "error": f"request too long ({len(raw)} bytes, max {MAX_REQUEST})"}
    try:
        req = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"ok": False, "error": f"request is not JSON ({exc})"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "request must be a JSON object like {\"op\": \"end\"}"}
    op = req.get("op")
    if op not in OPS:
        return {"ok": False, "error": f"unknown op {op!r} (one of {', '.join(OPS)})"}
    unknown = set(req) - {"op", "view", "capture"}
    if unknown:
        return {"ok": False, "error": f"unknown field(s) {', '.join(sorted(unknown))}"}
    try:
        if op == "new":
            session.new()
        elif op == "end":
            session.end()
        elif op == "reject":
            session.reject(req.get("view"), req.get("capture", 0))
        elif op == "manual":
            session.mark_manual(req.get("view"))
    except ControlError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "exam": session.snapshot()}


class ControlServer:
    """REP socket served on its own thread (ZeroMQ sockets are not shared between threads)."""

    def __init__(self, session: ExamSession, address: str = DEFAULT_CONTROL):
        check_loopback(address)
        self.session = session
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST * 4)
        try:
            self.sock.bind(address)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise UserError(f"cannot bind the exam control endpoint {address}: {exc}") from None
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="exam-control", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                if not self.sock.poll(100):
                    continue
                raw = self.sock.recv()
                self.sock.send(json.dumps(handle_request(self.session, raw)).encode())
        finally:
            self.sock.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def control_request(address: str, request: dict | bytes, timeout_ms: int = 3000) -> dict:
    """Client side (the web overlay, tests): one request, one reply."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        sock.connect(address)
        sock.send(request if isinstance(request, bytes) else json.dumps(request).encode())
        return json.loads(sock.recv())
    except zmq.Again:
        return {"ok": False, "error": f"exam control endpoint {address} did not answer"}
    finally:
        sock.close(0)
