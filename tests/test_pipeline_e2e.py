"""End to end: `sonoplane run` on the bundled clip, checked by an independent SUB socket."""
import json
import threading
import time

import pytest
import zmq

from engines.planes import COARSE_PLANES
from streamer import schema

from .conftest import SAMPLE_CLIP, free_port, run_cli

VALID_PLANES = set(COARSE_PLANES) | {"uncertain", "none"}


def collect(addr, stop, out):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"sonoplane.")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(addr)
    while not stop.is_set():
        try:
            out.append(schema.decode(sub.recv()))
        except zmq.Again:
            pass
    sub.close(0)


def test_run_fast_on_sample_clip(tmp_path):
    addr = f"tcp://127.0.0.1:{free_port()}"
    record = tmp_path / "run.jsonl"
    got, stop = [], threading.Event()
    t = threading.Thread(target=collect, args=(addr, stop, got))
    t.start()
    time.sleep(0.2)
    try:
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "90", "--publish", addr,
                       "--record", record)
    finally:
        time.sleep(0.3)
        stop.set()
        t.join()
    assert proc.returncode == 0, proc.stderr
    assert "90 classified" in proc.stdout and "capture->publish p50" in proc.stdout
    results = [p for topic, p in got if p["kind"] == "result"]
    frames = [p for topic, p in got if p["kind"] == "frame"]
    assert len(results) >= 80           # the subscriber may miss the first few (slow joiner)
    assert frames and all(f["jpeg"][:2] == b"\xff\xd8" for f in frames)
    idx = [r["frame"] for r in results]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    for r in results:
        assert set(schema.RESULT_FIELDS) <= set(r)
        st = r["stages"]
        assert st["capture"] <= st["preprocess"] <= st["infer"] <= st["smooth"] <= st["publish"]
        assert r["plane"] in VALID_PLANES
        assert r["skipped_total"] == 0     # --fast: nothing skipped
    # The clip opens on a brain still: the smoothed label settles on brain.
    assert results[-1]["plane"] == "brain", [r["plane"] for r in results[-10:]]
    # The JSONL has every published result.
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    recorded = [x for x in lines if x["kind"] == "result"]
    assert len(recorded) == 90 and recorded[0]["frame"] == 0
    # Frames never carry the scanner UI: they are the crop, at most 640 wide.
    assert all(f["width"] <= 640 for f in frames)


def test_native_rate_keeps_pace_and_counts_skips(tmp_path):
    record = tmp_path / "native.jsonl"
    t0 = time.monotonic()
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "90", "--publish",
                   f"tcp://127.0.0.1:{free_port()}", "--record", record, "--no-frames")
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
    assert wall >= 2.5                   # 90 frames at 30 fps: paced, not as fast as possible
    last = rows[-1]
    # Every delivered frame is either classified or counted as skipped.
    assert len(rows) + last["skipped_total"] == last["frame"] + 1
    assert sum(r["skipped_since_last"] for r in rows) == last["skipped_total"]


def test_anomaly_stage_runs_on_brain_frames_only(tmp_path):
    """--anomaly-model brain_anomaly: results whose smoothed plane is brain carry a normal / abnormal /
    uncertain verdict with its probability; the abdomen that follows carries none."""
    record = tmp_path / "anomaly.jsonl"
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "240", "--anomaly-model", "brain_anomaly",
                   "--publish", f"tcp://127.0.0.1:{free_port()}", "--record", record, "--no-frames")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
    brain = [r for r in rows if r["plane"] == "brain"]
    other = [r for r in rows if r["plane"] not in ("brain", None)]
    assert brain and other, "the clip opens on a brain, then an abdomen"
    assert all(r["anomaly"]["state"] in ("normal", "abnormal", "uncertain") for r in brain)
    assert all(0.0 <= r["anomaly"]["p_abnormal"] <= 1.0 and r["anomaly"]["model"] == "brain_anomaly" for r in brain)
    assert all(r["anomaly"] is None for r in other)


@pytest.mark.parametrize("name, size", [("planes_lite0_160", (160, 120)), ("planes_lite0_128", (128, 96))])
def test_named_smaller_input_models_run_the_runtime_path(tmp_path, name, size):
    """`--model planes_lite0_160` / `planes_lite0_128` (distilled from planes_lite0 at a smaller input,
    engines/zoo/NAME.md): load by name, run the real pipeline at their own input size with their open-set fit,
    and name the bundled clip's brain and then its abdomen (as planes_lite0 does on the same frames)."""
    from engines.metadata import read_model_info
    from engines.zoo import resolve
    info = read_model_info(resolve(name))
    assert (info.width, info.height) == size and info.extra.get("open_set", {}).get("threshold")
    record = tmp_path / f"{name}.jsonl"
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "240", "--model", name,
                   "--publish", f"tcp://127.0.0.1:{free_port()}", "--record", record, "--no-frames")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
    assert len(rows) == 240 and all(r["model"]["id"] == name for r in rows)
    assert all(r["open_set"] is not None for r in rows if r["topk"])
    shown = [r["plane"] for r in rows]
    assert shown[60] == "brain" and shown[180] == "abdomen", shown[::20]   # brain to ~119, abdomen to ~239
