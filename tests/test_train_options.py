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
