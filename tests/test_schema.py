import time

import pytest
import zmq

from streamer import schema
from streamer.publish import Publisher

from .conftest import free_port


def result_payload(i=0):
    return {"frame": i, "t_capture_mono": 1.0, "t_capture_wall": 2.0,
            "stages": {"capture": 1.0, "preprocess": 1.01, "infer": 1.02, "smooth": 1.03, "publish": 1.04},
            "model": {"id": "m", "sha256": "abc", "backend": "onnxruntime"}, "topk": [["Femur", 0.9, "femur"]],
            "plane": "femur", "label": "Femur", "confidence": 0.9,
            "flags": {"uncertain": False, "none": False, "frozen": False, "stale": False},
            "anomaly": None, "skipped_total": 0, "skipped_since_last": 0,
            "source": {"url": "x", "state": "live"}, "crop": [0, 0, 10, 10], "fps": 30.0}


def test_round_trip():
    msg = schema.encode(schema.RESULT, "s1", result_payload(7))
    assert msg.startswith(b"sonoplane.result.s1 ")
    topic, payload = schema.decode(msg)
    assert topic == "sonoplane.result.s1"
    assert payload["frame"] == 7 and payload["v"] == schema.SCHEMA_VERSION and payload["stream"] == "s1"
    assert payload["topk"] == [["Femur", 0.9, "femur"]]


def test_incomplete_result_and_foreign_messages_are_rejected():
    bad = result_payload()
    del bad["plane"]
    with pytest.raises(schema.SchemaError):
        schema.encode(schema.RESULT, "0", bad)
    with pytest.raises(schema.SchemaError):
        schema.decode(b"other.topic hello")
    newer = schema.topic(schema.RESULT, "0") + b" " + __import__("msgpack").packb({"v": 99})
    with pytest.raises(schema.SchemaError):
        schema.decode(newer)


def test_conflating_subscriber_gets_only_the_newest():
    addr = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(addr, "0")
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.CONFLATE, 1)
    sub.setsockopt(zmq.SUBSCRIBE, schema.topic(schema.RESULT, "0"))
    sub.connect(addr)
    time.sleep(0.3)
    for i in range(50):
        pub.result(result_payload(i))
    time.sleep(0.3)
    _, payload = schema.decode(sub.recv())
    assert payload["frame"] == 49
    with pytest.raises(zmq.Again):
        sub.recv(zmq.NOBLOCK)
    sub.close(0)
    pub.close()
