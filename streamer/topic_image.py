"""The frames topic's image of a YUV frame, made at display size: redaction's detection on a small
copy made from the planes, the boxes blanked in the display image.

The frames worker used to convert the whole crop to colour (~2.4 ms CPU for a 1080p crop here),
redact it at full size (its first step shrinks it again, ~2.8 ms for three channels) and then
downscale it to 640 px for the JPEG (~1.6 ms). Only the 640-px image leaves the process, so:

1. The glyph detector's working copy (engines.redact: the crop shrunk by an integer factor to
   <= 640 px, brightest channel) is made from the planes (streamer.yuv.to_bgr_shrunk: luma
   shrunk, then converted at the small size). For gray pixels (B-mode, white or gray text) this
   is the same copy up to rounding. At the small size chroma has half the resolution, and thin
   coloured strokes would lose brightness (measured: more coloured text missed), so the blocks
   around pixels whose chroma goes beyond the encoder's noise on gray video (|U-128|, |V-128|
   <= 3 on the sweeps and the bundled clip) are converted at full size and shrunk exactly as
   before; a crop mostly in colour (Doppler) takes the full-size path as a whole.
   Crops narrower than twice the display width keep the full-size conversion (the display copy
   needs it anyway: one conversion serves both).
2. The display image is that working copy when it already is the display size (a 1280-, 1920- or
   3840-wide crop), else the crop's planes halved, converted and resized (yuv.to_bgr_display).
3. The boxes, found in crop coordinates as before, are blanked in the display image rounded
   outwards (every display pixel a box reaches is black); the full-size path blanks the same way.

Exam captures keep the full-size redaction (Pipeline.outgoing_image). Figures: tools/bench_redact.py
(`topic` rows), docs/redaction.md, docs/latency.md "Session 5".
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.crop import CropRect
from engines.downscale import downscale_to_width
from engines.redact import blank_scaled, boxes_in_image, find_text_boxes, find_text_boxes_small, work_factor

from . import yuv

GRAY_CHROMA_NOISE = 3    # |U-128|, |V-128| of gray video after H.264 (measured); beyond it: colour
MOSTLY_COLOUR = 0.5      # coloured pixels spread over more than this share of the crop: full-size path


def coloured_blocks(frame, rect, factor: int) -> tuple[int, int, int, int] | None:
    """The blocks (x0, y0, x1, y1 in units of `factor` crop pixels) that hold every crop pixel whose
    chroma goes beyond the encoder noise of gray video, with one block to spare; None if none."""
    _, u, v = yuv.planes(frame.pixels, frame.height, frame.width)
    x0, y0 = max(0, rect.x0), max(0, rect.y0)
    cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, (min(frame.width, rect.x1) + 1) // 2, (min(frame.height, rect.y1) + 1) // 2
    mask = None
    for plane in (u, v):
        off = cv2.absdiff(plane[cy0:cy1, cx0:cx1], 128) > GRAY_CHROMA_NOISE   # type: ignore[operator]
        mask = off if mask is None else mask | off
    if not mask.any():
        return None
    bx, by, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    # chroma sample (cx, cy) covers crop pixels 2*(cx0+cx)-x0 .. +2 (the same for y)
    lx0, ly0 = 2 * (cx0 + bx) - x0, 2 * (cy0 + by) - y0
    lx1, ly1 = 2 * (cx0 + bx + bw) - x0, 2 * (cy0 + by + bh) - y0
    return (max(0, lx0 // factor - 1), max(0, ly0 // factor - 1),
            -(-lx1 // factor) + 1, -(-ly1 // factor) + 1)


def brightest(bgr: np.ndarray) -> np.ndarray:
    return cv2.max(cv2.max(bgr[:, :, 0], bgr[:, :, 1]), bgr[:, :, 2])


def detection_copy(frame, rect, factor: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(engines.redact's working copy of the crop: brightest channel, shrunk by `factor`; the small
    BGR it was made from) from the planes; None when colour covers most of the crop (then the
    full-size path is as cheap). Gray blocks come from the small planes (to_bgr_shrunk: the
    full-size copy up to rounding); blocks with colour are converted at full size and area-shrunk,
    exactly as engines.redact shrinks a BGR crop (thin coloured strokes keep their brightness)."""
    box = coloured_blocks(frame, rect, factor)      # first: a mostly coloured crop makes nothing here
    w, h = min(frame.width, rect.x1) - max(0, rect.x0), min(frame.height, rect.y1) - max(0, rect.y0)
    ws, hs = w // factor, h // factor
    if box is not None:
        bx0, by0, bx1, by1 = box[0], box[1], min(ws, box[2]), min(hs, box[3])
        if (bx1 - bx0) * (by1 - by0) > MOSTLY_COLOUR * ws * hs:
            return None
    work = yuv.to_bgr_shrunk(frame.pixels, frame.height, frame.width, rect, factor)
    gray = brightest(work)
    if box is not None and bx1 > bx0 and by1 > by0:
        x0, y0 = max(0, rect.x0) + bx0 * factor, max(0, rect.y0) + by0 * factor
        part = yuv.to_bgr(frame.pixels, frame.height, frame.width,
                          CropRect(x0, y0, x0 + (bx1 - bx0) * factor, y0 + (by1 - by0) * factor))
        if factor > 1:
            part = cv2.resize(part, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
        gray[by0:by1, bx0:bx1] = brightest(part)
    return gray, work


def display_image(frame, rect, max_width: int) -> np.ndarray:
    """The crop in colour at most `max_width` wide (YUV: halved on the planes, then converted)."""
    if frame.is_yuv:
        return yuv.to_bgr_display(frame.pixels, frame.height, frame.width, rect, max_width)
    return downscale_to_width(frame.colour(rect), max_width, cv2.INTER_LINEAR)


def display_and_boxes(frame, rect, max_width: int, redact: bool = True):
    """(the crop's display image, at most `max_width` wide, not yet blanked; the text boxes to blank,
    in crop coordinates: none when redact is False). The image may be a view of a BGR frame."""
    if frame.is_yuv and not redact:
        return display_image(frame, rect, max_width), []
    h, w = rect.height, rect.width
    f = work_factor(w)
    # Below twice the display width the display copy needs the full-size conversion anyway (no
    # halving): converting once and detecting on it is cheaper than two small copies.
    planes_path = frame.is_yuv and w >= 2 * max_width and h >= 8
    copy = detection_copy(frame, rect, f) if planes_path else None
    if copy is None:
        # BGR sources, crops under 2x the display width, mostly coloured crops: detection on the
        # full-size colour crop, as before (the boxes are blanked at display size all the same).
        full = frame.colour(rect)
        boxes = find_text_boxes(full) if redact else []
        return downscale_to_width(full, max_width, cv2.INTER_LINEAR), boxes
    gray, work = copy
    boxes = boxes_in_image(find_text_boxes_small(gray), f, w, h)
    if w % f == 0 and h % f == 0 and work.shape[1] == min(w, max_width):
        return work, boxes        # the working copy already is the display image (area means)
    return display_image(frame, rect, max_width), boxes


def redacted_display(frame, rect, max_width: int, redact: bool = True) -> np.ndarray:
    """The frames topic's image of a frame's crop: at most `max_width` wide, burned-in text blanked
    (unless redact is False)."""
    display, boxes = display_and_boxes(frame, rect, max_width, redact)
    if boxes:
        if np.may_share_memory(display, frame.pixels):   # a view of a BGR frame: never blank the frame
            display = display.copy()
        blank_scaled(display, boxes, display.shape[1] / rect.width, display.shape[0] / rect.height)
    return display
