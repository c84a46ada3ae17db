"""Several sources in one `sonoplane run`: one model session, cross-stream batching, per-stream ids."""
import json
import threading
import time

import numpy as np
import pytest

from engines.backends import create_backend
from engines.errors import UserError
from engines.zoo import resolve
from streamer.multistream import BatchingBackend, record_path, stream_ids

from .conftest import SAMPLE_CLIP, free_port, run_cli


@pytest.fixture(scope="module")
def backend():
    return create_backend("onnxruntime", resolve(None))


def _inputs(info, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, info.channels, info.height, info.width)).astype(np.float32) for _ in range(n)]


def test_shipped_default_model_takes_a_batch_equal_to_single_calls(backend):
    xs = _inputs(backend.info, 3)
    batch = backend.infer(np.concatenate(xs))
    assert batch.logits.shape[0] == 3
    for k, x in enumerate(xs):
        np.testing.assert_allclose(batch.logits[k], backend.infer(x).logits[0], rtol=1e-4, atol=1e-4)


def test_calls_that_meet_run_as_one_batch_and_each_gets_its_own_result(backend):
    bb = BatchingBackend(backend)
    xs = _inputs(backend.info, 3, seed=1)
    got = [None] * 3
    with bb._lock:
        bb._running = True            # a call in flight: the next ones queue behind it
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, bb.infer(xs[k]))) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(bb._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(bb._pending) == 3
    bb._run_batch()                   # what the in-flight call does when it ends
    for t in threads:
        t.join(5)
    assert bb.calls == 1 and bb.frames == 3 and bb.batch_sizes == {3: 1}
    for k in range(3):
        np.testing.assert_allclose(got[k].logits[0], backend.infer(xs[k]).logits[0], rtol=1e-4, atol=1e-4)
        assert got[k].cam is None or got[k].cam.shape[0] == 1
    assert not bb._running


def test_concurrent_callers_all_get_their_results(backend):
    bb = BatchingBackend(backend)
    xs = _inputs(backend.info, 4, seed=2)
    ref = [backend.infer(x).logits[0] for x in xs]
    got = [[] for _ in xs]
    start = threading.Barrier(4)

    def stream(k):
        start.wait()
        for _ in range(10):
            got[k].append(bb.infer(xs[k]).logits[0])

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert bb.frames == 40 and bb.calls <= 40
    for k in range(4):
        assert len(got[k]) == 10
        for logits in got[k]:
            np.testing.assert_allclose(logits, ref[k], rtol=1e-4, atol=1e-4)


def test_stream_ids_and_record_paths():
    assert stream_ids("0", 3) == ["0", "1", "2"]
    assert stream_ids("a,b", 2) == ["a", "b"]
    with pytest.raises(UserError):
        stream_ids("a,b", 3)
    with pytest.raises(UserError):
        stream_ids("a,a", 2)
    assert record_path("/tmp/run.jsonl", "b") == "/tmp/run.b.jsonl"
    assert record_path(None, "b") is None


def test_run_with_two_sources_publishes_each_stream(tmp_path):
    record = tmp_path / "run.jsonl"
    r = run_cli("run", "--source", SAMPLE_CLIP, "--source", SAMPLE_CLIP, "--fast", "--max-frames", "45",
                "--no-frames", "--stream-id", "left,right", "--record", record,
                "--publish", f"tcp://127.0.0.1:{free_port()}", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "session calls" in r.stdout
    for sid in ("left", "right"):
        rows = [json.loads(x) for x in (tmp_path / f"run.{sid}.jsonl").read_text().splitlines()]
        results = [x for x in rows if x["kind"] == "result"]
        assert len(results) == 45
        assert {x["stream"] for x in rows} == {sid}
        assert {x["plane"] for x in results} & {"brain", "abdomen", "none", "uncertain"}


def test_run_with_a_missing_second_source_is_one_line(tmp_path):
    r = run_cli("run", "--source", SAMPLE_CLIP, "--source", tmp_path / "nope.mp4", "--fast")
    assert r.returncode != 0 and "nope.mp4" in r.stderr and "Traceback" not in r.stderr
