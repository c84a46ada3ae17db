"""Scanner-UI crop: find the ultrasound image region of a scanner screen and keep it stable.

Scanner HDMI output shows the ultrasound image inside vendor UI: patient name and dates burned in
at the top, side panels, grey-scale bars, rulers. The classifier must see only the image region,
and nothing outside it is ever published. Two ways to get the region:

- a preset for a known screen layout (applies only when the frame size matches), e.g.
  `sononet_975x735`: rows 115:734, cols 81:874 of the 975x735 frames SonoNet16 was trained on;
- automatic detection (`detect_ultrasound_region`): on a small gray copy, pixels that are
  ultrasound-like (lit, unsaturated) are closed into one blob, thin structures (text lines,
  rulers, bars) are opened away, and the largest blob's bounding box is the region.

`CropTracker` keeps the region stable over time: it re-detects periodically, accepts a new region
only when it is seen again (hysteresis), keeps the old one through blank frames, and re-detects at
once when the frame size or channel count changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropRect:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def apply(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y0:self.y1, self.x0:self.x1]

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def iou(self, other: "CropRect") -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    @staticmethod
    def full(frame: np.ndarray) -> "CropRect":
        return CropRect(0, 0, frame.shape[1], frame.shape[0])


@dataclass(frozen=True)
class CropPreset:
    frame_width: int
    frame_height: int
    rect: CropRect
    description: str = ""


PRESETS: dict[str, CropPreset] = {
    "sononet_975x735": CropPreset(975, 735, CropRect(81, 115, 874, 734),
                                  "SonoNet16 training frames: rows 115:734, cols 81:874"),
}

DETECT_WIDTH = 320          # detection runs on a copy this wide: ~1 ms at 1080p
MIN_SIDE_FRACTION = 0.25    # a region narrower/shorter than this share of the screen is not an image
MARGIN = 0.06              # grow the detected box by this share of its size (sides, bottom)
BLOB_MIN_FRACTION = 0.01    # blobs smaller than this share of the screen are UI debris


HEADER_SEARCH = 0.3         # text lines this far (share of the region's height) below its top are checked
HEADER_TISSUE_MAX = 0.15    # a text line whose rows are less than this share tissue is a header line


def below_header(frame: np.ndarray, textured: np.ndarray, scale: float, x: int, y: int, bw: int,
                 bh: int) -> int:
    """The region's top row (detection scale), moved below any header text line it took in.

    Scanners burn patient name, ID and dates in above the image, sometimes on a band touching
    it, sometimes large and bright enough to be closed into the image blob. A text line near the
    region's top whose rows are mostly not tissue (beside the glyphs) is a header line: the top
    moves below it, repeatedly (headers have several lines). Text with tissue on both sides of it
    (settings beside the sector, a name drawn over the image) stays in and is redacted instead.
    """
    from .redact import find_text_boxes

    inv = 1.0 / scale
    fx0, fx1 = int(x * inv), int(np.ceil((x + bw) * inv))
    fy0, fy1 = int(y * inv), int(np.ceil((y + bh * HEADER_SEARCH) * inv))
    strip = frame[fy0:fy1, fx0:fx1]
    boxes = sorted(find_text_boxes(strip, cover=False), key=lambda b: b.y0)
    if not boxes:
        return y
    not_text = np.ones((fy1 - fy0, fx1 - fx0), bool)
    for b in boxes:
        not_text[b.y0:b.y1, b.x0:b.x1] = False
    top = 0                        # strip rows (full resolution)
    for b in boxes:
        if b.y0 > top + 0.1 * bh * inv:       # not adjacent to the current top: the image has begun
            break
        rows = slice(int(b.y0 * scale) + y, max(int(b.y0 * scale) + 1, int(np.ceil(b.y1 * scale))) + y)
        band = textured[rows, x:x + bw] & cv2.resize(not_text[b.y0:b.y1].astype(np.uint8),
                                                     (bw, rows.stop - rows.start),
                                                     interpolation=cv2.INTER_NEAREST).astype(bool)
        if band.mean() < HEADER_TISSUE_MAX:
            top = max(top, b.y1)
    return y + int(np.ceil(top * scale)) if top else y


def detect_ultrasound_region(frame: np.ndarray, header_rule: bool = True) -> CropRect | None:
    """Bounding box of the ultrasound image region, or None when no image is found (blank screen).

    header_rule: move the top below header text lines (`below_header`); off only to measure it."""
    h, w = frame.shape[:2]
    scale = DETECT_WIDTH / w
    small = cv2.resize(frame, (DETECT_WIDTH, max(8, int(round(h * scale)))), interpolation=cv2.INTER_AREA)
    if small.ndim == 3 and small.shape[2] >= 3:
        hsv = cv2.cvtColor(small[:, :, :3], cv2.COLOR_BGR2HSV)
        gray = hsv[:, :, 2]
        # Ultrasound B-mode is gray; coloured UI (logos, colour bars, buttons) is not image.
        gray_ok = hsv[:, :, 1] < 60
    else:
        gray = small if small.ndim == 2 else small[:, :, 0]
        gray_ok = np.ones(gray.shape, bool)
    # Ultrasound pixels: lit and textured (speckle). UI header bars and panels are flat, text is
    # sparse: a row or column of the image region is mostly ultrasound-like, one of UI is not.
    # Texture must be there in both directions: gradient bars vary one way only.
    g = gray.astype(np.float32)
    dx = np.zeros_like(g)
    dy = np.zeros_like(g)
    dx[:, 1:] = np.abs(np.diff(g, axis=1))
    dy[1:, :] = np.abs(np.diff(g, axis=0))
    texture = np.minimum(cv2.blur(dx, (3, 3)), cv2.blur(dy, (3, 3)))
    mask = textured = (g > 10) & (texture > 1.5) & gray_ok
    # Close speckle gaps, then open away thin things (text, rulers, tick marks).
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8)) > 0
    # Union of the sizeable blobs that survive: the image (fluid-filled dark areas can split it).
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= BLOB_MIN_FRACTION * mask.size]
    if not big:
        return None
    x = min(stats[i, cv2.CC_STAT_LEFT] for i in big)
    y = min(stats[i, cv2.CC_STAT_TOP] for i in big)
    bw = max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in big) - x
    bh = max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in big) - y
    if header_rule:
        top = below_header(frame, textured, scale, x, y, bw, bh)
        y, bh = top, bh - (top - y)
    if bw < MIN_SIDE_FRACTION * mask.shape[1] or bh < MIN_SIDE_FRACTION * mask.shape[0]:
        return None
    # The tissue's bounding box is tighter than the scanner's imaging area that models were
    # trained on (dark fluid and the sector's black corners belong to it): grow it a little.
    # Never upwards: scanners burn patient name and dates in above the image.
    mx, my = int(round(MARGIN * bw)), int(round(MARGIN * bh))
    x, bw, bh = x - mx, bw + 2 * mx, bh + my
    inv = 1.0 / scale
    return CropRect(max(0, int(np.floor(x * inv))), max(0, int(np.floor(y * inv))),
                    min(w, int(np.ceil((x + bw) * inv))), min(h, int(np.ceil((y + bh) * inv))))


class CropTracker:
    """Keeps the crop region stable over time.

    preset: "auto" (detect), "none" (whole frame), or a PRESETS name (auto when the size differs).
    """

    def __init__(self, preset: str | None = "auto", redetect_every: int = 15, accept_after: int = 2,
                 min_change_iou: float = 0.9):
        preset = preset or "none"
        if preset not in ("auto", "none") and preset not in PRESETS:
            raise ValueError(f"unknown crop preset '{preset}' (choose auto, none, {', '.join(PRESETS)})")
        self.preset = preset
        self.redetect_every = redetect_every
        self.accept_after = accept_after
        self.min_change_iou = min_change_iou
        self.rect: CropRect | None = None
        self._shape: tuple[int, ...] | None = None
        self._frames_since_detect = 0
        self._candidate: CropRect | None = None
        self._candidate_hits = 0
        self.redetections = 0

    def update(self, frame: np.ndarray) -> CropRect:
        shape = frame.shape
        if shape != self._shape:       # new resolution or pixel layout: start over at once
            self._shape = shape
            self.rect = None
            self._candidate, self._candidate_hits = None, 0
        if self.preset == "none":
            self.rect = CropRect.full(frame)
            return self.rect
        preset = PRESETS.get(self.preset)
        if preset is not None and (shape[1], shape[0]) == (preset.frame_width, preset.frame_height):
            self.rect = preset.rect
            return self.rect
        if self.rect is None:
            self.rect = detect_ultrasound_region(frame)
            self._frames_since_detect = 0
            self.redetections += 1
            return self.rect or CropRect.full(frame)
        self._frames_since_detect += 1
        if self._frames_since_detect >= self.redetect_every:
            self._frames_since_detect = 0
            self._consider(detect_ultrasound_region(frame))
        return self.rect

    def _consider(self, found: CropRect | None) -> None:
        # Blank frames (probe lifted) find nothing: keep the region we have.
        if found is None or found.iou(self.rect) >= self.min_change_iou:
            self._candidate, self._candidate_hits = None, 0
            return
        if self._candidate is not None and found.iou(self._candidate) >= self.min_change_iou:
            self._candidate_hits += 1
        else:
            self._candidate, self._candidate_hits = found, 1
        if self._candidate_hits >= self.accept_after:
            self.rect, self._candidate, self._candidate_hits = self._candidate, None, 0
            self.redetections += 1
