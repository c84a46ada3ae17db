"""engines.train's class-balanced sampling, partial views of the thin classes, and last-epoch selection."""
import argparse

import numpy as np
import pytest

from engines.augment import PARTIAL_VIEW, augment_batch
from engines.train import balanced_draws, fit


def test_balanced_draws_make_every_class_equally_likely():
    labels = np.array([0] * 700 + [1] * 24 + [2] * 6)
    draws = balanced_draws(labels, 30000, np.random.default_rng(0))
    share = np.bincount(labels[draws], minlength=3) / len(draws)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)   # vs 0.96 / 0.03 / 0.008 in the data


def test_partial_views_only_for_marked_images():
    img = np.tile(np.arange(0, 240, 3, dtype=np.uint8), (60, 1))   # a horizontal ramp
    batch = np.stack([img, img])
    plain = augment_batch(batch, (64, 48), np.random.default_rng(5))
    marked = augment_batch(batch, (64, 48), np.random.default_rng(5), partial=np.array([False, False]),
                           partial_p=1.0)
    np.testing.assert_array_equal(plain, marked)                # nothing marked: the usual augmentation
    zoomed = augment_batch(batch, (64, 48), np.random.default_rng(5), partial=np.array([True, True]),
                           partial_p=1.0)
    assert not np.array_equal(plain, zoomed)
    assert PARTIAL_VIEW.scale[0] > 1.0 and PARTIAL_VIEW.translate > 0.08   # zoomed in, off-centre


def test_select_last_keeps_the_last_epoch_and_reports_validation():
    torch = pytest.importorskip("torch")
    from engines.models import create_model
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_big = rng.integers(0, 255, (24, 40, 40), dtype=np.uint8)
    y = np.array([0, 1, 2] * 8)
    x_val = rng.standard_normal((6, 1, 32, 32)).astype(np.float32)
    hyper = argparse.Namespace(epochs=3, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, patience=1,
                               label_smoothing=0.0, max_minutes=None, device="cpu", balanced=True,
                               partial_views=0.5, select="last")
    model = create_model("sepcnn", num_classes=3, in_chans=1)
    out = fit(model, 3, x_big, y, x_val, y[:6], (32, 32), hyper, rng, partial=y == 2)
    assert out["best"]["epoch"] == 3 and len(out["history"]) == 3      # no early stop, last epoch kept
    assert "val_loss" in out["best"] and out["val_logits"].shape == (6, 3)
    last = {k: v for k, v in model.state_dict().items()}
    assert all(torch.equal(last[k], out["best_state"][k]) for k in last)


def _constant_teacher(path, favourite: int, num_classes: int = 3, size=(64, 48)):
    """A real ONNX plane model (input `image` 1 x h x w, output `logits`) that always prefers `favourite`."""
    torch = pytest.importorskip("torch")

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            bias = torch.zeros(num_classes)
            bias[favourite] = 4.0
            self.register_buffer("bias", bias)

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None] * 0.0 + self.bias

    w, h = size
    torch.onnx.export(Constant(), (torch.zeros(1, 1, h, w),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def test_kd_loss_is_zero_only_at_the_teachers_distribution_and_pulls_towards_it():
    torch = pytest.importorskip("torch")
    from engines.kd import kd_loss
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(kd_loss(teacher.clone(), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(teacher + 5.0, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)   # softmax is shift-free
    student = torch.zeros(1, 3, requires_grad=True)
    loss = kd_loss(student, teacher, 2.0)
    assert float(loss) > 0.01
    loss.backward()
    # Gradient descent raises the teacher's favourite class and lowers its least likely one.
    assert student.grad[0, 0] < 0 < student.grad[0, 2]


def test_teacher_scores_the_augmented_image_at_its_own_size(tmp_path):
    pytest.importorskip("torch")
    from engines.kd import OnnxTeacher, resize_batch
    teacher = OnnxTeacher(_constant_teacher(tmp_path / "t.onnx", favourite=1))
    assert teacher.size == (64, 48) and teacher.num_classes == 3
    imgs = np.random.default_rng(0).integers(0, 255, (2, 48, 64), dtype=np.uint8)
    logits = teacher.logits(imgs)
    assert logits.shape == (2, 3) and (logits.argmax(1) == 1).all()
    small = resize_batch(imgs, (32, 24))
    assert small.shape == (2, 24, 32)
    assert abs(float(small.mean()) - float(imgs.mean())) < 2.0          # an area resize keeps the mean


@pytest.mark.parametrize("kd_weight, expected", [(0.0, 0), (1.0, 2)])
def test_distillation_follows_the_teacher_not_the_labels(tmp_path, kd_weight, expected):
    """Labels say class 0, the teacher says class 2: pure distillation learns the teacher's answer."""
    torch = pytest.importorskip("torch")
    from engines.kd import OnnxTeacher
    from engines.models import create_model
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    teacher = OnnxTeacher(_constant_teacher(tmp_path / "t.onnx", favourite=2, size=(96, 72)))
    x_big = rng.integers(0, 255, (2, 83, 110), dtype=np.uint8)   # cached for the teacher's 96x72 (+15 %)
    y = np.array([0, 0])
    hyper = argparse.Namespace(epochs=30, batch_size=2, lr=1e-2, weight_decay=0.0, warmup_epochs=0.0, patience=1,
                               label_smoothing=0.0, max_minutes=None, device="cpu", select="last",
                               kd_weight=kd_weight, kd_temperature=2.0)
    model = create_model("sepcnn", num_classes=3, in_chans=1)
    out = fit(model, 3, x_big, y, None, None, (64, 48), hyper, rng, teacher=teacher)
    x = rng.standard_normal((4, 1, 48, 64)).astype(np.float32)   # the student's own (smaller) input size
    from engines.train import predict_logits
    assert (predict_logits(model, x).argmax(1) == expected).all()
    assert out["best"]["epoch"] == 30
