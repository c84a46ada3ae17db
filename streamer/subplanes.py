"""Sub-plane stage: a second plane model that splits brain into its sub-planes (engines/subplanes.py).

Runs only while the stable plane is brain (as the anomaly stage does), so its cost is paid on brain
frames only; the primary model's plane probabilities, open-set distance and class maps are kept.

Cadence (`sonoplane run --subplane-every S`, issue 11): a second full network on every brain frame
breaks 60 fps on two cores, and the brain view changes far more slowly than the frame rate. With
S > 0 the refiner runs once per cell of S seconds on the smoothing clock (media time for files,
capture time live), on a worker thread, off the per-frame path; its brain split is then applied to
every brain frame's own brain mass until the next one (the smoother's EMA smooths it further).
Files stay identical at any replay speed: the refiner's input is the first brain frame of a cell and
its split is taken from the first frame at least APPLY_AFTER_S of media time later, waiting for it if
the worker is late (as crop re-detection does, streamer/croptrack.py). Live sources take it as soon
as it is ready and never wait. A new brain stretch starts with no split (the plane model's own) until
the first refiner verdict.
"""
from __future__ import annotations

import math
from concurrent.futures import Future

import numpy as np

from engines.errors import UserError
from engines.preprocess import Preprocessor
from engines.subplanes import mapping_for

from .affinity import pinned_worker
from .croptrack import verdict_within
from .infer import open_model, softmax_with_temperature


# Files: a refiner verdict is taken this much media time after its input frame (3 frames at 30 fps,
# 6 at 60): long enough that the worker is nearly always done, short beside the label smoothing.
APPLY_AFTER_S = 0.1


class SubplaneStage:
    def __init__(self, model: str, primary_info, backend: str, threads: int, every_s: float = 0.0,
                 cpus: tuple[int, ...] | None = None):
        self.backend = open_model(model, backend, threads, default=model)
        self.info = self.backend.info
        if self.info.task != "plane":
            raise UserError(f"{model}: not a plane model (task {self.info.task!r}); --subplane-model needs one")
        self.mapping = mapping_for(primary_info, self.info, model)
        self.preprocess = Preprocessor(self.info)
        self.model_id = self.info.model_id
        self.every_s = float(every_s or 0.0)
        self.runs = 0                                   # refiner calls (tests, benches)
        self._split: np.ndarray | None = None           # the last refiner probabilities held
        self._cell: int | None = None                   # the clock cell of the last refiner input
        self._pending: tuple[Future, float] | None = None   # (refiner call, clock time of its input)
        self._pool = None
        if self.every_s > 0:
            self._pool = pinned_worker("subplanes", cpus)   # cpus: sonoplane run --cpu-affinity workers=...

    def _source(self, roi: np.ndarray, half: np.ndarray, halvings_done: int) -> np.ndarray:
        own = self.preprocess.halvings(roi.shape[1], roi.shape[0])
        return half if own >= halvings_done else roi

    def _refiner_probs(self, src: np.ndarray, luma_range: str | None) -> np.ndarray:
        logits = self.backend.infer(self.preprocess(src, luma_range=luma_range)).logits[0]
        return softmax_with_temperature(logits, self.info.temperature)

    def refine(self, probs: np.ndarray, roi: np.ndarray, half: np.ndarray, halvings_done: int,
               luma_range: str | None = None) -> np.ndarray:
        """The primary's probs with brain split by this model, run on the frame's crop.

        half: the crop after `halvings_done` 2x area halvings (the primary's shared copy); used when
        this model would apply at least as many itself, so the input is identical and cheaper."""
        self.runs += 1
        return self.mapping.refine(probs, self._refiner_probs(self._source(roi, half, halvings_done), luma_range))

    def step(self, probs: np.ndarray | None, brain: bool, roi: np.ndarray, half: np.ndarray,
             halvings_done: int, luma_range: str | None, t: float, wait: bool) -> np.ndarray | None:
        """One frame at a cadence (every_s > 0): probs with brain split by the refiner's latest verdict.

        brain: the stable plane is brain (else the held split is dropped); t: the smoothing clock;
        wait: a file (verdicts at a fixed media-time delay, waited for) or live (taken when ready).
        roi / half must not change afterwards (the worker may read them later): the live loop's are
        views of a frame copy it never reuses, or fresh halvings."""
        if probs is None or not brain:
            self.reset()
            return probs
        if self._pending is not None:
            future, t_input = self._pending
            if t < t_input:                       # time went backwards (a file restarted): void
                self._pending = None
            elif (wait and t >= t_input + APPLY_AFTER_S - 1e-9) or (not wait and future.done()):
                self._pending = None
                verdict = verdict_within(future)
                if verdict is not None:           # very late (None): keep the split held so far
                    self._split = verdict
        cell = math.floor(t / self.every_s)
        if cell != self._cell and self._pending is None:
            self._cell = cell
            self.runs += 1
            src = self._source(roi, half, halvings_done)
            self._pending = (self._pool.submit(self._refiner_probs, src, luma_range), t)
        return probs if self._split is None else self.mapping.refine(probs, self._split)

    def reset(self) -> None:
        """Brain stretch over (or blank / frozen): the next one starts with no split and a new cell."""
        self._split, self._cell, self._pending = None, None, None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
