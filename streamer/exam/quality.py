"""Frame quality for best-frame capture (docs/exam.md, "Score").

score = 0.60 * probability + 0.25 * sharpness + 0.15 * steadiness, each part in 0..1:
- probability: the model's calibrated probability (softmax(logits / T)) of the view's label(s) in
  THIS frame (summed over the view's labels, or over all labels of its plane);
- sharpness: variance of the Laplacian of the frame at a fixed 320x240 grey working size
  (resolution independent), mapped to 0..1 by v / (v + SHARPNESS_HALF);
- steadiness: mean absolute grey difference to the previous frame at 160x120 (probe motion and
  blur between frames), mapped to 0..1 by 1 / (1 + d / STEADINESS_HALF).
The probability dominates (a sharp frame of the wrong plane is worthless); among confident frames
the sharper, stiller one wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image_state import FROZEN_DIFF_MAX, PROBE_SIZE

WEIGHTS = {"probability": 0.60, "sharpness": 0.25, "steadiness": 0.15}
SHARPNESS_HALF = 150.0     # Laplacian variance (grey levels^2) scoring 0.5
STEADINESS_HALF = 3.0      # mean grey difference to the previous frame scoring 0.5
# Below this change between frames an image is not live (a scanner freeze re-encoded by H.264 moves well
# under it; live B-mode speckle well over it): the frozen detector's own threshold and probe size.
STILL_DIFF_MAX = FROZEN_DIFF_MAX
WORK_SIZE = (320, 240)


@dataclass(frozen=True)
class Quality:
    probability: float
    sharpness: float
    steadiness: float

    @property
    def score(self) -> float:
        return (WEIGHTS["probability"] * self.probability + WEIGHTS["sharpness"] * self.sharpness
                + WEIGHTS["steadiness"] * self.steadiness)

    def parts(self) -> dict[str, float]:
        return {"probability": round(self.probability, 4), "sharpness": round(self.sharpness, 4),
                "steadiness": round(self.steadiness, 4)}


def grey_work(image: np.ndarray) -> np.ndarray:
    """The frame at the fixed working size, grey float32 (INTER_LINEAR: cheap at 1080p)."""
    small = cv2.resize(image, WORK_SIZE, interpolation=cv2.INTER_LINEAR)
    if small.ndim == 3:
        small = cv2.cvtColor(small[:, :, :3], cv2.COLOR_BGR2GRAY)
    return small.astype(np.float32)


class QualityProbe:
    """Sharpness and steadiness of each frame; keeps the previous probe image for steadiness."""

    def __init__(self):
        self._prev: np.ndarray | None = None
        self._prev_frame: int | None = None
        self.last_diff = float("inf")   # grey-level change of the last measured frame

    def measure(self, image: np.ndarray, frame_index: int) -> tuple[float, float]:
        work = grey_work(image)
        lap_var = float(cv2.Laplacian(work, cv2.CV_32F).var())
        probe = cv2.resize(work, PROBE_SIZE, interpolation=cv2.INTER_AREA)
        if self._prev is None or self._prev_frame is None or frame_index <= self._prev_frame:
            diff = STEADINESS_HALF * 3     # no previous frame: not known to be steady
        else:
            diff = float(np.abs(probe - self._prev).mean())
        self._prev, self._prev_frame = probe, frame_index
        self.last_diff = diff
        return lap_var / (lap_var + SHARPNESS_HALF), 1.0 / (1.0 + diff / STEADINESS_HALF)

    def reset(self) -> None:
        self._prev, self._prev_frame = None, None
