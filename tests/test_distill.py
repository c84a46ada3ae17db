"""engines.distill: SonoNet16's output mapped to our labels, and fit() training the student on it (--teacher)."""
import argparse

import numpy as np
import pytest

from engines.data import FINE_LABELS, FINE_TO_COARSE
from engines.distill import TEACHER_PLANE, teacher_targets
from engines.planes import SONONET16_LABELS

FINE = list(FINE_LABELS)


def one_hot_teacher(name: str) -> np.ndarray:
    p = np.zeros(len(SONONET16_LABELS))
    p[SONONET16_LABELS.index(name)] = 1.0
    return p


def test_every_sononet_class_is_mapped():
    assert set(TEACHER_PLANE) == set(SONONET16_LABELS)


@pytest.mark.parametrize("teacher, source, expected", [
    ("4CH", "Thorax", "Thorax"),                  # the four-chamber view is our thorax plane
    ("LVOT", "Thorax", "Other"),                  # other heart views are not
    ("3VV", "Thorax", "Other"),
    ("Background", "Abdomen", "Other"),
    ("Kidneys", "Abdomen", "Other"),              # outside our protocol's four planes
    ("Spine (sag.)", "Femur", "Other"),
    ("Femur", "Femur", "Femur"),
    ("Brain (Cb.)", "Brain (Tt.)", "Brain (Tt.)"),   # the source keeps its brain sub-plane
    ("Brain (Tv.)", "Brain (Tc.)", "Brain (Tc.)"),
    ("4CH", "Femur", "Other"),                    # a part of a femur image is no thorax plane
])
def test_teacher_targets_map_to_our_labels(teacher, source, expected):
    t = teacher_targets(one_hot_teacher(teacher)[None], np.array([FINE.index(source)]), FINE, FINE_TO_COARSE)
    assert t.shape == (1, len(FINE))
    assert FINE[int(t[0].argmax())] == expected and t[0].max() == pytest.approx(1.0)


def test_teacher_targets_split_soft_mass():
    p = np.zeros((1, len(SONONET16_LABELS)))
    p[0, SONONET16_LABELS.index("Abdominal")] = 0.5
    p[0, SONONET16_LABELS.index("Kidneys")] = 0.2
    p[0, SONONET16_LABELS.index("Background")] = 0.3
    t = teacher_targets(p, np.array([FINE.index("Abdomen")]), FINE, FINE_TO_COARSE)[0]
    assert t[FINE.index("Abdomen")] == pytest.approx(0.5) and t[FINE.index("Other")] == pytest.approx(0.5)
    assert t.sum() == pytest.approx(1.0)


def test_teacher_targets_reject_bad_shapes():
    with pytest.raises(ValueError, match="teacher probabilities"):
        teacher_targets(np.ones((2, 9)), np.array([0, 1]), FINE, FINE_TO_COARSE)


def background_teacher():
    """A real SonoNet16 module (random weights) whose last BN bias makes it say Background everywhere."""
    torch = pytest.importorskip("torch")
    from engines.distill import Teacher
    from engines.models.sononet import SonoNet16
    torch.manual_seed(0)
    net = SonoNet16()
    with torch.no_grad():
        net.adaptation[-1][1].bias[SONONET16_LABELS.index("Background")] = 40.0
    return Teacher(model=net)


@pytest.mark.slow
def test_fit_trains_the_student_towards_the_teacher_targets():
    torch = pytest.importorskip("torch")
    from engines.distill import Distillation
    from engines.models import create_model
    from engines.train import fit

    rng0 = np.random.default_rng(0)
    x_small = rng0.integers(0, 255, (16, 40, 40), dtype=np.uint8)          # student-size crops (+margin)
    # Teacher-size crops unlike the student's noise crops (smooth ramps), so a few steps can learn them apart.
    x_teacher = np.stack([np.tile(np.linspace(0, 250, 331), (258, 1)).astype(np.uint8)] * 16)
    y = np.full(16, FINE.index("Abdomen"))                                 # hard labels: all abdomen
    teacher = background_teacher()
    probe_views = np.stack([np.asarray(v) for v in x_teacher[:8, :224, :288]])
    assert teacher.probabilities(probe_views).argmax(1).tolist() == [SONONET16_LABELS.index("Background")] * 8

    def other_share(weight: float) -> float:
        torch.manual_seed(0)
        model = create_model("sepcnn", num_classes=len(FINE), in_chans=1)
        distill = Distillation(teacher, x_teacher, np.ones(16, bool), FINE, FINE_TO_COARSE, views=8, weight=weight)
        hyper = argparse.Namespace(epochs=8, batch_size=16, lr=1e-2, weight_decay=0.0, warmup_epochs=0.0,
                                   patience=9, label_smoothing=0.0, max_minutes=None, device="cpu", select="last")
        out = fit(model, len(FINE), x_small, y, None, None, (32, 32), hyper, np.random.default_rng(1),
                  distill=distill if weight > 0 else None)
        assert ("teacher_loss" in out["history"][-1]) == (weight > 0)
        extra = distill.extra_batch(np.arange(16), y, (32, 32), np.random.default_rng(2))
        assert extra[0].shape == (8, 1, 32, 32)
        np.testing.assert_allclose(extra[1][:, FINE.index("Other")], 1.0, atol=1e-4)   # the mapped targets
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(extra[0]))[0], 1).numpy()
        return float(p[:, FINE.index("Other")].mean())

    without, with_teacher = other_share(0.0), other_share(4.0)
    assert with_teacher > without + 0.2, (without, with_teacher)


@pytest.mark.shared
def test_sononet16_teacher_says_background_on_a_blank_view():
    from engines.distill import Teacher
    from engines.models.sononet import DEFAULT_NPZ
    if not DEFAULT_NPZ.is_file():
        pytest.skip("no ../shared SonoNet16 weights")
    teacher = Teacher("sononet16")
    views = np.zeros((2, 224, 288), np.uint8)
    views[1] = np.random.default_rng(0).integers(0, 40, (224, 288))        # dark speckle, no anatomy
    p = teacher.probabilities(views)
    assert p.shape == (2, 14) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert SONONET16_LABELS[int(p[1].argmax())] == "Background"


def test_plane_level_loss_leaves_the_brain_subplane_split_free():
    torch = pytest.importorskip("torch")
    from engines.distill import plane_groups, soft_cross_entropy
    groups = torch.from_numpy(plane_groups(FINE, FINE_TO_COARSE))
    target = torch.zeros(1, len(FINE))
    target[0, FINE.index("Brain (Tt.)")], target[0, FINE.index("Other")] = 0.7, 0.3
    tt = torch.zeros(1, len(FINE))
    tt[0, FINE.index("Brain (Tt.)")] = 10.0           # student sure of trans-thalamic
    tv = torch.zeros(1, len(FINE))
    tv[0, FINE.index("Brain (Tv.)")] = 10.0           # same brain mass, other sub-plane
    assert float(soft_cross_entropy(tt, target, groups)) == pytest.approx(float(soft_cross_entropy(tv, target, groups)))
    assert float(soft_cross_entropy(tt, target)) < float(soft_cross_entropy(tv, target))   # fine level tells them apart
    # the plane-level loss is the cross-entropy of the summed plane probabilities
    logits = torch.randn(4, len(FINE))
    plane_p = torch.softmax(logits, 1) @ groups
    expected = -((target @ groups) * plane_p.log()).sum(1).mean()
    assert float(soft_cross_entropy(logits, target.expand(4, -1), groups)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
def test_fit_applies_the_onnx_teacher_and_the_view_teacher_together(tmp_path):
    """--teacher-onnx and --teacher sononet16 in one run: both soft losses act in the same fit.

    Hard labels say Abdomen; the ONNX teacher (kd weight 1, so the labels carry no weight) says Femur on the
    plain images; SonoNet16 says Background (-> Other) on the extra views. Without the KD term the student
    would follow the labels (Abdomen); without the view term its Other mass would stay near the ONNX
    teacher's own (~0.07 at T = 2). The tiny student barely tells the two kinds of input apart in 15 steps,
    so the checks are on probability mass, not on per-input arg-max.
    """
    torch = pytest.importorskip("torch")
    from engines.distill import Distillation
    from engines.kd import OnnxTeacher
    from engines.models import create_model
    from engines.train import fit, predict_logits
    from tests.test_train_options import _constant_teacher

    rng0 = np.random.default_rng(0)
    x_small = rng0.integers(0, 255, (16, 40, 40), dtype=np.uint8)          # plain crops, cached for 32x32
    x_teacher = np.stack([np.tile(np.linspace(0, 250, 331), (258, 1)).astype(np.uint8)] * 16)
    y = np.full(16, FINE.index("Abdomen"))
    femur, abdomen, other = FINE.index("Femur"), FINE.index("Abdomen"), FINE.index("Other")
    onnx_teacher = OnnxTeacher(_constant_teacher(tmp_path / "femur.onnx", favourite=femur, num_classes=len(FINE),
                                                 size=(32, 32)))
    torch.manual_seed(0)
    model = create_model("sepcnn", num_classes=len(FINE), in_chans=1)
    distill = Distillation(background_teacher(), x_teacher, np.ones(16, bool), FINE, FINE_TO_COARSE, views=8,
                           weight=1.0)
    hyper = argparse.Namespace(epochs=15, batch_size=16, lr=1e-2, weight_decay=0.0, warmup_epochs=0.0,
                               patience=99, label_smoothing=0.0, max_minutes=None, device="cpu", select="last",
                               kd_weight=1.0, kd_temperature=2.0)
    out = fit(model, len(FINE), x_small, y, None, None, (32, 32), hyper, np.random.default_rng(1),
              teacher=onnx_teacher, distill=distill)
    assert "teacher_loss" in out["history"][-1]

    def mean_probs(x):
        return torch.softmax(torch.from_numpy(predict_logits(model, x)), 1).numpy().mean(0)

    plain = mean_probs(np.random.default_rng(3).standard_normal((8, 1, 32, 32)).astype(np.float32))
    assert plain[femur] > 0.05 and plain[femur] > 10 * plain[abdomen]       # the ONNX teacher, not the labels
    views = mean_probs(distill.extra_batch(np.arange(16), y, (32, 32), np.random.default_rng(2))[0])
    teacher_other = torch.softmax(torch.from_numpy(onnx_teacher.logits(x_small[:4, :32, :32])) / 2.0, 1)[:, other]
    assert float(teacher_other.max()) < 0.1 and views[other] > 0.3          # SonoNet16's views -> Other
