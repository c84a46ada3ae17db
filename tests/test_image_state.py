import numpy as np

from streamer.image_state import ImageStateDetector


def speckle(seed):
    return np.random.default_rng(seed).integers(20, 220, (480, 640, 3), dtype=np.uint8)


def test_live_speckle_is_neither_blank_nor_frozen():
    d = ImageStateDetector()
    states = [d.update(speckle(i), i / 30) for i in range(30)]
    assert not any(s.blank or s.frozen for s in states)


def test_frozen_after_min_time():
    d = ImageStateDetector(frozen_min_s=0.4)
    img = speckle(1)
    states = [d.update(img, i / 30) for i in range(30)]
    assert not states[5].frozen and states[20].frozen and states[-1].frozen
    assert not d.update(speckle(2), 1.0).frozen     # live again at once


def test_blank_probe_lifted():
    d = ImageStateDetector()
    dark = np.random.default_rng(0).integers(0, 8, (480, 640, 3), dtype=np.uint8)
    dark[10:14, 100:300] = 200                       # a UI tick inside the region does not matter
    s = d.update(dark, 0.0)
    assert s.blank and not s.frozen


def test_blank_from_the_histogram_is_the_percentiles_answer():
    """Session 7: the blank test reads the 90th percentile's bracket off a histogram of the uint8
    probe. On frames of the bundled clip dimmed towards black (luma planes and BGR, every brightness
    around the threshold) it decides exactly as np.percentile(probe, 90) <= threshold did."""
    import cv2

    from engines.preprocess import limited_luma_to_gray
    from streamer.image_state import PROBE_SIZE
    from streamer.sources import open_source

    from .conftest import SAMPLE_CLIP
    d = ImageStateDetector()
    src = open_source(str(SAMPLE_CLIP), yuv420=True)
    seen = {True: 0, False: 0}
    try:
        for k, frame in enumerate(src.frames()):
            if k % 60:
                continue
            luma = frame.planes[0]
            for gain in np.linspace(0.02, 0.4, 30):
                for image, lr in ((cv2.convertScaleAbs(luma, alpha=gain, beta=16 * (1 - gain)), "limited"),
                                  (cv2.convertScaleAbs(cv2.cvtColor(luma, cv2.COLOR_GRAY2BGR), alpha=gain), None)):
                    probe = cv2.resize(image, PROBE_SIZE, interpolation=cv2.INTER_AREA)
                    if probe.ndim == 3:
                        probe = cv2.cvtColor(probe, cv2.COLOR_BGR2GRAY)
                    gray = probe.astype(np.float32)
                    if lr:
                        limited_luma_to_gray(gray)
                    want = float(np.percentile(gray, 90)) <= d.blank_p90_max
                    assert d._p90_at_most(probe, gray, lr) == want
                    seen[want] += 1
    finally:
        src.close()
    assert seen[True] > 100 and seen[False] > 100      # both sides of the threshold were tried
