"""OpenCV on one thread in the sonoplane process (`sonoplane run --opencv-threads`, default 1):
the same pixels and the same results as OpenCV's own pool, issue 11 (CPU per frame)."""
import json

import cv2
import numpy as np
import pytest

from engines.crop import CropRect
from engines.downscale import halve_times
from engines.preprocess import Preprocessor
from streamer.capture import LAYOUT_I420, CapturedFrame
from streamer.image_state import ImageStateDetector
from streamer.infer import PlaneClassifier
from streamer.sources import open_source
from streamer.topic_image import redacted_display
from streamer.yuv import i420_rows, planes

from .conftest import SAMPLE_CLIP, free_port, run_cli

OPENCV_DEFAULT = cv2.getNumThreads()


@pytest.fixture
def restore_opencv_threads():
    yield
    cv2.setNumThreads(-1)


def _full_hd_frames(n: int = 6) -> list[CapturedFrame]:
    """Frames of the bundled clip as the live loop holds 1080p H.264 video: I420 planes (each plane
    of the 720p clip scaled up), so the frames topic takes its planes path (crop >= 1280 wide)."""
    src = open_source(str(SAMPLE_CLIP), yuv420=True)
    out = []
    try:
        for k, f in enumerate(src.frames()):
            if k % 40:
                continue
            i420 = np.empty((i420_rows(1080), 1920), np.uint8)
            for dst, p in zip(planes(i420, 1080, 1920), f.planes):
                dst[:] = cv2.resize(p, (dst.shape[1], dst.shape[0]), interpolation=cv2.INTER_LINEAR)
            out.append(CapturedFrame(i420, LAYOUT_I420, 1080, 1920, k, k / 30, 0.0, 0.0, 0))
            if len(out) == n:
                return out
    finally:
        src.close()
    return out


def _everything_opencv_makes(frames, pre: Preprocessor) -> list[np.ndarray]:
    """The per-frame outputs of the loop and the frames worker that OpenCV computes."""
    rect = CropRect(180, 96, 1700, 1036)            # 1520 x 940: multiples of 4, as tracked crops are
    state = ImageStateDetector()
    out = []
    for f in frames:
        roi = rect.apply(f.luma)
        half = halve_times(roi, pre.halvings(roi.shape[1], roi.shape[0]))
        out += [half, pre(half, luma_range="limited")[0]]
        s = state.update(half, f.pts_s, luma_range="limited")
        out.append(np.array([s.blank, s.frozen, s.mean, s.change]))
        out += [redacted_display(f, rect, 640), f.detect_image(640), f.colour(rect)]
        ok, jpeg = cv2.imencode(".jpg", out[-3], [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append(np.frombuffer(jpeg, np.uint8))
    return out


def test_one_opencv_thread_makes_the_same_pixels(restore_opencv_threads):
    frames = _full_hd_frames()
    assert len(frames) == 6
    pre = Preprocessor(PlaneClassifier().info)
    results = {}
    for n in (1, -1, 2):          # ours, OpenCV's default pool, two threads
        cv2.setNumThreads(n)
        results[n] = _everything_opencv_makes(frames, pre)
    for n in (-1, 2):
        assert len(results[n]) == len(results[1])
        for a, b in zip(results[1], results[n]):
            assert a.shape == b.shape and np.array_equal(a, b)


def test_pipeline_sets_opencv_threads(restore_opencv_threads):
    from streamer.pipeline import Pipeline, PipelineConfig
    for n, want in ((1, 1), (0, OPENCV_DEFAULT)):
        Pipeline(PipelineConfig(source=str(SAMPLE_CLIP), opencv_threads=n, anomaly_model="none"))
        assert cv2.getNumThreads() == want


def _labels(path) -> list[tuple]:
    rows = [json.loads(line) for line in open(path)]
    return [(r["frame"], r["plane"], r["label"], json.dumps(r["topk"]), json.dumps(r["crop"]))
            for r in rows if r["kind"] == "result"]


@pytest.mark.slow
def test_results_are_the_same_with_one_or_all_opencv_threads(tmp_path):
    runs = {}
    for n in (1, 0):
        record = tmp_path / f"threads{n}.jsonl"
        r = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", 90, "--opencv-threads", n,
                    "--record", record, "--quiet", "--publish", f"tcp://127.0.0.1:{free_port()}")
        assert r.returncode == 0, r.stderr
        runs[n] = _labels(record)
    assert len(runs[1]) == 90 and runs[1] == runs[0]


def test_bad_opencv_threads_is_one_line():
    r = run_cli("run", "--source", SAMPLE_CLIP, "--opencv-threads", "-2")
    assert r.returncode == 2 and "--opencv-threads" in r.stderr and "Traceback" not in r.stderr
