import cv2
import numpy as np
import pytest

from engines.crop import PRESETS, CropRect, CropTracker, detect_ultrasound_region


def scanner_screen(w=1280, h=720, seed=0, region=(200, 120, 1000, 690)):
    """A synthetic scanner screen: speckled image region, burned-in text above, a UI side panel."""
    rng = np.random.default_rng(seed)
    frame = np.full((h, w, 3), 10, np.uint8)
    x0, y0, x1, y1 = region
    tissue = cv2.GaussianBlur(rng.uniform(30, 200, (y1 - y0, x1 - x0)).astype(np.float32), (0, 0), 8)
    speckle = rng.rayleigh(1.0, tissue.shape)
    frame[y0:y1, x0:x1] = np.clip(tissue * speckle, 0, 255).astype(np.uint8)[:, :, None]
    cv2.putText(frame, "DOE^JANE ID 123456 22/11/2026", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    for i, t in enumerate(("Gn 52", "DR 60", "FR 30Hz")):
        cv2.putText(frame, t, (1080, 200 + 40 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (220, 220, 220), 2)
    frame[200:500, 40:56] = np.linspace(255, 0, 300).astype(np.uint8)[:, None, None]  # grey bar
    return frame


def test_detects_image_region_and_excludes_burned_in_text():
    rect = detect_ultrasound_region(scanner_screen())
    assert rect is not None
    assert rect.y0 >= 75                 # the patient-name line (baseline y=60) is outside
    assert rect.x1 <= 1075               # the right UI panel is outside
    assert rect.x0 >= 60                 # the grey bar is outside
    assert rect.iou(CropRect(200, 120, 1000, 690)) > 0.8


def test_blank_screen_has_no_region():
    frame = scanner_screen()
    frame[120:690, 200:1000] = 3
    assert detect_ultrasound_region(frame) is None


def test_tracker_is_stable_under_speckle_and_keeps_region_through_blank():
    tracker = CropTracker("auto", redetect_every=1)
    rects = {tracker.update(scanner_screen(seed=s)) for s in range(20)}
    assert len(rects) == 1
    blank = scanner_screen()
    blank[120:690, 200:1000] = 3
    assert tracker.update(blank) in rects


def test_tracker_redetects_on_resolution_change():
    tracker = CropTracker("auto")
    r1 = tracker.update(scanner_screen())
    small = cv2.resize(scanner_screen(), (640, 360))
    r2 = tracker.update(small)
    assert r2 != r1 and r2.x1 <= 640 and r2.y1 <= 360


def test_tracker_accepts_a_moved_region_only_when_seen_again():
    tracker = CropTracker("auto", redetect_every=1, accept_after=2)
    r1 = tracker.update(scanner_screen(region=(200, 120, 1000, 690)))
    moved = scanner_screen(region=(300, 150, 900, 690))
    assert tracker.update(moved) == r1          # first sighting: hold
    r3 = tracker.update(moved)
    assert r3 != r1 and r3.iou(CropRect(300, 150, 900, 690)) > 0.8


def test_preset_applies_only_to_its_frame_size():
    tracker = CropTracker("sononet_975x735")
    assert tracker.update(np.zeros((735, 975, 3), np.uint8)) == PRESETS["sononet_975x735"].rect
    other = tracker.update(scanner_screen())
    assert other != PRESETS["sononet_975x735"].rect


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError):
        CropTracker("no_such_preset")
