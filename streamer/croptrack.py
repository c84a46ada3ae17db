"""Crop tracking with the periodic re-detection off the hot path.

engines.crop.CropTracker re-detects the ultrasound region every `redetect_every` frames inside
update(): a few ms at 1080p on every 15th frame, which lands in the p99 of a 60 fps stream.
BackgroundCropTracker keeps CropTracker's rules (presets, hysteresis, blank frames keep the region,
a new frame size starts over at once) but hands the periodic re-detection to a worker thread:
the hot path only halves the frame into a fresh copy (the worker owns it; the caller may reuse
its frame buffer) and takes the verdict on a later frame. Detection runs on that halved copy
(detect_ultrasound_region works on a 320-pixel-wide image anyway) and the region is scaled back.
Detected regions are cut to a width and height that are multiples of 4 (snap_size): halving an
odd-sized crop takes OpenCV's slow path (~16 ms instead of ~0.6 ms for a 1080p crop here).
On the YUV path (streamer/yuv.py) the frame is a Y plane; the caller then passes `detect_image`,
which makes the small colour copy detection needs (it tells coloured UI from gray B-mode).

File sources pass the frame's media time: re-detection then runs on a fixed grid of media time and
its verdict is taken on the very next frame (waiting for it if the worker is late), so a file gets
the same crops, and so the same labels, at native rate and with --fast, whatever the thread timing
and even when native replay skips a frame between two grid lines (issue 9: same labels at any
replay speed). Live sources keep the frame count and never wait.
"""
from __future__ import annotations

import math
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

import numpy as np

from engines.crop import DETECT_WIDTH, PRESETS, CropRect, CropTracker, detect_ultrasound_region
from engines.downscale import halve_times, halvings_to

from .affinity import pinned_worker


def detect_on_downscaled(frame: np.ndarray) -> CropRect | None:
    """detect_ultrasound_region on a copy halved down to >= 2x its detection width, in frame coords."""
    h, w = frame.shape[:2]
    small = halve_times(frame, halvings_to(w, h, 2 * DETECT_WIDTH))
    return _detect_scaled(small, w, h)


SIZE_MULTIPLE = 4
# Media-time re-detection period per `redetect_every` frame: every 15 frames of a 30 fps video, as
# the frame count does live.
MEDIA_FRAME_S = 1 / 30
# A media-time verdict is waited for at most this long (a few ms is typical); later, it is dropped
# and the region kept, as for a blank frame.
VERDICT_WAIT_S = 5.0


def verdict_within(future: Future, timeout_s: float = VERDICT_WAIT_S):
    """A background job's result, waited for at most timeout_s; None when it is later than that."""
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        return None


def snap_size(rect: CropRect, multiple: int = SIZE_MULTIPLE) -> CropRect:
    """Width and height cut down to a multiple of `multiple` (at most 3 px off the right/bottom):
    the crop's area halvings then stay on OpenCV's fast integer path (engines/downscale.py)."""
    w = max(multiple, rect.width - rect.width % multiple)
    h = max(multiple, rect.height - rect.height % multiple)
    return CropRect(rect.x0, rect.y0, rect.x0 + w, rect.y0 + h) if rect.width >= multiple and \
        rect.height >= multiple else rect


def _detect_scaled(small: np.ndarray, w: int, h: int) -> CropRect | None:
    found = detect_ultrasound_region(small)
    if found is None:
        return None
    if small.shape[1] != w:
        sx, sy = w / small.shape[1], h / small.shape[0]
        found = CropRect(max(0, int(np.floor(found.x0 * sx))), max(0, int(np.floor(found.y0 * sy))),
                         min(w, int(np.ceil(found.x1 * sx))), min(h, int(np.ceil(found.y1 * sy))))
    return snap_size(found)


class BackgroundCropTracker(CropTracker):
    def __init__(self, preset: str | None = "auto", redetect_every: int = 15, accept_after: int = 2,
                 min_change_iou: float = 0.9, cpus: tuple[int, ...] | None = None):
        super().__init__(preset, redetect_every, accept_after, min_change_iou)
        self._pool = pinned_worker("crop-redetect", cpus)   # cpus: sonoplane run --cpu-affinity workers=...
        self._pending: tuple[Future, tuple] | None = None
        self._media_slot: int | None = None      # the media-time grid cell of the last detection

    def update(self, frame: np.ndarray, detect_image: Callable[[int], np.ndarray] | None = None,
               t_media: float | None = None) -> CropRect:
        """frame: the full frame (its shape sets the region's coordinates). detect_image(min_width):
        a fresh BGR copy of the frame at least min_width wide, for detection (default: `frame`
        halved); the pipeline's YUV frames make it from their planes. t_media: the frame's media
        time for file sources (None live): re-detect on a media-time grid, verdict on the next frame."""
        preset = PRESETS.get(self.preset)
        if self.preset == "none" or (preset is not None and
                                     (frame.shape[1], frame.shape[0]) == (preset.frame_width, preset.frame_height)):
            return super().update(frame)          # no detection involved
        if frame.shape != self._shape:           # new resolution or pixel layout: start over at once
            self._shape = frame.shape
            self.rect, self._candidate, self._candidate_hits = None, None, 0
            self._pending = None                 # a verdict on the old size is void
        h, w = frame.shape[:2]
        if detect_image is None:                 # BGR frames: the frame itself, halved
            def detect_image(min_width: int) -> np.ndarray:
                return halve_times(frame, halvings_to(w, h, min_width))
        slot = None if t_media is None else math.floor(t_media / (self.redetect_every * MEDIA_FRAME_S))
        if self.rect is None:                    # nothing yet (start, or blank so far): detect now
            self.rect = _detect_scaled(detect_image(2 * DETECT_WIDTH), w, h)
            self._frames_since_detect = 0
            self._media_slot = slot
            self.redetections += 1
            return self.rect or CropRect.full(frame)
        if self._pending is not None and (slot is not None or self._pending[0].done()):
            future, shape = self._pending
            self._pending = None
            if shape == frame.shape:
                self._consider(verdict_within(future))
        if slot is None:
            self._frames_since_detect += 1
            due = self._frames_since_detect >= self.redetect_every
        else:                                    # a new grid cell (time going backwards counts too)
            due = slot != self._media_slot
        if due and self._pending is None:
            self._frames_since_detect = 0
            self._media_slot = slot
            small = detect_image(2 * DETECT_WIDTH)
            if small is frame:
                small = frame.copy()             # the worker must own what it reads
            self._pending = (self._pool.submit(_detect_scaled, small, w, h), frame.shape)
        return self.rect

    def wait(self, timeout_s: float = 5.0) -> None:
        """Block until a re-detection in flight is done (tests; the pipeline never waits)."""
        if self._pending is not None:
            self._pending[0].result(timeout=timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
