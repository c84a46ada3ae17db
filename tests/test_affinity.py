"""CPU pinning (`sonoplane run --cpu-affinity`) and decoder threading (`--decode-threads`), issue 11."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from engines.errors import SourceError, UserError
from streamer.affinity import Affinity, parse_affinity
from streamer.sources import open_source, parse_decode_threads, resolve_decode_threads

from .conftest import ROOT, SAMPLE_CLIP
from .test_realtime import needs_realtime

linux_two_cpus = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or
                                    not {0, 1} <= set(os.sched_getaffinity(0)),
                                    reason="needs Linux with CPUs 0 and 1")


@linux_two_cpus
def test_affinity_specs():
    assert parse_affinity(None) is None and parse_affinity("off") is None
    assert parse_affinity("auto") == Affinity(capture=(0,), loop=(1,), model=(0,), workers=(0,))
    # a real-time loop: the Python workers go beside it (a worker holding the GIL must not starve on core 0)
    assert parse_affinity("auto", realtime_loop=True) == Affinity(capture=(0,), loop=(1,), model=(0,), workers=(1,))
    assert parse_affinity("loop=1,workers=0", realtime_loop=True).workers == (0,)   # explicit roles stay as given
    aff = parse_affinity("loop=1, capture=0-1")
    assert aff == Affinity(capture=(0, 1), loop=(1,))
    assert aff.worker_cpus == (1,) and aff.model_cpus == (1,)        # workers / model default to the loop's
    assert parse_affinity("loop=1,model=0+1").model_cpus == (0, 1)
    bad = {"loop": "ROLE=CPUS", "gpu=0": "ROLE=CPUS", "loop=x": "not a CPU list", "loop=1-0": "not a CPU list",
           "loop=1,loop=0": "twice", f"loop={os.cpu_count() + 5}": "not available"}
    for spec, words in bad.items():
        with pytest.raises(UserError, match=words):
            parse_affinity(spec)


def test_decode_thread_specs():
    assert parse_decode_threads(None) == ("SIZE", 0)
    assert parse_decode_threads("auto") == ("AUTO", 0)
    assert parse_decode_threads("frame:2") == ("FRAME", 2)
    assert parse_decode_threads("SLICE") == ("SLICE", 0)
    for spec in ("bogus", "frame:x", "frame:-1", "slice:999"):
        with pytest.raises(SourceError, match="--decode-threads"):
            parse_decode_threads(spec)


def _planes(spec: str, n: int = 40) -> list[np.ndarray]:
    src = open_source(str(SAMPLE_CLIP), yuv420=True, decode_threads=spec)
    try:
        ctx = src.stream.codec_context
        want_type, want_count = parse_decode_threads(spec)
        want_type = resolve_decode_threads(want_type, ctx.width, ctx.height)
        assert str(ctx.thread_type).upper().endswith(want_type) or want_type == "NONE"
        if want_count:
            assert ctx.thread_count == want_count
        out = []
        for frame in src.frames():
            out.append(np.concatenate([p.ravel() for p in frame.planes]))
            if len(out) == n:
                break
        return out
    finally:
        src.close()


def test_every_decoder_threading_gives_the_same_pixels():
    """Threading changes when a frame comes out, never what it holds: the Y, U, V planes are identical."""
    reference = _planes("none")
    for spec in ("frame:2", "slice:2", "auto", None):
        got = _planes(spec)
        assert len(got) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(got, reference)), spec


def _clip(path, width: int, height: int, n: int = 3):
    import av
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            img = np.full((height, width, 3), 40 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_default_decoder_threading_follows_the_frame_size(tmp_path):
    """The default (`size`): one thread up to 1080p (no frame-thread delay), FFmpeg's frame threads
    above; an explicit choice is kept whatever the size."""
    for (w, h), want in [((1280, 720), "SLICE"), ((1920, 1080), "SLICE"), ((2560, 1440), "AUTO")]:
        clip = _clip(tmp_path / f"c{w}.mp4", w, h)
        for spec, expect in [(None, want), ("frame:2", "FRAME")]:
            src = open_source(str(clip), yuv420=True, decode_threads=spec)
            try:
                assert str(src.stream.codec_context.thread_type).upper().endswith(expect), (w, h, spec)
                assert src.decode_threading == expect
                assert sum(1 for _ in src.frames()) == 3
            finally:
                src.close()
    assert resolve_decode_threads("SIZE", 0, 0) == "SLICE"     # a live stream joined before its first keyframe


PROBE = r"""
import json, os, sys, threading, time
from streamer.commands.run import add_pipeline_arguments, pipeline_config
from streamer.pipeline import Pipeline
from streamer.capture import CaptureProcess, CaptureOptions
import argparse
ap = argparse.ArgumentParser(); add_pipeline_arguments(ap)
args = ap.parse_args(sys.argv[2:])
args.publish = "tcp://127.0.0.1:*"
p = Pipeline(pipeline_config(args, sys.argv[1]), log=lambda *a, **k: None)
aff = lambda tid: sorted(os.sched_getaffinity(tid))
out = {"main": aff(0), "threads": {}}
for tid in os.listdir("/proc/self/task"):
    name = open(f"/proc/self/task/{tid}/comm").read().strip()
    out["threads"].setdefault(name, []).append(aff(int(tid)))
pub = p.open_publisher()
p.publisher = pub
pub.frames.pin(p.affinity.worker_cpus)
pub.frames.submit(None, 0, 0.0, [0, 0, 1, 1])     # wakes the worker (a None image is counted as an error)
time.sleep(0.3)
out["frames_worker"] = aff(pub.frames.native_id)
opts = CaptureOptions(sys.argv[1], fast=True, cpus=p.affinity.capture, decode_threads="frame:2")
with CaptureProcess(opts) as cap:
    frame = None
    deadline = time.monotonic() + 60      # a loaded box may take a while to spawn and open
    while frame is None and time.monotonic() < deadline and not cap.finished:
        cap.poll_events()
        frame = cap.next_frame(timeout_s=0.5)
    out["got_frame"] = frame is not None
    pid = cap.proc.pid
    out["capture"] = sorted({tuple(aff(int(t))) for t in os.listdir(f"/proc/{pid}/task")})
    out["capture_threads"] = len(os.listdir(f"/proc/{pid}/task"))
pub.close(); p.crop.close()
print(json.dumps(out))
"""


@linux_two_cpus
def test_pinning_puts_each_part_on_its_cpus():
    """A real Pipeline with two ONNX Runtime threads: the loop on CPU 1, ORT's extra thread and the
    frames worker on CPU 0, and every thread of the capture process (decoder threads too) on CPU 0."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(SAMPLE_CLIP), "--threads", "2", "--cpu-affinity",
                           "capture=0,loop=1,model=0,workers=0", "--anomaly-model", "none"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["main"] == [1]
    pinned_to = [cpus for masks in out["threads"].values() for cpus in masks]
    assert [0] in pinned_to, out["threads"]        # ONNX Runtime's second intra-op thread moved to the model CPU
    assert out["frames_worker"] == [0]
    assert out["got_frame"] and out["capture"] == [[0]] and out["capture_threads"] >= 2, out   # decoder threads inherit the mask


@linux_two_cpus
@needs_realtime
def test_auto_pinning_with_a_realtime_loop_puts_the_workers_beside_the_loop():
    proc = subprocess.run([sys.executable, "-c", PROBE, str(SAMPLE_CLIP), "--threads", "2", "--cpu-affinity", "auto",
                           "--realtime-priority", "loop=10", "--anomaly-model", "none"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["main"] == [1] and out["frames_worker"] == [1]
    assert [0] in [cpus for masks in out["threads"].values() for cpus in masks]   # ORT's second thread: model=0
    assert out["got_frame"] and out["capture"] == [[0]], out


def test_bad_pinning_and_decoder_options_are_one_line(tmp_path):
    from .conftest import run_cli
    for extra, words in ((["--cpu-affinity", "loop=99"], "not available"),
                         (["--decode-threads", "frame:x"], "--decode-threads"),
                         (["--subplane-every", "0.5"], "needs --subplane-model"),
                         (["--cpu-affinity", "auto", "--source", str(SAMPLE_CLIP)], "one --source")):
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "2", "--no-frames", *extra)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
