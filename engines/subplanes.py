"""Brain sub-planes from a second model: the primary model keeps the plane, a refiner splits brain.

Why: a plane model trained for "not a standard plane" (SonoNet16-distilled, issue 9) or for speed
(smaller input, issue 11) can lose the trans-thalamic / -ventricular / -cerebellar split while
keeping the planes. A refiner (e.g. the shipped planes_lite0) then decides only *which* brain view:
the primary model's probability mass on brain stays as it is, and is shared out over the brain
labels in the refiner's proportions. Every non-brain probability, the open-set distance and the
class maps stay the primary model's, so plane labels, "other" and rejections do not change.

Shared by the runtime (streamer: runs the refiner only while the stable plane is brain) and by
`python -m engines evaluate --subplane-model` (runs it on stills the primary calls brain).
"""
from __future__ import annotations

import numpy as np

BRAIN = "brain"


def brain_labels(labels: list[str], coarse_map: dict[str, str]) -> list[str]:
    """The fine labels of a model that map to the brain plane, in the model's order."""
    return [lab for lab in labels if coarse_map.get(lab) == BRAIN]


class SubplaneMapping:
    """Index bookkeeping between a primary model's labels and a refiner's, checked once at load."""

    def __init__(self, labels: list[str], coarse_map: dict[str, str],
                 refiner_labels: list[str], refiner_coarse_map: dict[str, str]):
        mine = brain_labels(labels, coarse_map)
        theirs = brain_labels(refiner_labels, refiner_coarse_map)
        if len(mine) < 2:
            raise ValueError(f"the plane model has {len(mine)} brain label(s): nothing to refine")
        if set(mine) != set(theirs):
            raise ValueError(f"the sub-plane model's brain labels {theirs} differ from the plane model's {mine}")
        self.labels = mine
        self.primary_index = np.array([labels.index(lab) for lab in mine])
        self.refiner_index = np.array([refiner_labels.index(lab) for lab in mine])

    def refine(self, probs: np.ndarray, refiner_probs: np.ndarray) -> np.ndarray:
        """probs (..., C) of the primary model -> the same with its brain mass split by the refiner.

        Works on one frame (C,) or a batch (N, C). Sums and non-brain entries are unchanged.
        """
        out = np.array(probs, dtype=np.float64, copy=True)
        brain_mass = out[..., self.primary_index].sum(axis=-1, keepdims=True)
        share = np.asarray(refiner_probs, dtype=np.float64)[..., self.refiner_index]
        total = share.sum(axis=-1, keepdims=True)
        # A refiner with no brain mass at all says nothing about the split: keep the primary's.
        safe = total > 1e-12
        split = np.where(safe, brain_mass * share / np.where(safe, total, 1.0), out[..., self.primary_index])
        out[..., self.primary_index] = split
        return out.astype(np.asarray(probs).dtype, copy=False)


def mapping_for(primary_info, refiner_info, refiner_name: str) -> SubplaneMapping:
    """The mapping between two models' metadata (engines.metadata.ModelInfo); a mismatch is the user's
    one-line error (`--subplane-model NAME: ...`) for both `sonoplane run` and `engines evaluate`."""
    from .errors import UserError
    try:
        return SubplaneMapping(list(primary_info.labels), primary_info.coarse_map,
                               list(refiner_info.labels), refiner_info.coarse_map)
    except ValueError as exc:
        raise UserError(f"--subplane-model {refiner_name}: {exc}") from None
