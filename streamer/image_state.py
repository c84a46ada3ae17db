"""Blank and frozen detection on the cropped ultrasound region.

- blank: the probe is lifted — the image region is dark: 90 % of its pixels are near black (a few
  bright pixels of UI ticks or text inside the region do not count).
- frozen: the scanner's freeze — the image does not change. Live B-mode speckle changes every
  frame, while a frozen image re-encoded by H.264 differs by well under one grey level; the
  threshold sits between the two. Frozen is reported after `frozen_min_s` of stillness.
Both run on a 160x120 gray copy (area halvings, then one small resize): a fraction of a
millisecond at 1080p. The input may be a limited-range Y plane (the YUV path, streamer/yuv.py):
the probe is then mapped to the gray a BGR conversion gives, so the thresholds keep their meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.downscale import halve_times, halvings_to
from engines.preprocess import limited_luma_to_gray

PROBE_SIZE = (160, 120)
# Below this mean grey change between frames an image is not live (the frozen detector's default).
FROZEN_DIFF_MAX = 0.15


@dataclass(frozen=True)
class ImageState:
    blank: bool
    frozen: bool
    mean: float
    change: float    # mean absolute difference to the previous image (grey levels)


class ImageStateDetector:
    def __init__(self, blank_p90_max: float = 20.0, frozen_diff_max: float = FROZEN_DIFF_MAX,
                 frozen_min_s: float = 0.4):
        self.blank_p90_max = blank_p90_max
        self.frozen_diff_max = frozen_diff_max
        self.frozen_min_s = frozen_min_s
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None
        self._still_since: float | None = None

    def update(self, roi_bgr: np.ndarray, t: float, luma_range: str | None = None) -> ImageState:
        """roi_bgr: the crop (BGR, gray, or with luma_range="limited" a Y plane), t: media time s."""
        # Halvings first (fast integer path), then one small resize: a direct INTER_AREA from a
        # 1080p crop to 160x120 costs several ms (engines/downscale.py).
        h, w = roi_bgr.shape[:2]
        roi_bgr = halve_times(roi_bgr, halvings_to(w, h, 2 * PROBE_SIZE[0], 2 * PROBE_SIZE[1]))
        small = cv2.resize(roi_bgr, PROBE_SIZE, interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small[:, :, :3], cv2.COLOR_BGR2GRAY)
        probe = small
        small = small.astype(np.float32)
        if luma_range == "limited":
            limited_luma_to_gray(small)
        mean = float(small.mean())
        blank = self._p90_at_most(probe, small, luma_range)
        change = float("inf") if self._prev is None else float(np.abs(small - self._prev).mean())
        self._prev = small
        if self._still_since is not None and t < self._still_since:
            self._still_since = None         # time went backwards (file looped / restarted)
        if blank or change > self.frozen_diff_max:
            self._still_since = None
        elif self._still_since is None:
            self._still_since = t
        frozen = self._still_since is not None and t - self._still_since >= self.frozen_min_s
        return ImageState(blank=blank, frozen=frozen, mean=mean, change=change)

    def _p90_at_most(self, probe: np.ndarray, gray: np.ndarray, luma_range: str | None) -> bool:
        """np.percentile(gray, 90) <= blank_p90_max, from a histogram of the uint8 probe (~0.03 ms
        instead of ~0.35 for the percentile's partition). gray is a monotonic map of probe, so the
        two order statistics the percentile interpolates between are the map of the probe's; only
        when the threshold falls between them is the percentile itself computed (same answer)."""
        if probe.dtype != np.uint8 or gray.size < 2:
            return float(np.percentile(gray, 90)) <= self.blank_p90_max
        counts = np.cumsum(cv2.calcHist([probe], [0], None, [256], [0, 256]).ravel())
        at = 0.9 * (gray.size - 1)
        k = int(np.floor(at))                              # sorted[k] <= p90 <= sorted[k + 1]
        if at - k < 1e-6 or k + 1 >= gray.size:           # on an order statistic: no bracket to trust
            return float(np.percentile(gray, 90)) <= self.blank_p90_max
        lo, hi = np.searchsorted(counts, [k + 1, k + 2]).astype(np.float32)   # probe values at k, k + 1
        if luma_range == "limited":
            lo, hi = limited_luma_to_gray(np.array([lo, hi], np.float32))
        if hi <= self.blank_p90_max:
            return True
        if lo > self.blank_p90_max:
            return False
        return float(np.percentile(gray, 90)) <= self.blank_p90_max
