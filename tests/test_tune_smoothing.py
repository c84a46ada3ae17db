"""tools/tune_smoothing.py: top-k -> probabilities, and the replay of the runtime smoother on a recording
with known answers (a noisy brain -> abdomen change)."""
import sys

import numpy as np
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from tune_smoothing import evaluate, probs_from_topk, replay  # noqa: E402

from streamer.smoothing import SmoothingConfig  # noqa: E402

LABELS = ("Brain (Tt.)", "Abdomen", "Femur", "Thorax")
COARSE = {"Brain (Tt.)": "brain", "Abdomen": "abdomen", "Femur": "femur", "Thorax": "thorax"}


def test_probs_from_topk_fills_the_rest_evenly():
    p = probs_from_topk([["Abdomen", 0.7, "abdomen"], ["Femur", 0.2, "femur"]], LABELS)
    assert p.sum() == pytest.approx(1.0) and p[1] == pytest.approx(0.7)
    assert p[0] == pytest.approx(0.05) and p[3] == pytest.approx(0.05)
    assert probs_from_topk([], LABELS) is None       # blank frame: no inference


def _recording(seed=0):
    """6 s at 30 fps: brain then abdomen; 1 frame in 6 has its argmax flipped to femur."""
    rng = np.random.default_rng(seed)
    results, rows = [], []
    for i in range(180):
        t = i / 30
        truth = "Brain (Tt.)" if t < 3 else "Abdomen"
        top = "Femur" if rng.random() < 1 / 6 else truth
        second = truth if top != truth else "Thorax"
        results.append({"frame": i, "t_capture_mono": 100 + t, "topk": [[top, 0.8, COARSE[top]],
                                                                         [second, 0.15, COARSE[second]]],
                        "plane": "", "confidence": 0.0, "flags": {"frozen": False}, "skipped_total": 0})
        rows.append({"frame": str(i), "t_s": f"{t:.4f}", "kind": "stable",
                     "plane": "Fetal brain" if t < 3 else "Fetal abdomen"})
    return results, rows


def test_replay_smoothing_removes_flicker_that_raw_argmax_has():
    results, rows = _recording()
    shown = [r["plane"] for r in replay(results, LABELS, COARSE, SmoothingConfig())]
    assert "femur" not in shown                                  # single-frame blips never shown
    assert shown[80] == "brain" and shown[-1] == "abdomen"
    rep_smooth = evaluate([(results, rows)], LABELS, COARSE, SmoothingConfig())
    assert rep_smooth["stable_accuracy_raw"] < 0.9                # the raw argmax flickers
    assert rep_smooth["stable_accuracy"] > rep_smooth["stable_accuracy_raw"]
    assert rep_smooth["flicker_per_min"] == 0.0
    # No EMA and no dwell: the smoother follows the blips and flickers.
    jumpy = evaluate([(results, rows)], LABELS, COARSE,
                     SmoothingConfig(tau_s=1e-3, enter=0.5, keep=0.5, min_dwell_s=0.0))
    assert jumpy["flicker_per_min"] > 10
