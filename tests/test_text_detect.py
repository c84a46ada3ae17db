"""engines/text_detect.py: the learned text detector that looks again at every stored capture."""
import hashlib
import sys

import cv2
import numpy as np
import pytest

from engines.text_detect import MODEL, LearnedTextDetector

from .conftest import ROOT, SAMPLE_CLIP

sys.path.insert(0, str(ROOT / "tools"))
from bench_redact import unboxed_share  # noqa: E402

pytest.importorskip("onnxruntime")

LINES = (("DOE, JANE", cv2.FONT_HERSHEY_SIMPLEX, (255, 255, 255)),
         ("ID 4821337", cv2.FONT_HERSHEY_DUPLEX, (0, 255, 255)),
         ("DOB 1991-04-17", cv2.FONT_HERSHEY_COMPLEX, (200, 200, 200)))


@pytest.fixture(scope="module")
def detector():
    return LearnedTextDetector()


@pytest.fixture(scope="module")
def frames():
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    out = []
    for i in range(200):
        ok, f = cap.read()
        if not ok:
            break
        if i % 50 == 0:
            out.append(np.ascontiguousarray(f[80:660, 140:920]))   # the imaging region, no scanner header
    return out


def test_the_committed_model_is_the_documented_file():
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == \
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"


def _draw(frame, text, org, font, colour, scale=0.9, thick=2):
    img, mask = frame.copy(), np.zeros(frame.shape[:2], np.uint8)
    for target, c in ((img, colour), (mask, 255)):
        cv2.putText(target, text, org, font, scale, c, thick, cv2.LINE_AA)
    return img, mask > 0


def _covered(boxes, mask):
    return 1.0 - unboxed_share(boxes, mask)


def test_lines_drawn_over_tissue_are_covered(detector, frames):
    """Patient-like lines in three fonts and colours over real ultrasound: what a stored capture gets (the live
    detector's boxes, then this one's) covers each line; this detector alone covers most of each."""
    from engines.redact import find_text_boxes
    assert len(frames) >= 3
    for frame in frames:
        for k, (text, font, colour) in enumerate(LINES):
            img, mask = _draw(frame, text, (60 + 40 * k, 120 + 90 * k), font, colour)
            learned = detector.boxes(img)
            assert _covered(learned + find_text_boxes(img), mask) > 0.85, text
            assert _covered(learned, mask) > 0.6, text
            redacted, boxes = detector.redact(img)
            assert boxes and (redacted[mask] == 0).mean() > 0.6 and not (img[mask] == 0).all()


def test_it_catches_a_line_the_live_detector_misses(detector, frames):
    """A green gestational-age line low over the image: the live detector (engines.redact) misses it on most of
    these frames, the learned one covers it on all: the reason the stored captures get the second look."""
    from engines.redact import find_text_boxes
    live_missed = 0
    for frame in frames:
        img, mask = _draw(frame, "GA 23w4d", (100, 480), cv2.FONT_HERSHEY_DUPLEX, (80, 255, 80))
        assert _covered(detector.boxes(img), mask) > 0.95
        live_missed += _covered(find_text_boxes(img), mask) < 0.5
    assert live_missed >= 2


def test_boxes_are_line_shaped_and_inside_the_image(detector, frames):
    """The width >= 2 x height rule (text lines are wide; the squarish regions the network also gives on
    regular bright anatomy are dropped) and image bounds, on every box of clean and texted frames."""
    seen = 0
    for frame in frames:
        img = frame.copy()
        cv2.putText(img, "GA 23w4d  LMP", (100, 300), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
        for image in (frame, img):
            for b in detector.boxes(image):
                seen += 1
                assert 0 <= b.x0 < b.x1 <= image.shape[1] and 0 <= b.y0 < b.y1 <= image.shape[0]
                # A region at least twice as wide as tall, then grown by the same margin on every side.
                assert (b.x1 - b.x0) > (b.y1 - b.y0)
    assert seen >= len(frames)


def test_gray_and_empty_inputs(detector):
    gray = np.zeros((240, 320), np.uint8)
    assert detector.boxes(gray) == []
    cv2.putText(gray, "SMITH, ANNA", (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2, cv2.LINE_AA)
    assert detector.boxes(gray)
    same, boxes = detector.redact(np.zeros((64, 64, 3), np.uint8))
    assert boxes == [] and same.shape == (64, 64, 3)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="text detector model not found"):
        LearnedTextDetector(tmp_path / "nope.onnx")
