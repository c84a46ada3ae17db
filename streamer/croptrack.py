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
which makes the small colour copy detection needs (it tells coloured UI from gray B-mode), on the
worker. While no region is found (a lead-in with no ultrasound image yet), only the first frame of
a size is searched on the hot path; later searches run on the worker (files on a media-time grid,
verdict in the next cell, so native and --fast agree), the whole frame used meanwhile (issue 11
tail: a synchronous ~5 ms search on every frame of such a stretch put most of its frames past one
period; docs/latency.md, Session 7).

File sources pass the frame's media time: re-detection then runs on a fixed grid of media time and
its verdict is taken on the first frame of the next 1/15 s cell of media time (VERDICT_CELL_S; waiting
for it if the worker is later than that), so a file gets
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
# Files: a detection on the worker has its verdict taken on the first frame of the next cell of this
# much media time (the worker has up to a cell, 4 frames at 60 fps, to finish it on a busy core; the
# loop waits only when it is later than that), and while no region is found the search runs once per
# cell. Live sources take a verdict when it is ready and search back to back.
VERDICT_CELL_S = 1 / 15
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
        self._searching = False                  # the first detection of this frame size found nothing
        self._submitted_cell: int | None = None  # files: the verdict cell of the last detection

    def update(self, frame: np.ndarray, detect_image: Callable[[int], np.ndarray] | None = None,
               t_media: float | None = None) -> CropRect:
        """frame: the full frame (its shape sets the region's coordinates). detect_image(min_width):
        a fresh BGR copy of the frame at least min_width wide, for detection (default: `frame`
        halved); the pipeline's YUV frames make it from their planes. When given, it is called on
        the worker, after this returns: it must read a frame the caller does not reuse. t_media: the
        frame's media time for file sources (None live): re-detect on a media-time grid, verdict on
        the first frame of the next VERDICT_CELL_S cell. While no region has been found (after the
        first frame of a size), the search runs on the worker (files: once per VERDICT_CELL_S of
        media time; live: back to back) and the first region found is taken at once; the whole
        frame until then."""
        preset = PRESETS.get(self.preset)
        if self.preset == "none" or (preset is not None and
                                     (frame.shape[1], frame.shape[0]) == (preset.frame_width, preset.frame_height)):
            return super().update(frame)          # no detection involved
        if frame.shape != self._shape:           # new resolution or pixel layout: start over at once
            self._shape = frame.shape
            self.rect, self._candidate, self._candidate_hits = None, None, 0
            self._pending = None                 # a verdict on the old size is void
            self._searching = False
        h, w = frame.shape[:2]
        owned = detect_image is not None        # the caller's frame stays valid: the worker may read it
        if detect_image is None:                 # BGR frames: the frame itself, halved
            def detect_image(min_width: int) -> np.ndarray:
                return halve_times(frame, halvings_to(w, h, min_width))
        slot = None if t_media is None else math.floor(t_media / (self.redetect_every * MEDIA_FRAME_S))
        cell = None if t_media is None else math.floor(t_media / VERDICT_CELL_S)
        if self.rect is None and not self._searching:   # the first frame of this size: detect now
            self.rect = _detect_scaled(detect_image(2 * DETECT_WIDTH), w, h)
            self._frames_since_detect = 0
            self._media_slot, self._submitted_cell = slot, cell
            self.redetections += 1
            self._searching = self.rect is None
            return self.rect or CropRect.full(frame)
        # files: a verdict in the cell after its detection's (waited for if late); live: when ready
        ready = cell != self._submitted_cell if cell is not None else \
            self._pending is not None and self._pending[0].done()
        if self._pending is not None and ready:
            future, shape = self._pending
            self._pending = None
            if shape == frame.shape:
                found = verdict_within(future)
                if self.rect is None:            # still searching: the first region found is taken at once
                    if found is not None:
                        self.rect, self._searching = found, False
                        self._frames_since_detect, self._media_slot = 0, slot
                        self.redetections += 1
                else:
                    self._consider(found)
        if self.rect is None:
            # Nothing found yet (no image on screen, or not one we recognise): keep looking on the
            # worker instead of on this thread (~5 ms at 1080p, on every frame of such a stretch;
            # docs/latency.md, Session 7): files once per VERDICT_CELL_S of media time, live as soon
            # as the last search is done. The whole frame meanwhile.
            if self._pending is None and (cell is None or cell != self._submitted_cell):
                self._submitted_cell = cell
                self._submit(frame, detect_image, owned, w, h)
            return CropRect.full(frame)
        if slot is None:
            self._frames_since_detect += 1
            due = self._frames_since_detect >= self.redetect_every
        else:                                    # a new grid cell (time going backwards counts too)
            due = slot != self._media_slot
        if due and self._pending is None:
            self._frames_since_detect = 0
            self._media_slot, self._submitted_cell = slot, cell
            self._submit(frame, detect_image, owned, w, h)
        return self.rect

    def _submit(self, frame: np.ndarray, detect_image: Callable[[int], np.ndarray], owned: bool,
                w: int, h: int) -> None:
        """A re-detection on the worker. A caller's detect_image reads a frame the caller owns (the
        pipeline's captured frames are copies never reused), so the worker makes the small copy
        too; the default one halves `frame`, which the caller may reuse: halved here."""
        if owned:
            job = self._pool.submit(lambda: _detect_scaled(detect_image(2 * DETECT_WIDTH), w, h))
        else:
            small = detect_image(2 * DETECT_WIDTH)
            if small is frame:
                small = frame.copy()             # the worker must own what it reads
            job = self._pool.submit(_detect_scaled, small, w, h)
        self._pending = (job, frame.shape)

    def wait(self, timeout_s: float = 5.0) -> None:
        """Block until a re-detection in flight is done (tests; the pipeline never waits)."""
        if self._pending is not None:
            self._pending[0].result(timeout=timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
