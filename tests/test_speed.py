"""The hot-path pieces of issue 11: area halvings, shared halvings in preprocessing, the
preallocated input tensor, crop re-detection off the hot path, the frames-topic worker."""
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from engines.crop import CropRect, CropTracker
from engines.downscale import downscale_to_width, halve, halve_times, halvings_to
from engines.metadata import ModelInfo
from engines.preprocess import Preprocessor
from streamer import schema
from streamer.croptrack import BackgroundCropTracker, detect_on_downscaled, snap_size
from streamer.frames_topic import FramesWorker
from streamer.publish import Publisher

from .conftest import run_cli
from .test_crop import scanner_screen


def test_halve_is_the_mean_of_2x2_blocks():
    img = np.array([[0, 4, 8, 8], [4, 8, 8, 8]], np.uint8)
    assert halve(img).tolist() == [[4, 8]]
    assert halve(np.zeros((5, 7, 3), np.uint8)).shape == (2, 3, 3)     # sizes rounded down


def test_detected_crops_have_sizes_that_halve_on_the_fast_path():
    assert snap_size(CropRect(10, 20, 1411, 921)) == CropRect(10, 20, 1410, 920)
    assert snap_size(CropRect(0, 0, 2, 2)) == CropRect(0, 0, 2, 2)
    rect = detect_on_downscaled(scanner_screen(1920, 1080, region=(301, 181, 1503, 1037)))
    assert rect.width % 4 == 0 and rect.height % 4 == 0


def test_halvings_to_keeps_at_least_the_minimum():
    assert halvings_to(1920, 1080, 640) == 1
    assert halvings_to(3840, 2160, 640) == 2
    assert halvings_to(639, 480, 640) == 0
    assert halvings_to(1400, 900, 320, 240) == 1     # 700x450; 350x225 would be too short
    assert halve_times(np.zeros((8, 8), np.uint8), 0).shape == (8, 8)


def test_downscale_to_width_exact_width_and_never_upscales():
    img = np.random.default_rng(0).integers(0, 255, (900, 1400, 3), np.uint8)
    small = downscale_to_width(img, 640)
    assert small.shape == (411, 640, 3)
    assert downscale_to_width(img[:300, :500], 640) is not None
    assert downscale_to_width(img[:300, :500], 640).shape == (300, 500, 3)
    # Close to a direct INTER_AREA resize (a display copy, not a model input).
    ref = cv2.resize(img.astype(np.float32), (640, 411), interpolation=cv2.INTER_AREA)
    flat = cv2.GaussianBlur(img, (0, 0), 6)
    assert np.abs(downscale_to_width(flat, 640).astype(np.float32) -
                  cv2.resize(flat, (640, 411), interpolation=cv2.INTER_AREA)).mean() < 1.0
    assert ref.shape[:2] == small.shape[:2]


def _info(channels=1, norm=None, size=(192, 144)):
    return ModelInfo(path=Path("x.onnx"), model_id="t", task="plane", labels=("a", "b"), coarse_map={},
                     input_name="image", height=size[1], width=size[0], channels=channels,
                     normalisation=norm or {"kind": "per_image_standardise", "scale": 1.0})


@pytest.mark.parametrize("channels,norm", [
    (1, {"kind": "per_image_standardise", "scale": 255.0}),
    (3, {"kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
])
def test_preprocess_from_a_shared_halved_copy_into_a_preallocated_tensor_is_identical(channels, norm):
    pre = Preprocessor(_info(channels, norm))
    roi = np.random.default_rng(1).integers(0, 255, (900, 1400, 3), np.uint8)
    ref = pre(roi)
    n = pre.halvings(1400, 900)
    assert n == 1                                   # 1400 -> 700 (< 4 x 192), then the last resize
    out = np.full((1, channels, 144, 192), np.nan, np.float32)
    got = pre(halve_times(roi, n), out=out)
    assert got is out
    np.testing.assert_array_equal(got, ref)


def test_background_tracker_finds_the_same_region_as_the_inline_tracker():
    frame = scanner_screen(1920, 1080, region=(300, 180, 1500, 1035))
    inline = CropTracker("auto").update(frame)
    bg = BackgroundCropTracker("auto")
    try:
        got = bg.update(frame)
        assert got.iou(inline) > 0.95
        assert got.iou(detect_on_downscaled(frame)) == 1.0
    finally:
        bg.close()


def test_background_tracker_accepts_a_moved_region_after_two_sightings_off_the_hot_path():
    bg = BackgroundCropTracker("auto", redetect_every=1, accept_after=2)
    try:
        r1 = bg.update(scanner_screen(region=(200, 120, 1000, 690)))
        moved = scanner_screen(region=(300, 150, 900, 690))
        seen = []
        for _ in range(6):                 # each update hands a re-detection to the worker
            seen.append(bg.update(moved))
            bg.wait()
        assert seen[0] == r1 and seen[1] == r1      # first verdict arrives a frame later, then hysteresis
        assert seen[-1] != r1 and seen[-1].iou(CropRect(300, 150, 900, 690)) > 0.7
        # a new frame size is handled at once, on the calling thread
        small = cv2.resize(scanner_screen(), (640, 360))
        r3 = bg.update(small)
        assert r3.x1 <= 640 and r3.y1 <= 360
    finally:
        bg.close()


def _crops(frame_ids, t_media: bool, wait: bool) -> dict[int, CropRect]:
    """Crops of a 60-frame, 30 fps clip whose region moves at frame 30, fed frames `frame_ids`."""
    before, after = scanner_screen(region=(200, 120, 1000, 690)), scanner_screen(region=(300, 150, 900, 690))
    bg = BackgroundCropTracker("auto", redetect_every=15, accept_after=2)
    out = {}
    try:
        for i in frame_ids:
            out[i] = bg.update(before if i < 30 else after, t_media=i / 30 if t_media else None)
            if wait:
                bg.wait()
    finally:
        bg.close()
    return out


def test_file_crops_do_not_depend_on_skipped_frames_or_worker_timing(monkeypatch):
    every = list(range(60))
    one_skipped = [0] + list(range(2, 60))     # native replay dropped frame 1 under load
    # Live (frame count): a skipped frame shifts every later re-detection by a frame.
    live_all, live_skip = _crops(every, False, True), _crops(one_skipped, False, True)
    assert any(live_all[i] != live_skip[i] for i in one_skipped)
    # Files (media time): re-detection on a fixed media-time grid, verdict on the next frame.
    file_all = _crops(every, True, False)
    assert file_all[59] != file_all[0]                          # the move was taken: a real test
    file_skip = _crops(one_skipped, True, False)
    assert all(file_all[i] == file_skip[i] for i in one_skipped)
    # ... even when the worker is slower than the frames arrive (no wait() here).
    import streamer.croptrack as ct
    detect = ct._detect_scaled

    def slow_detect(*args):
        time.sleep(0.05)
        return detect(*args)
    monkeypatch.setattr(ct, "_detect_scaled", slow_detect)
    assert _crops(every, True, False) == file_all


def test_background_tracker_presets_and_none_need_no_detection():
    bg = BackgroundCropTracker("none")
    frame = scanner_screen()
    assert bg.update(frame) == CropRect.full(frame)
    bg.close()
    bg = BackgroundCropTracker("sononet_975x735")
    assert bg.update(np.zeros((735, 975, 3), np.uint8)) == CropRect(81, 115, 874, 734)
    bg.close()


def test_frames_worker_throttles_by_capture_time_and_sends_the_newest():
    sent, gate, busy = [], threading.Event(), threading.Event()

    def send(image, index, t, crop):
        busy.set()
        gate.wait(5)
        sent.append(index)

    w = FramesWorker(send, fps=30)
    accepted = [w.submit(None, 0, 0.0, None)]
    assert busy.wait(5)                                                # the worker is sending frame 0
    accepted += [w.submit(None, i, i / 60, None) for i in range(1, 8)]  # a 60 fps source
    assert accepted == [True, False] * 4                               # every other frame
    gate.set()
    w.close()
    # frame 0 went to the worker at once; 2 waited and was replaced by 4, then by 6
    assert sent[0] == 0 and sent[-1] == 6 and w.replaced >= 1 and w.throttled == 4


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is Linux")
def test_frames_worker_thread_yields_the_cpu_to_the_loop():
    for nice in (10, 0):
        sent = threading.Event()
        w = FramesWorker(lambda *a: sent.set(), fps=None, nice=nice)
        try:
            w.submit(None, 0, 0.0, None)
            assert sent.wait(5)
            loop = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            assert os.getpriority(os.PRIO_PROCESS, w.native_id) == min(19, loop + nice)
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop   # the loop untouched
        finally:
            w.close()


def test_publisher_frames_worker_sends_jpegs_to_a_subscriber():
    pub = Publisher("tcp://127.0.0.1:*", "s1", send_frames=True, frames_fps=None, frames_worker=True)
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    sub.connect(pub.address)
    time.sleep(0.3)                                    # slow joiner
    img = np.random.default_rng(2).integers(0, 255, (900, 1400, 3), np.uint8)
    try:
        pub.frame(img, 7, 1.0, [0, 0, 1400, 900])
        _, frame = schema.decode(sub.recv())
        assert frame["kind"] == schema.FRAME
        jpeg = cv2.imdecode(np.frombuffer(frame["jpeg"], np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape == (411, 640, 3) and frame["width"] == 640 and frame["frame"] == 7
        assert abs(frame["scale"] - 640 / 1400) < 1e-6
    finally:
        pub.close()
        sub.close(0)


def test_run_rejects_negative_frames_fps():
    r = run_cli("run", "--source", "streamer/assets/sample_scan.mp4", "--frames-fps", "-1")
    assert r.returncode != 0 and "--frames-fps" in r.stderr and "Traceback" not in r.stderr



def _search_crops(frame_ids, planes: bool, where: dict) -> dict:
    """Crops of a 60 fps file whose first 8 frames show no ultrasound image, fed frames `frame_ids`."""
    from .test_luma import frame_of
    caller = threading.get_ident()
    empty = np.full((720, 1280, 3), 10, np.uint8)            # no ultrasound image on screen
    screen = scanner_screen(1280, 720, region=(200, 120, 1000, 690))
    bg = BackgroundCropTracker("auto")
    crops = {}
    try:
        for i in frame_ids:
            img = empty if i < 8 else screen
            if planes:
                f = frame_of(img)

                def detect_image(min_width, make=f.detect_image):
                    where["copy"].append(threading.get_ident() == caller)
                    return make(min_width)
                crops[i] = bg.update(f.luma, detect_image, t_media=i / 60)
            else:
                crops[i] = bg.update(img, t_media=i / 60)
    finally:
        bg.close()
    return crops


@pytest.mark.parametrize("planes", [False, True])
def test_background_tracker_searches_on_the_worker_until_a_region_appears(monkeypatch, planes):
    """Issue 11 tail: while no region is found, only the first frame is searched on the calling thread;
    later searches run on the worker (for YUV frames the small colour copy is made there too), once per
    1/15 s of media time for files with the verdict taken in the next cell, the whole frame meanwhile;
    the region found is the one the synchronous search finds, and a skipped frame changes nothing."""
    import streamer.croptrack as ct
    caller = threading.get_ident()
    where = {"detect": [], "copy": []}
    detect = ct._detect_scaled

    def recording_detect(*args):
        where["detect"].append(threading.get_ident() == caller)
        return detect(*args)
    monkeypatch.setattr(ct, "_detect_scaled", recording_detect)
    crops = _search_crops(range(16), planes, where)
    assert where["detect"][0] and not any(where["detect"][1:]), where          # only the first on this thread
    assert len(where["detect"]) == 3                                           # frames 0 (here), 4 and 8
    if planes:
        assert where["copy"][0] and not any(where["copy"][1:]), where
    assert all(crops[i] == CropRect(0, 0, 1280, 720) for i in range(12))      # the whole frame while searching
    # the image appears on frame 8, is searched there (cell 2) and taken on frame 12 (cell 3)
    screen = scanner_screen(1280, 720, region=(200, 120, 1000, 690))
    assert crops[12].iou(detect_on_downscaled(screen)) > 0.97 and crops[15] == crops[12]
    skipped = _search_crops([i for i in range(16) if i != 8], planes, {"copy": []})   # native replay dropped frame 8
    assert all(skipped[i] == crops[i] for i in skipped)


def test_background_tracker_searches_back_to_back_live():
    empty = np.full((720, 1280, 3), 10, np.uint8)
    screen = scanner_screen(1280, 720, region=(200, 120, 1000, 690))
    bg = BackgroundCropTracker("auto")
    try:
        assert bg.update(empty) == CropRect(0, 0, 1280, 720)
        assert bg.update(screen) == CropRect(0, 0, 1280, 720)     # a search of this frame starts on the worker
        bg.wait()
        assert bg.update(screen).iou(detect_on_downscaled(screen)) > 0.97   # taken when ready
    finally:
        bg.close()
