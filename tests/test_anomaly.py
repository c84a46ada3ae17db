"""engines.anomaly: group folds never split a group, the uncertain band on known scores, the index reader,
and the shipped model through the runtime's AnomalyStage."""
from pathlib import Path

import numpy as np
import pytest

from engines import data as D
from engines.anomaly import AnomalySample, choose_band, group_folds, load_anomaly_index

from .conftest import SHARED, needs_shared


def _samples(n_groups_per_label: int = 12, seed: int = 0) -> list[AnomalySample]:
    rng = np.random.default_rng(seed)
    out = []
    for label in (0, 1):
        for g in range(n_groups_per_label):
            for i in range(int(rng.integers(1, 6))):
                out.append(AnomalySample(Path(f"/x/{label}_{g}_{i}.jpg"), label, f"g{label}_{g}", ""))
    return out


def test_group_folds_partition_groups_and_balance_labels():
    samples = _samples()
    folds = group_folds(samples, 5, seed=3)
    groups = {s.group for s in samples}
    assert set().union(*folds) == groups
    assert sum(len(f) for f in folds) == len(groups)          # disjoint: no group in two folds
    for f in folds:                                           # both labels held out in every fold
        labels = {s.label for s in samples if s.group in f}
        assert labels == {0, 1}
    assert group_folds(samples, 5, seed=3) == folds           # deterministic for a seed


def test_choose_band_separable_scores_decide_everything():
    p = np.array([0.05, 0.1, 0.2, 0.8, 0.9, 0.95])
    y = np.array([0, 0, 0, 1, 1, 1])
    band = choose_band(p, y, target=0.95)
    assert band["target_met"] and band["coverage"] == 1.0 and band["decided_accuracy"] == 1.0
    assert 0.2 < band["lo"] <= 0.5 <= band["hi"] <= 0.8


def test_choose_band_puts_the_confusable_middle_in_uncertain():
    # Scores near 0.5 are a coin toss; confident scores are right. The band must exclude the middle.
    rng = np.random.default_rng(0)
    confident_p = np.concatenate([rng.uniform(0.0, 0.3, 100), rng.uniform(0.7, 1.0, 100)])
    confident_y = np.concatenate([np.zeros(100, int), np.ones(100, int)])
    middle_p = rng.uniform(0.4, 0.6, 60)
    middle_y = rng.integers(0, 2, 60)
    band = choose_band(np.concatenate([confident_p, middle_p]), np.concatenate([confident_y, middle_y]), 0.97)
    assert band["target_met"]
    assert band["lo"] <= 0.42 and band["hi"] >= 0.58
    assert 200 / 260 - 0.05 <= band["coverage"] < 1.0


def test_index_reader_rejects_bad_folder(tmp_path):
    with pytest.raises(D.DataError, match="no labels.csv"):
        load_anomaly_index(tmp_path)
    (tmp_path / "labels.csv").write_text("file,source_image,label,anomaly_type,group\nimages/a.jpg,a,weird,,g1\n")
    with pytest.raises(D.DataError, match="labels.csv:2"):
        load_anomaly_index(tmp_path)


@needs_shared
def test_shared_index_groups_hold_one_label():
    samples = load_anomaly_index(SHARED / "data" / "brain_anomaly")
    by_group: dict[str, set[int]] = {}
    for s in samples:
        by_group.setdefault(s.group, set()).add(s.label)
    assert all(len(v) == 1 for v in by_group.values())
    assert {s.label for s in samples} == {0, 1}


def test_shipped_anomaly_model_through_runtime_stage():
    """The committed brain_anomaly.onnx loads in the runtime's AnomalyStage with its calibrated band."""
    from engines.zoo import resolve
    from streamer.pipeline import AnomalyStage
    stage = AnomalyStage(str(resolve("brain_anomaly")), "onnxruntime", 1)
    assert stage.info.task == "anomaly" and stage.info.labels == ("normal", "abnormal")
    lo, hi = stage.band
    assert 0.0 < lo < hi < 1.0 and 0.2 < stage.info.temperature < 5
    assert "CC BY 4.0" in stage.info.extra["license"]
    out = stage(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert out["state"] in ("normal", "abnormal", "uncertain") and 0.0 <= out["p_abnormal"] <= 1.0
    expected = "abnormal" if out["p_abnormal"] >= hi else "normal" if out["p_abnormal"] < lo else "uncertain"
    assert out["state"] == expected


@needs_shared
def test_shipped_anomaly_model_separates_its_classes():
    """Sanity on (training) images: p(abnormal) is higher on abnormal groups. Not a validation figure:
    those are out-of-fold in docs/models/brain_anomaly/."""
    import cv2

    from engines.zoo import resolve
    from streamer.pipeline import AnomalyStage
    stage = AnomalyStage(str(resolve("brain_anomaly")), "onnxruntime", 1)
    samples = load_anomaly_index(SHARED / "data" / "brain_anomaly")
    picked = samples[::20]
    p = np.array([stage(D.restore_aspect(cv2.imread(str(s.path))))["p_abnormal"] for s in picked])
    y = np.array([s.label for s in picked])
    assert p[y == 1].mean() > p[y == 0].mean() + 0.3
