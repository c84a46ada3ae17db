"""engines.evaluate metrics on toy inputs with hand-computed answers (numpy only, no data, no torch)."""
import numpy as np
import pytest

from engines.evaluate import (_scope_with_unknown, class_accuracy_mean_std, confusion_matrix, macro_f1,
                              per_class_metrics, roc_auc_binary, roc_auc_ovr, scope_metrics)


def test_confusion_and_class_accuracy():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    mean, std = class_accuracy_mean_std(cm)          # per-class accuracy 0.75, 0.5, 1.0
    assert mean == pytest.approx(0.75)
    assert std == pytest.approx(np.std([0.75, 0.5, 1.0]))


def test_macro_f1_and_precision():
    cm = np.array([[3, 1, 0], [1, 1, 0], [0, 0, 2]])
    m = per_class_metrics(cm)
    assert m["precision"].tolist() == pytest.approx([0.75, 0.5, 1.0])
    assert m["recall"].tolist() == pytest.approx([0.75, 0.5, 1.0])
    assert macro_f1(cm) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    # A class never predicted but present: precision 0, F1 0 (counts in the macro mean).
    cm2 = np.array([[2, 0], [2, 0]])
    assert macro_f1(cm2) == pytest.approx((2 * 0.5 * 1.0 / 1.5 + 0.0) / 2)


def test_auc_known_values():
    assert roc_auc_binary([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc_binary([1, 2, 3], [0, 1, 1]) == pytest.approx(1.0)
    assert roc_auc_binary([3, 2, 1], [0, 1, 1]) == pytest.approx(0.0)
    assert roc_auc_binary([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)   # ties count half
    assert np.isnan(roc_auc_binary([0.1, 0.2], [1, 1]))
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert roc_auc_ovr(probs, np.array([0, 1, 1])).tolist() == pytest.approx([1.0, 1.0])


def test_scope_with_out_of_vocabulary_predictions():
    # Predictions of -1 (e.g. SonoNet's 'spine' on a femur image) are wrong for every class.
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, -1, 1, -1])
    probs = np.array([[0.9, 0.1], [0.4, 0.1], [0.2, 0.8], [0.1, 0.2]])
    s = _scope_with_unknown(y, pred, probs, ["a", "b"])
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["class_acc_mean"] == pytest.approx(0.5)
    assert s["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert s["confusion"] == [[1, 0, 1], [0, 1, 1]]
    full = scope_metrics(y, np.array([0, 0, 1, 1]), probs, ["a", "b"])
    assert full["accuracy"] == 1.0 and full["macro_auc"] == pytest.approx(1.0)
