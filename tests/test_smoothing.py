import numpy as np
import pytest

from streamer.smoothing import LabelSmoother, SmoothingConfig

LABELS = ["Brain (Tv.)", "Brain (Cb.)", "Abdominal", "Femur"]
COARSE = {"Brain (Tv.)": "brain", "Brain (Cb.)": "brain", "Abdominal": "abdomen", "Femur": "femur"}
BRAIN = np.array([0.6, 0.3, 0.05, 0.05])
ABDOMEN = np.array([0.03, 0.02, 0.9, 0.05])
FLAT = np.array([0.125, 0.125, 0.375, 0.375])   # planes brain 0.25, abdomen 0.375, femur 0.375: none leads


def feed(sm, probs, seconds, fps, t0=0.0, **kw):
    states = []
    for i in range(int(round(seconds * fps))):
        states.append(sm.update(probs, t0 + i / fps, **kw))
    return states, t0 + int(round(seconds * fps)) / fps


@pytest.mark.parametrize("fps", [30, 60])
def test_brief_blip_does_not_change_label(fps):
    sm = LabelSmoother(LABELS, COARSE)
    s, t = feed(sm, BRAIN, 1.0, fps)
    assert s[-1].plane == "brain" and s[-1].label == "Brain (Tv.)"
    s, t = feed(sm, ABDOMEN, 0.1, fps, t)
    s2, t = feed(sm, BRAIN, 0.5, fps, t)
    assert all(x.plane == "brain" for x in s + s2)


@pytest.mark.parametrize("fps", [30, 60])
def test_sustained_change_switches_after_dwell_same_at_any_fps(fps):
    sm = LabelSmoother(LABELS, COARSE)
    _, t = feed(sm, BRAIN, 1.0, fps)
    s, _ = feed(sm, ABDOMEN, 1.5, fps, t)
    first = next(i for i, x in enumerate(s) if x.plane == "abdomen") / fps
    cfg = SmoothingConfig()
    # brain falls below `keep` (uncertain), then abdomen needs half the dwell to leave uncertain.
    assert 0.5 * cfg.min_dwell_s <= first <= 1.0
    assert s[-1].plane == "abdomen" and s[-1].confidence > 0.8
    assert sum(x.changed for x in s) <= 2     # brain -> (uncertain) -> abdomen, no flicker


def test_flat_probabilities_are_uncertain():
    sm = LabelSmoother(LABELS, COARSE)
    s, _ = feed(sm, FLAT, 1.0, 30)
    assert s[-1].plane == "uncertain" and s[-1].uncertain and s[-1].label is None


def test_hysteresis_keeps_label_between_keep_and_enter():
    sm = LabelSmoother(LABELS, COARSE)
    _, t = feed(sm, BRAIN, 1.0, 30)
    cfg = SmoothingConfig()
    b = (cfg.keep + cfg.enter) / 2            # brain between keep and enter, still the top plane
    mid = np.array([b / 2, b / 2, (1 - b) / 2, (1 - b) / 2])
    assert (1 - b) / 2 < b
    s, _ = feed(sm, mid, 1.0, 30, t)
    assert s[-1].plane == "brain"
    fresh = LabelSmoother(LABELS, COARSE)
    s, _ = feed(fresh, mid, 1.0, 30)
    assert s[-1].plane == "uncertain"          # the same evidence does not ENTER a label


def test_blank_shows_none_and_restarts():
    sm = LabelSmoother(LABELS, COARSE)
    _, t = feed(sm, BRAIN, 1.0, 30)
    s, t = feed(sm, None, 0.5, 30, t, blank=True)
    assert all(x.plane == "none" and x.none for x in s)
    s, _ = feed(sm, ABDOMEN, 1.0, 30, t)
    assert "brain" not in {x.plane for x in s}  # no old label resurfaces after the probe returns
    assert s[-1].plane == "abdomen"


def test_frozen_holds_state_and_is_flagged():
    sm = LabelSmoother(LABELS, COARSE)
    _, t = feed(sm, BRAIN, 1.0, 30)
    s, _ = feed(sm, ABDOMEN, 2.0, 30, t, frozen=True)
    assert all(x.plane == "brain" and x.frozen for x in s)


def test_gap_in_time_resets_instead_of_resuming():
    sm = LabelSmoother(LABELS, COARSE)
    _, t = feed(sm, BRAIN, 1.0, 30)
    state = sm.update(ABDOMEN, t + 5.0)          # source came back after 5 s
    assert state.plane == "uncertain"
    s, _ = feed(sm, ABDOMEN, 1.0, 30, t + 5.0 + 1 / 30)
    assert s[-1].plane == "abdomen"
