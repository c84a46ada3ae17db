"""Decoded YUV 4:2:0 frames kept as they come out of the decoder (the luma path).

H.264 / HEVC decoders output planar YUV 4:2:0 (`yuv420p`): a full-size luma plane Y and two
quarter-size chroma planes U, V. Converting every frame to BGR costs more than the decode's own
output copy (measured: +4.3 ms CPU per 1080p frame, +17 ms per 4K frame, docs/latency.md), and
almost nothing downstream needs colour: the plane models are gray (channels=1), blank/frozen
detection is gray, the crop tracker's detection runs on a small copy. So the capture hands over
the planes as one I420 buffer (Y rows, then U, then V: 1.5 bytes per pixel instead of 3), the
pipeline works on the Y plane, and only what leaves the process in colour (the frames topic, at
most 30 per second, exam captures) is converted, and only its crop.

Luma vs the colour mean: the models average B, G and R; for the gray pixels of a B-mode image
that mean is an affine map of limited-range BT.601 luma, gray = (Y - 16) * 255 / 219, which is
what engines.preprocess.limited_luma_to_gray applies on the small images (the model input after resizing, the 160x120
blank/frozen probe), so thresholds and normalisations keep their meaning. Colour conversion uses
OpenCV's BT.601 limited-range I420 conversion (what FFmpeg's swscale applies to untagged video).
Only limited-range 4:2:0 with even width and height takes this path; anything else (full-range
`yuvj420p`, 4:2:2, RGB sources, the OpenCV camera source, odd sizes) stays BGR end to end.
"""
from __future__ import annotations

import numpy as np

# OpenCV is imported where it is used: the capture process imports this module for planes() alone
# and stays without OpenCV.

def i420_rows(height: int) -> int:
    """Rows of the (rows, width) uint8 array holding an I420 frame of `height` rows."""
    return height * 3 // 2


def planes(i420: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, U, V) views of an I420 buffer: Y height x width, U and V height/2 x width/2."""
    flat = i420.reshape(-1)
    n, q = height * width, (height // 2) * (width // 2)
    return (flat[:n].reshape(height, width), flat[n:n + q].reshape(height // 2, width // 2),
            flat[n + q:n + 2 * q].reshape(height // 2, width // 2))


def write_planes(i420: np.ndarray, height: int, width: int, src: tuple) -> None:
    """Copy (Y, U, V) arrays (any strides: the decoder's padded lines) into an I420 buffer."""
    for dst, plane in zip(planes(i420, height, width), src):
        dst[:] = plane


def _pack(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Y (even h x even w), U and V (h/2 x w/2) into one contiguous I420 array for cv2.cvtColor."""
    h, w = y.shape
    out = np.empty((i420_rows(h), w), np.uint8)
    dst_y, dst_u, dst_v = planes(out, h, w)
    dst_y[:] = y
    dst_u[:] = u
    dst_v[:] = v
    return out


def _even_box(rect, height: int, width: int) -> tuple[int, int, int, int]:
    """The rect grown to even corners (chroma samples cover 2x2 luma pixels), inside the frame."""
    x0, y0 = max(0, rect.x0) & ~1, max(0, rect.y0) & ~1
    x1, y1 = min(width, rect.x1 + (rect.x1 & 1)), min(height, rect.y1 + (rect.y1 & 1))
    return x0, y0, x1, y1


def _box_planes(i420: np.ndarray, height: int, width: int, box: tuple[int, int, int, int]):
    """(Y, U, V) views of the even box (x0, y0, x1, y1) of an I420 buffer (see _even_box)."""
    x0, y0, x1, y1 = box
    y, u, v = planes(i420, height, width)
    return (y[y0:y1, x0:x1], u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], v[y0 // 2:y1 // 2, x0 // 2:x1 // 2])


def _chroma_sized(c: np.ndarray, width: int, height: int) -> np.ndarray:
    """A chroma plane at exactly height x width: area-resized where rounding left it a sample off."""
    import cv2
    return c if c.shape == (height, width) else cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA)


def to_bgr(i420: np.ndarray, height: int, width: int, rect=None) -> np.ndarray:
    """BGR uint8 of the whole frame, or of `rect` (an engines.crop.CropRect) only."""
    import cv2
    if rect is None or (rect.x0, rect.y0, rect.x1, rect.y1) == (0, 0, width, height):
        return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    x0, y0, x1, y1 = box = _even_box(rect, height, width)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((max(0, rect.y1 - rect.y0), max(0, rect.x1 - rect.x0), 3), np.uint8)
    bgr = cv2.cvtColor(_pack(*_box_planes(i420, height, width, box)), cv2.COLOR_YUV2BGR_I420)
    dx, dy = max(0, rect.x0) - x0, max(0, rect.y0) - y0
    return bgr[dy:dy + min(rect.y1, height) - max(0, rect.y0), dx:dx + min(rect.x1, width) - max(0, rect.x0)]


def to_bgr_halved(i420: np.ndarray, height: int, width: int, rect, halvings: int) -> np.ndarray:
    """BGR of `rect` downscaled by 2**halvings, converted AFTER downscaling (the conversion is
    per pixel and linear but for rounding, so this is the full-size conversion downscaled, at a
    fraction of its cost). Each plane is halved with engines.downscale (2x2 means); the result is
    cut to even sizes (at most one small pixel off the right and bottom)."""
    import cv2

    from engines.downscale import halve_times
    if halvings <= 0:
        return to_bgr(i420, height, width, rect)
    y, u, v = _box_planes(i420, height, width, _even_box(rect, height, width))
    small_y = halve_times(y, halvings)
    h2, w2 = small_y.shape[0] & ~1, small_y.shape[1] & ~1
    if h2 < 2 or w2 < 2:
        return np.zeros((max(1, small_y.shape[0]), max(1, small_y.shape[1]), 3), np.uint8)
    chroma = [_chroma_sized(halve_times(c, halvings), w2 // 2, h2 // 2) for c in (u, v)]
    return cv2.cvtColor(_pack(small_y[:h2, :w2], *chroma), cv2.COLOR_YUV2BGR_I420)


def to_bgr_shrunk(i420: np.ndarray, height: int, width: int, rect, factor: int) -> np.ndarray:
    """BGR of the crop `rect` shrunk by the integer `factor` with area means: (h // f, w // f), the
    size engines.redact shrinks a BGR crop to (the glyph detector's working copy), made without
    converting the crop at full size. Y is area-shrunk by `factor`, U and V to half the small size
    (4:2:0 at the small size, as the full-size crop is 4:2:0), and the small planes are converted.
    Conversion is affine, so for gray pixels (all of B-mode, white and gray text) this is the
    full-size conversion shrunk up to rounding; saturated colour edges differ more (chroma at
    half the small resolution, where the full-size path averages full-size chroma)."""
    import cv2
    x0, y0 = max(0, rect.x0), max(0, rect.y0)
    w, h = min(width, rect.x1) - x0, min(height, rect.y1) - y0
    ws, hs = w // factor, h // factor
    if ws < 1 or hs < 1:
        return np.zeros((max(0, hs), max(0, ws), 3), np.uint8)
    wc, hc = ws * factor, hs * factor                 # the luma area the small copy covers
    y, u, v = planes(i420, height, width)
    y_crop = y[y0:y0 + hc, x0:x0 + wc]
    small_y = y_crop if factor == 1 else cv2.resize(y_crop, (ws, hs), interpolation=cv2.INTER_AREA)
    we, he = ws + (ws & 1), hs + (hs & 1)             # I420 needs even sizes: repeat the last pixel
    if (we, he) != (ws, hs):
        small_y = cv2.copyMakeBorder(small_y, 0, he - hs, 0, we - ws, cv2.BORDER_REPLICATE)
    # The chroma samples from the luma area's corner, `factor` of them per small chroma sample in each
    # direction (one small chroma sample covers 2x2 small pixels = 2*factor full luma pixels): an
    # integer shrink, OpenCV's fast area path. An odd corner takes the sample its pixel shares, and
    # when the small size was made even the last row / column comes from the samples just past the
    # luma area (edge samples repeated at the frame's border): at most a sample off, at the edge.
    cx0, cy0 = x0 // 2, y0 // 2
    cw, ch = (we // 2) * factor, (he // 2) * factor
    chroma = []
    for p in (u, v):
        part = p[cy0:cy0 + ch, cx0:cx0 + cw]
        if part.shape != (ch, cw):
            part = cv2.copyMakeBorder(part, 0, ch - part.shape[0], 0, cw - part.shape[1], cv2.BORDER_REPLICATE)
        chroma.append(part if factor == 1 else cv2.resize(part, (we // 2, he // 2), interpolation=cv2.INTER_AREA))
    return cv2.cvtColor(_pack(small_y, *chroma), cv2.COLOR_YUV2BGR_I420)[:hs, :ws]


def to_bgr_display(i420: np.ndarray, height: int, width: int, rect, max_width: int) -> np.ndarray:
    """BGR of the crop `rect` at most `max_width` wide (aspect kept), as a display copy: the planes
    halved on OpenCV's fast path (sizes cut to a multiple of the halving step first: at most a
    few pixels off the right and bottom, stretched back by the last resize), resized linearly to
    the display size, then converted. Crops no wider than `max_width`: to_bgr."""
    import cv2

    from engines.downscale import halve_times, halvings_to
    w, h = min(width, rect.x1) - max(0, rect.x0), min(height, rect.y1) - max(0, rect.y0)
    if w <= max_width:
        return to_bgr(i420, height, width, rect)
    dw, dh = max_width, max(1, round(h * max_width / w))
    n = halvings_to(w, h, max_width)
    step = 2 ** (n + 1)                               # chroma too must halve n times at even sizes
    x0, y0, x1, y1 = _even_box(rect, height, width)
    x1, y1 = x0 + (x1 - x0) // step * step, y0 + (y1 - y0) // step * step
    if x1 - x0 < step or y1 - y0 < step:
        return cv2.resize(to_bgr(i420, height, width, rect), (dw, dh), interpolation=cv2.INTER_AREA)
    y, u, v = _box_planes(i420, height, width, (x0, y0, x1, y1))
    # The last, linear step on the planes (1.5 bytes a pixel, not 3), to an even size, then convert.
    ew, eh = dw + (dw & 1), dh + (dh & 1)
    small = [cv2.resize(halve_times(y, n), (ew, eh), interpolation=cv2.INTER_LINEAR)]
    small += [cv2.resize(halve_times(p, n), (ew // 2, eh // 2), interpolation=cv2.INTER_LINEAR) for p in (u, v)]
    return cv2.cvtColor(_pack(*small), cv2.COLOR_YUV2BGR_I420)[:dh, :dw]
