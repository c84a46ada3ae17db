"""Redaction: no patient text in anything published (engines.redact, the crop's header rule, the
frames topic end to end), and --redact off really publishes it (so the checks can fail)."""
import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
import zmq

from engines.crop import CropTracker, detect_ultrasound_region
from engines.redact import find_text_boxes, redact_text
from streamer import schema

from .conftest import SAMPLE_CLIP, free_port, run_cli
from .test_crop import scanner_screen

LINE = "PATIENT JANE DOE 1985-02-03"


def draw(img, org, scale=1.0, thick=2):
    mask = np.zeros(img.shape[:2], np.uint8)
    for target, colour in ((img, (255, 255, 255)), (mask, 255)):
        cv2.putText(target, LINE, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return mask > 0


def visible_share(outgoing, rect, mask, drawn):
    """Share of the line's pixels that reach the outgoing image unchanged (not blanked)."""
    m = rect.apply(mask)
    same = (outgoing == rect.apply(drawn)).all(axis=2) & (outgoing.max(axis=2) > 0)
    return (m & same).sum() / mask.sum()


def clip_frames(n=60, step=5):
    import av
    out = []
    with av.open(str(SAMPLE_CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="bgr24"))
            if len(out) == n:
                break
    return out


def outgoing(tracker, frame):
    rect = tracker.update(frame)
    return rect, redact_text(np.ascontiguousarray(rect.apply(frame)))[0]


def test_large_bright_header_text_close_to_the_image_is_left_out_of_the_crop():
    for seed in range(3):
        frame = scanner_screen(seed=seed)
        # Big bright text whose bottom is 8 px above the image (image top at row 120).
        mask = draw(frame, (210, 112), scale=1.6, thick=4)
        rect = detect_ultrasound_region(frame)
        assert rect is not None and rect.y0 >= 112, rect
        assert rect.iou(detect_ultrasound_region(scanner_screen(seed=seed))) > 0.8
        assert visible_share(redact_text(rect.apply(frame))[0], rect, mask, frame) == 0


def test_text_on_a_dark_band_touching_the_image_is_left_out():
    frame = scanner_screen()
    frame[120:150, 200:1000] = 12           # a dark band over the image's first rows
    mask = draw(frame, (260, 143), scale=0.8, thick=2)
    rect = detect_ultrasound_region(frame)
    assert rect is not None
    assert visible_share(redact_text(rect.apply(frame))[0], rect, mask, frame) == 0
    assert rect.y1 - rect.y0 > 400          # the image below is kept


@pytest.mark.parametrize("scale,thick,required", [(1.0, 2, 1.0), (1.6, 3, 1.0), (0.6, 1, 0.7)])
def test_text_drawn_over_tissue_is_blanked_but_tissue_is_kept(scale, thick, required):
    """Thin 1-px text (0.6) loses half its contrast in the 2x smaller working copy: it is
    blanked in most frames, not all (measured: tools/bench_redact.py, docs/redaction.md)."""
    frames = clip_frames(n=12, step=60)
    tracker = CropTracker("auto")
    blanked_clean, clean = [], []
    for frame in frames:
        clean_rect, clean_out = outgoing(CropTracker("auto"), frame)
        blanked_clean.append(float((clean_out.max(axis=2) == 0).mean() - (clean_rect.apply(frame).max(axis=2) == 0).mean()))
        drawn = frame.copy()
        mask = draw(drawn, (int(frame.shape[1] * 0.3), int(frame.shape[0] * 0.55)), scale, thick)
        rect, out = outgoing(tracker, drawn)
        clean.append(visible_share(out, rect, mask, drawn) < 0.1)
    assert np.mean(clean) >= required, clean
    # Without text, most of the image survives redaction (false boxes on speckle are small).
    assert np.mean(blanked_clean) < 0.05, blanked_clean


def test_bundled_clip_header_never_in_the_outgoing_image():
    tracker = CropTracker("auto")
    for frame in clip_frames(n=170, step=5):
        rect, out = outgoing(tracker, frame)
        header = np.zeros(frame.shape[:2], bool)
        header[:70] = frame[:70].max(axis=2) > 140        # the burned-in header's bright pixels
        if header.sum() >= 50:
            assert visible_share(out, rect, header, frame) < 0.02


def test_coloured_ui_text_is_found():
    frame = np.zeros((300, 600, 3), np.uint8)
    cv2.putText(frame, "SRI II 5 / CRI 1", (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 80, 60), 2)
    boxes = find_text_boxes(frame)
    assert boxes and min(b.y0 for b in boxes) <= 135 and max(b.y1 for b in boxes) >= 150


def test_words_far_apart_are_all_found_wherever_they_sit():
    """The word step runs on the glyphs' bounding box: boxes must not depend on where text sits."""
    img = np.random.default_rng(0).integers(20, 60, (720, 1280, 3), np.uint8)
    draw(img, (10, 40))                                  # top left
    draw(img, (600, 700))                                # bottom right
    boxes = find_text_boxes(img)
    assert len(boxes) == 2 and boxes[0].x0 < 30 and boxes[0].y1 >= 40 and boxes[1].y1 > 690 and boxes[1].x1 > 1000
    canvas = np.zeros((1080, 1920, 3), np.uint8)        # the same text at an offset, other places
    canvas[300:1020, 600:1880] = img
    shifted = sorted(find_text_boxes(canvas), key=lambda b: b.y0)
    assert len(shifted) == 2 and shifted[0].y0 < 340 < shifted[0].y1 and shifted[1].y0 < 1000 < shifted[1].y1


def test_in_place_redaction_blanks_the_callers_image_without_a_copy():
    img = np.full((300, 600, 3), 40, np.uint8)
    draw(img, (20, 150), 0.8)
    copy_out, boxes = redact_text(img)
    assert boxes and copy_out is not img and img.max() == 255
    same_out, boxes2 = redact_text(img, in_place=True)
    assert same_out is img and boxes2 == boxes and np.array_equal(img, copy_out)


def write_clip(path, frames, fps=30):
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "12", "preset": "veryfast"}
        for f in frames:
            for p in s.encode(__import__("av").VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def published_frames(source, *extra):
    addr = f"tcp://127.0.0.1:{free_port()}"
    got, stop, ready = [], threading.Event(), threading.Event()

    def collect():
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, schema.topic(schema.FRAME))
        sub.setsockopt(zmq.RCVTIMEO, 100)
        sub.connect(addr)
        ready.set()
        while not stop.is_set():
            try:
                got.append(schema.decode(sub.recv())[1])
            except zmq.Again:
                pass
        sub.close(0)

    t = threading.Thread(target=collect)
    t.start()
    ready.wait(5)
    try:
        proc = run_cli("run", "--source", source, "--fast", "--publish", addr, "--quiet", *extra)
    finally:
        time.sleep(0.3)
        stop.set()
        t.join()
    assert proc.returncode == 0, proc.stderr
    return got


def carried(frames, mask):
    """How many published frame JPEGs show the line: >= 10 % of its pixels bright where drawn."""
    n = 0
    for f in frames:
        img = cv2.imdecode(np.frombuffer(f["jpeg"], np.uint8), cv2.IMREAD_GRAYSCALE)
        x0, y0, x1, y1 = f["crop"]
        m = cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), (img.shape[1], img.shape[0]),
                       interpolation=cv2.INTER_NEAREST) > 0
        n += m.sum() > 0 and (img[m] > 200).mean() > 0.10
    return n


def test_published_frames_carry_no_patient_line(tmp_path):
    """The issue's cases end to end: the line drawn in white over the clip's dark top band, and
    over tissue; the frames topic (what overlays, MP4s and the web page show) is checked."""
    frames = clip_frames(n=40, step=3)
    masks = {}
    drawn = []
    for f in frames:
        f = f.copy()
        masks["band"] = draw(f, (300, 42), scale=1.1, thick=2)
        masks["over"] = draw(f, (380, 420), scale=1.0, thick=2)
        drawn.append(f)
    clip = tmp_path / "patient.mp4"
    write_clip(clip, drawn)
    on = published_frames(clip)
    off = published_frames(clip, "--redact", "off")
    assert len(on) >= 20 and len(off) >= 20
    assert carried(on, masks["band"]) == 0 and carried(on, masks["over"]) == 0
    # --redact off publishes the line drawn over tissue: the check above can fail.
    assert carried(off, masks["over"]) >= 0.8 * len(off)
