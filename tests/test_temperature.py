"""calibration.temperature: T recovery on synthetic logits, ECE on known inputs, the diagram file."""
import numpy as np
import pytest

from calibration.temperature import (expected_calibration_error, fit_temperature, nll, reliability_diagram,
                                     softmax, write_sidecar)


def _synthetic(true_t: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z * true_t, i.e. it is over-confident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, (n, classes))
    p = softmax(z)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z * true_t, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_known_temperature(true_t):
    logits, labels = _synthetic(true_t)
    t = fit_temperature(logits, labels)
    assert abs(t - true_t) / true_t < 0.08
    # The fitted T is a real NLL minimum: nearby temperatures are worse.
    assert nll(logits, labels, t) <= min(nll(logits, labels, t * 1.2), nll(logits, labels, t / 1.2))


def test_scaling_reduces_ece_of_overconfident_model():
    logits, labels = _synthetic(3.0, seed=1)
    t = fit_temperature(logits, labels)
    assert expected_calibration_error(softmax(logits, t), labels) < 0.5 * expected_calibration_error(softmax(logits), labels)


def test_ece_known_values():
    # All predictions confident 0.9 and all right: |1.0 - 0.9| = 0.1.
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(probs, np.zeros(10, int)) == pytest.approx(0.1)
    # Half right at confidence 0.9 -> 0.4; half at 0.6 all wrong -> 0.6; each half the data.
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.6)
    # Perfectly calibrated bins give 0.
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


def test_bad_input_and_outputs(tmp_path):
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, int))
    logits, labels = _synthetic(2.0, n=200)
    path = reliability_diagram(softmax(logits), labels, tmp_path / "rel.png", probs_after=softmax(logits, 2.0))
    assert path.stat().st_size > 1000
    side = write_sidecar(tmp_path / "m.onnx", 1.7)
    assert '"temperature": 1.7' in side.read_text()
