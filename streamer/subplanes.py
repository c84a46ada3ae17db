"""Sub-plane stage: a second plane model that splits brain into its sub-planes (engines/subplanes.py).

Runs only while the stable plane is brain (as the anomaly stage does), so its cost is paid on brain
frames only; the primary model's plane probabilities, open-set distance and class maps are kept.
"""
from __future__ import annotations

import numpy as np

from engines.errors import UserError
from engines.preprocess import Preprocessor
from engines.subplanes import mapping_for

from .infer import open_model, softmax_with_temperature


class SubplaneStage:
    def __init__(self, model: str, primary_info, backend: str, threads: int):
        self.backend = open_model(model, backend, threads, default=model)
        self.info = self.backend.info
        if self.info.task != "plane":
            raise UserError(f"{model}: not a plane model (task {self.info.task!r}); --subplane-model needs one")
        self.mapping = mapping_for(primary_info, self.info, model)
        self.preprocess = Preprocessor(self.info)
        self.model_id = self.info.model_id

    def refine(self, probs: np.ndarray, roi: np.ndarray, half: np.ndarray, halvings_done: int,
               luma_range: str | None = None) -> np.ndarray:
        """The primary's probs with brain split by this model, run on the frame's crop.

        half: the crop after `halvings_done` 2x area halvings (the primary's shared copy); used when
        this model would apply at least as many itself, so the input is identical and cheaper."""
        own = self.preprocess.halvings(roi.shape[1], roi.shape[0])
        src = half if own >= halvings_done else roi
        logits = self.backend.infer(self.preprocess(src, luma_range=luma_range)).logits[0]
        return self.mapping.refine(probs, softmax_with_temperature(logits, self.info.temperature))
