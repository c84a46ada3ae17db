"""ZeroMQ message schema, version 1 (documented in docs/messages.md).

Every message is ONE ZeroMQ frame: `TOPIC + b" " + msgpack(payload)`. The topic sits inside the
frame (no multipart) so a subscriber may set ZMQ_CONFLATE and keep only the newest message;
ZeroMQ's prefix subscription still filters on it.

Topics:
    b"sonoplane.result.<stream>"   one per classified frame: the full current state
    b"sonoplane.frame.<stream>"    downscaled JPEG of the cropped-scanner frame, for the overlay
    b"sonoplane.status.<stream>"   source status changes (connecting, live, reconnecting, ended, error)
    b"sonoplane.exam.<stream>"     exam state (as DIR/exam.json), on every change and once a second
"""
from __future__ import annotations

from typing import Any

import msgpack

SCHEMA_VERSION = 1
TOPIC_PREFIX = "sonoplane"
RESULT, FRAME, STATUS, EXAM = "result", "frame", "status", "exam"
KINDS = (RESULT, FRAME, STATUS, EXAM)

# Fields a result payload always has (docs/messages.md describes each).
RESULT_FIELDS = (
    "v", "kind", "stream", "frame", "t_capture_mono", "t_capture_wall", "stages", "model",
    "topk", "plane", "label", "confidence", "flags", "anomaly", "skipped_total",
    "skipped_since_last", "source", "crop",
)
FLAG_NAMES = ("uncertain", "none", "frozen", "stale")
SOURCE_STATES = ("connecting", "live", "stalled", "reconnecting", "ended", "error")


class SchemaError(ValueError):
    """A message that does not follow this schema."""


def topic(kind: str, stream: str = "") -> bytes:
    if kind not in KINDS:
        raise SchemaError(f"unknown message kind {kind!r}")
    return f"{TOPIC_PREFIX}.{kind}.{stream}".encode() if stream else f"{TOPIC_PREFIX}.{kind}.".encode()


def encode(kind: str, stream: str, payload: dict[str, Any]) -> bytes:
    body = {"v": SCHEMA_VERSION, "kind": kind, "stream": stream, **payload}
    if kind == RESULT:
        missing = [f for f in RESULT_FIELDS if f not in body]
        if missing:
            raise SchemaError(f"result message lacks {', '.join(missing)}")
    return topic(kind, stream) + b" " + msgpack.packb(body, use_bin_type=True)


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """-> (topic, payload). Raises SchemaError for foreign or newer-major messages."""
    head, sep, body = bytes(frame).partition(b" ")
    if not sep or not head.startswith(TOPIC_PREFIX.encode() + b"."):
        raise SchemaError("not a sonoplane message")
    try:
        payload = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several types
        raise SchemaError(f"undecodable payload: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("v") != SCHEMA_VERSION:
        raise SchemaError(f"unsupported schema version {payload.get('v') if isinstance(payload, dict) else '?'}")
    return head.decode(), payload
