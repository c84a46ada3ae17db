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
