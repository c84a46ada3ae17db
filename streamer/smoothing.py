"""Temporal smoothing: per-frame probabilities -> a calm, stable plane label.

State machine (docs/smoothing.md):
- EMA over the coarse-plane probabilities (fine probabilities summed per plane) and over the fine
  ones, with a time constant in seconds, so 30 and 60 fps behave the same;
- hysteresis: a plane must reach `enter` to be shown and keeps being shown while above `keep`;
- minimum dwell: a new plane must lead (above `enter`) for `min_dwell_s` before it replaces the
  shown one, so a brief blip never changes the label;
- `uncertain` when no plane is confident enough; `none` on blank frames (probe lifted);
- a frozen image (scanner freeze) is not new evidence: the state holds and is marked frozen;
- a gap in time (source reconnecting) resets the state rather than resuming an old label, and so
  does time going backwards (a looped or restarted file);
- time is the media clock for files (the frame's presentation time), so a file gives the same labels
  at native rate and with --fast; live sources use the capture clock (`smoothing_clock`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engines.planes import COARSE_PLANES, NO_IMAGE, UNCERTAIN, plane_matrix


# Planes an open-set rejection does not contradict: the model's own non-fetal answers.
OPEN_SET_KEEPS = ("other", "cervix")


@dataclass(frozen=True)
class SmoothingConfig:
    # Tuned with tools/tune_smoothing.py on validation-patient sweeps (docs/smoothing.md): against the
    # earlier 0.25 / 0.60 / 0.40 / 0.30 it is more often right (0.913 vs 0.881), calmer (1.7 vs 2.8 label
    # changes per minute) and quicker to settle (p90 0.24 vs 0.41 s).
    tau_s: float = 0.10          # EMA time constant
    enter: float = 0.50          # smoothed probability needed to show a plane
    keep: float = 0.30           # ...and to keep showing it
    min_dwell_s: float = 0.30    # a challenger must lead this long before it replaces the shown plane
    gap_reset_s: float = 1.0     # no frame for this long: forget the past

    def __post_init__(self):
        if not 0 < self.keep <= self.enter <= 1:
            raise ValueError("need 0 < keep <= enter <= 1")


@dataclass(frozen=True)
class SmoothedState:
    plane: str                   # coarse plane, "uncertain" or "none"
    label: str | None            # the model's finer label within the plane
    confidence: float            # smoothed probability of `plane` (0 for none)
    uncertain: bool
    none: bool
    frozen: bool
    changed: bool                # plane differs from the previous update's
    since_t: float               # time the current plane was first shown


def smoothing_clock(is_file: bool, pts_s: float | None, t_capture: float) -> float:
    """The time the smoother, frozen detection and dwell run on.

    Files: the frame's presentation time, so the time constants are in video seconds whatever the
    replay speed (--fast replays faster than real time; native replay may skip frames, and the pts
    still says how much video time passed). Live sources (and files without pts): the capture clock.
    """
    return pts_s if is_file and pts_s is not None else t_capture


class OpenSetGate:
    """The open-set reject rule (engines/open_set.py) with hysteresis. A frame is rejected (no standard
    plane) when its distance is above `threshold` ("very far"), or above `near` while the model's top
    plane probability is below `confident` ("far and unsure"). Models fitted with a distance-only rule
    have no `near`: then the rule is distance > threshold. Once rejecting, both distances are scaled by
    `release` (< 1) until a frame passes, so a view on the edge does not flicker between a plane and
    uncertain."""

    def __init__(self, threshold: float, release: float = 0.6, near: float | None = None,
                 confident: float | None = None):
        near = threshold if near is None else near
        if threshold <= 0 or not 0 < release <= 1 or not 0 < near <= threshold:
            raise ValueError("need threshold > 0, 0 < near <= threshold and 0 < release <= 1")
        self.threshold, self.release, self.near = float(threshold), float(release), float(near)
        self.confident = 1.0 if confident is None else float(confident)
        self.rejecting = False

    def reset(self) -> None:
        self.rejecting = False

    def update(self, score: float | None, top_plane_p: float | None = None) -> bool:
        """score: the frame's open-set distance (None: the model has none, never reject);
        top_plane_p: the model's highest plane probability (None: treated as unsure)."""
        if score is None:
            return False
        scale = self.release if self.rejecting else 1.0
        unsure = top_plane_p is None or top_plane_p < self.confident
        self.rejecting = bool(score > scale * self.threshold or (unsure and score > scale * self.near))
        return self.rejecting


class LabelSmoother:
    def __init__(self, labels: Sequence[str], coarse_map: dict[str, str],
                 config: SmoothingConfig = SmoothingConfig()):
        self.labels = tuple(labels)
        self.config = config
        self.planes = COARSE_PLANES
        self.to_plane = plane_matrix(self.labels, coarse_map)     # plane probs = fine probs @ to_plane
        self.open_set_keeps = np.array([coarse_map.get(label, "other") in OPEN_SET_KEEPS
                                        for label in self.labels], np.float32)
        self.reset()

    def top_plane_probability(self, probs: np.ndarray) -> float:
        """The largest plane probability of one frame (fine classes summed per plane), for OpenSetGate."""
        return float((np.asarray(probs, np.float32) @ self.to_plane).max())

    def reset(self) -> None:
        self.ema_plane: np.ndarray | None = None
        self.ema_fine: np.ndarray | None = None
        self.last_t: float | None = None
        self.shown = UNCERTAIN
        self.since_t = 0.0
        self.challenger: str | None = None
        self.challenger_since = 0.0
        self._last_state: SmoothedState | None = None

    def _state(self, plane: str, t: float, frozen: bool) -> SmoothedState:
        changed = self._last_state is None or self._last_state.plane != plane
        if changed:
            self.since_t = t
        if plane in (UNCERTAIN, NO_IMAGE) or self.ema_plane is None:
            conf = 0.0 if plane == NO_IMAGE or self.ema_plane is None else float(self.ema_plane.max())
            label = None
        else:
            k = self.planes.index(plane)
            conf = float(self.ema_plane[k])
            members = self.to_plane[:, k] > 0
            fine = np.where(members, self.ema_fine, -1.0)
            label = self.labels[int(np.argmax(fine))]
        state = SmoothedState(plane, label, conf, plane == UNCERTAIN, plane == NO_IMAGE, frozen,
                              changed, self.since_t)
        self._last_state = state
        return state

    def update(self, probs: np.ndarray | None, t: float, blank: bool = False,
               frozen: bool = False, reject: bool = False) -> SmoothedState:
        """reject: the open-set gate says this frame is no standard fetal plane; its fetal-plane
        probabilities count as zero (a shown fetal plane decays to `uncertain`, none can enter), while
        the model's own `other` / `cervix` probability is kept, so a view it recognises as other is still
        shown as other."""
        cfg = self.config
        if self.last_t is not None and (t - self.last_t > cfg.gap_reset_s or t < self.last_t):
            last = self._last_state
            self.reset()
            self._last_state = last
        if blank or probs is None:
            # Probe lifted: show "none" and start afresh when the image comes back.
            last = self._last_state
            self.reset()
            self._last_state = last
            self.shown = NO_IMAGE
            self.last_t = t
            return self._state(NO_IMAGE, t, frozen=False)
        if frozen and self.ema_plane is not None:
            self.last_t = t
            return self._state(self.shown, t, frozen=True)

        probs = np.asarray(probs, np.float32)
        if reject:
            # No evidence for any fetal plane; the model's own "other" / "cervix" answer stands.
            probs = probs * self.open_set_keeps
        plane_p = probs @ self.to_plane
        if self.ema_plane is None:
            self.ema_plane, self.ema_fine = plane_p, probs.copy()
            if self.shown == NO_IMAGE:
                self.shown = UNCERTAIN
        else:
            a = 1.0 - math.exp(-max(t - self.last_t, 0.0) / cfg.tau_s)
            self.ema_plane = self.ema_plane + a * (plane_p - self.ema_plane)
            self.ema_fine = self.ema_fine + a * (probs - self.ema_fine)
        self.last_t = t

        top = self.planes[int(np.argmax(self.ema_plane))]
        top_p = float(self.ema_plane.max())
        if self.shown in self.planes and float(self.ema_plane[self.planes.index(self.shown)]) < cfg.keep:
            self.shown = UNCERTAIN
        if top != self.shown and top_p >= cfg.enter:
            if self.challenger != top:
                self.challenger, self.challenger_since = top, t
            # Replacing a shown plane needs the full dwell; leaving "uncertain" half of it.
            dwell = cfg.min_dwell_s if self.shown in self.planes else 0.5 * cfg.min_dwell_s
            if t - self.challenger_since >= dwell - 1e-9:
                self.shown, self.challenger = top, None
        else:
            self.challenger = None
        return self._state(self.shown, t, frozen=False)
