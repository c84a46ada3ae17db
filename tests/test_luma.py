"""The luma path: YUV 4:2:0 frames handed over as planes, analysis on the Y plane, colour only for
the crops that leave the process (streamer/yuv.py, streamer/capture.py, streamer/pipeline.py)."""
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.crop import CropRect
from engines.downscale import halve, halve_times
from engines.metadata import ModelInfo
from engines.preprocess import Preprocessor, limited_luma_to_gray
from streamer import yuv
from streamer.capture import LAYOUT_BGR, LAYOUT_I420, CaptureOptions, CaptureProcess, CapturedFrame
from streamer.croptrack import BackgroundCropTracker
from streamer.image_state import ImageStateDetector
from streamer.sources import open_source

from .conftest import SAMPLE_CLIP
from .test_crop import scanner_screen


def i420_of(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def frame_of(bgr: np.ndarray) -> CapturedFrame:
    h, w = bgr.shape[:2]
    return CapturedFrame(i420_of(bgr), LAYOUT_I420, h, w, 0, None, 0.0, 0.0, 0)


def coloured_screen(w=1280, h=720):
    img = scanner_screen(w, h)
    img[20:90, 1000:1200] = (0, 200, 255)          # a coloured UI patch (orange)
    img[300:340, 1100:1260] = (255, 128, 0)        # and a blue one
    return img


def test_crop_conversion_equals_the_full_frame_conversion_cropped_at_any_corner():
    img = coloured_screen()
    i420 = i420_of(img)
    full = yuv.to_bgr(i420, 720, 1280)
    assert full.shape == img.shape and np.abs(full.astype(int) - img).mean() < 6   # 4:2:0 round trip
    for rect in (CropRect(201, 121, 999, 689), CropRect(200, 120, 1000, 690), CropRect(0, 0, 1280, 720),
                 CropRect(1, 1, 1279, 719), CropRect(1277, 3, 1280, 10)):
        crop = yuv.to_bgr(i420, 720, 1280, rect)
        assert crop.shape == (rect.height, rect.width, 3)
        assert np.array_equal(crop, rect.apply(full)), rect


def test_halved_conversion_is_the_full_conversion_halved_up_to_rounding():
    img = cv2.GaussianBlur(coloured_screen(), (0, 0), 2)
    i420 = i420_of(img)
    rect = CropRect(200, 120, 1000, 688)
    for n in (1, 2):
        small = yuv.to_bgr_halved(i420, 720, 1280, rect, n)
        ref = halve_times(yuv.to_bgr(i420, 720, 1280, rect), n)
        assert small.shape == ref.shape
        assert np.abs(small.astype(int) - ref).mean() < 1.5 and np.abs(small.astype(int) - ref).max() <= 40
    assert np.array_equal(yuv.to_bgr_halved(i420, 720, 1280, rect, 0), yuv.to_bgr(i420, 720, 1280, rect))


def test_write_planes_skips_the_decoders_line_padding():
    rng = np.random.default_rng(0)
    padded = [rng.integers(0, 255, (8, 16), np.uint8), rng.integers(0, 255, (4, 12), np.uint8),
              rng.integers(0, 255, (4, 12), np.uint8)]
    src = (padded[0][:, :12], padded[1][:, :6], padded[2][:, :6])    # 12x8 frame, lines padded
    buf = np.zeros((yuv.i420_rows(8), 12), np.uint8)
    yuv.write_planes(buf, 8, 12, src)
    assert all(np.array_equal(a, b) for a, b in zip(yuv.planes(buf, 8, 12), src))


def test_model_input_from_the_luma_plane_matches_the_colour_mean_for_gray_images():
    info = ModelInfo(path=Path("x.onnx"), model_id="t", task="plane", labels=("a", "b"), coarse_map={},
                     input_name="image", height=144, width=192, channels=1, resize="area",
                     normalisation={"kind": "per_image_standardise", "scale": 1.0})
    pre = Preprocessor(info)
    # A gray B-mode crop as the decoder gives it: a Y plane with neutral chroma; BGR converted from it.
    i420 = i420_of(scanner_screen(1920, 1080, region=(300, 180, 1700, 1080))[180:1080, 300:1700].copy())
    i420[900:] = 128
    y, bgr = i420[:900], yuv.to_bgr(i420, 900, 1400)
    a = pre(bgr)
    b = pre(y, out=np.empty_like(a), luma_range="limited")
    # Standardised units; what is left is the 8-bit rounding of the BGR conversion (<= 0.6 grey level
    # per pixel, correlated over smooth tissue so it survives the downscale).
    assert np.abs(a - b).mean() < 0.06 and np.abs(a - b).max() < 0.2
    assert pre(y, luma_range="limited").shape == a.shape
    x = np.array([0.0, 16.0, 125.5, 235.0, 255.0], np.float32)
    assert limited_luma_to_gray(x).tolist() == pytest.approx([0.0, 0.0, 127.5, 255.0, 255.0])
    with pytest.raises(ValueError):
        pre(bgr, luma_range="limited")               # a luma plane is 2-D


def test_blank_and_frozen_thresholds_keep_their_meaning_on_luma():
    dark = np.random.default_rng(0).integers(0, 8, (480, 640, 3), dtype=np.uint8)
    y_dark = i420_of(dark)[:480]                     # black is 16 in limited range
    assert ImageStateDetector().update(y_dark, 0.0, luma_range="limited").blank
    live = np.random.default_rng(3).integers(20, 220, (480, 640, 3), dtype=np.uint8)
    d = ImageStateDetector(frozen_min_s=0.4)
    y_live = i420_of(live)[:480]
    states = [d.update(y_live, i / 30, luma_range="limited") for i in range(20)]
    assert not states[0].blank and not states[5].frozen and states[-1].frozen
    mean_bgr = ImageStateDetector().update(live, 0.0).mean
    assert abs(ImageStateDetector().update(y_live, 0.0, luma_range="limited").mean - mean_bgr) < 2


def test_crop_tracker_on_the_y_plane_finds_the_region_the_bgr_frame_gives():
    img = coloured_screen(1920, 1080)
    frame = frame_of(img)
    on_bgr, on_luma = BackgroundCropTracker(), BackgroundCropTracker()
    try:
        r_bgr = on_bgr.update(img)
        r_luma = on_luma.update(frame.luma, frame.detect_image)
        assert r_luma.iou(r_bgr) > 0.97
        # Periodic re-detection on the worker, from the planes, keeps the region.
        for _ in range(16):
            assert on_luma.update(frame.luma, frame.detect_image) == r_luma
        on_luma.wait()
        assert on_luma.update(frame.luma, frame.detect_image) == r_luma
    finally:
        on_bgr.close()
        on_luma.close()


def test_captured_frame_views_and_lazy_colour():
    img = coloured_screen()
    f = frame_of(img)
    assert f.is_yuv and f.luma.shape == (720, 1280) and f.luma_range == "limited"
    rect = CropRect(201, 121, 999, 689)
    assert np.array_equal(f.colour(rect), rect.apply(f.image))
    small = f.detect_image(640)
    assert small.shape == (360, 640, 3)
    b = CapturedFrame(img, LAYOUT_BGR, 720, 1280, 0, None, 0.0, 0.0, 0)
    assert not b.is_yuv and b.luma is img and b.luma_range is None and b.image is img
    assert np.shares_memory(b.colour(rect), img)
    assert np.array_equal(b.colour_halved(rect, 1), halve(rect.apply(img)))


def _encode(path: Path, pix_fmt: str, size=(64, 48), n=3, color_range=None):
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4" if pix_fmt == "yuv420p" else "mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = size[0], size[1], pix_fmt
        for i in range(n):
            img = np.full((size[1], size[0], 3), 40 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format=pix_fmt)
            if color_range is not None:
                frame.color_range = color_range
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_sources_give_planes_only_for_limited_range_420_with_even_sizes(tmp_path):
    cases = {"yuv420p_even": ("yuv420p", (64, 48), True), "yuv420p_odd": ("yuv420p", (63, 47), False),
             "yuvj420p": ("yuvj420p", (64, 48), False), "yuvj422p": ("yuvj422p", (64, 48), False)}
    for name, (fmt, size, planes) in cases.items():
        path = tmp_path / f"{name}.{'mp4' if fmt == 'yuv420p' else 'avi'}"
        _encode(path, fmt, size)
        src = open_source(str(path), yuv420=True)
        try:
            frames = list(src.frames())
        finally:
            src.close()
        assert frames and all((f.planes is not None) == planes for f in frames), name
        for f in frames:
            assert f.shape[:2] == (size[1], size[0])
            assert (f.image is None) == planes
        src = open_source(str(path))          # default: BGR as before
        try:
            assert all(f.planes is None and f.image.shape == (size[1], size[0], 3) for f in src.frames())
        finally:
            src.close()


def _frames(yuv420: bool, n: int = 12) -> list[CapturedFrame]:
    out = []
    with CaptureProcess(CaptureOptions(str(SAMPLE_CLIP), fast=True, max_frames=n, yuv420=yuv420)) as cap:
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            f = cap.next_frame(0.5)
            if f is not None:
                out.append(f)
    return out


def test_capture_hands_over_i420_and_falls_back_to_bgr():
    planes, bgr = _frames(True), _frames(False)
    assert len(planes) == len(bgr) == 12
    assert all(f.layout == LAYOUT_I420 and f.pixels.shape == (1080, 1280) for f in planes)
    assert all(f.layout == LAYOUT_BGR and f.pixels.shape == (720, 1280, 3) for f in bgr)
    assert [f.index for f in planes] == [f.index for f in bgr]
    for a, b in zip(planes, bgr):     # OpenCV's and swscale's BT.601 conversions: rounding apart
        assert np.abs(a.image.astype(int) - b.image).mean() < 2.0
        assert np.abs(a.luma.astype(np.float32) - cv2.cvtColor(b.image, cv2.COLOR_BGR2GRAY).astype(np.float32) * 219 / 255 - 16
                      ).mean() < 2.0


def _reencode(src: Path, dst: Path, pix_fmt: str, n: int) -> None:
    import av
    with av.open(str(src)) as c_in, av.open(str(dst), "w") as c_out:
        s = c_out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1280, 720, pix_fmt
        s.options = {"crf": "18", "preset": "veryfast"}
        for i, f in enumerate(c_in.decode(video=0)):
            if i == n:
                break
            for p in s.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")
                              .reformat(format=pix_fmt)):
                c_out.mux(p)
        for p in s.encode():
            c_out.mux(p)


def test_run_on_video_without_420_planes_takes_the_bgr_path_end_to_end(tmp_path):
    """4:4:4 video is not handed over as planes: the whole run (crop, state, model, frames topic)
    works on BGR frames as before, and agrees with the luma path on the same content."""
    import json
    import threading

    from .conftest import free_port, run_cli
    from .test_pipeline_e2e import collect

    clip = tmp_path / "yuv444.mp4"
    _reencode(SAMPLE_CLIP, clip, "yuv444p", 60)
    src = open_source(str(clip), yuv420=True)
    try:
        assert next(iter(src.frames())).planes is None
    finally:
        src.close()
    records = {}
    for name, video in (("bgr", clip), ("luma", SAMPLE_CLIP)):
        addr, got, stop = f"tcp://127.0.0.1:{free_port()}", [], threading.Event()
        t = threading.Thread(target=collect, args=(addr, stop, got))
        t.start()
        time.sleep(0.2)
        try:
            r = run_cli("run", "--source", video, "--fast", "--max-frames", "60", "--publish", addr,
                        "--frames-fps", "0", "--record", tmp_path / f"{name}.jsonl")
        finally:
            time.sleep(0.3)
            stop.set()
            t.join()
        assert r.returncode == 0, r.stderr
        assert "60 classified" in r.stdout
        frames = [p for _, p in got if p["kind"] == "frame"]
        assert frames and all(f["jpeg"][:2] == b"\xff\xd8" and f["width"] <= 640 for f in frames)
        jpeg = cv2.imdecode(np.frombuffer(frames[-1]["jpeg"], np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape[:2] == (frames[-1]["height"], frames[-1]["width"])
        records[name] = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()
                         if '"result"' in x]
    bgr, luma = records["bgr"], records["luma"]
    assert len(bgr) == len(luma) == 60
    assert CropRect(*bgr[-1]["crop"]).iou(CropRect(*luma[-1]["crop"])) > 0.95
    agree = sum(a["topk"][0][0] == b["topk"][0][0] for a, b in zip(bgr, luma) if a["topk"] and b["topk"])
    assert agree >= 0.9 * 60 and bgr[-1]["plane"] == luma[-1]["plane"] == "brain"
