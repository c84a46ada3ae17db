"""The ported SonoNet16: all 13 authors' example frames (full scanner UI) come out as their own class."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.metadata import read_model_info
from engines.zoo import resolve
from streamer.infer import PlaneClassifier

from .conftest import FIXTURES, SHARED

EXPECTED = {"3VV": "3VV", "4CH": "4CH", "ABDOMINAL": "Abdominal", "BRAIN-CB": "Brain (Cb.)",
            "BRAIN-TV": "Brain (Tv.)", "FEMUR": "Femur", "KIDNEYS": "Kidneys", "LIPS": "Lips",
            "LVOT": "LVOT", "PROFILE": "Profile", "RVOT": "RVOT", "SPINE-CORONAL": "Spine (cor.)",
            "SPINE-SAGITTAL": "Spine (sag.)"}
FRAMES = sorted((FIXTURES / "sononet").glob("*.jpg"))


@pytest.fixture(scope="module")
def classifier():
    return PlaneClassifier("sononet16")


def test_all_thirteen_fixture_frames_present():
    assert {p.stem for p in FRAMES} == set(EXPECTED)


@pytest.mark.parametrize("path", FRAMES, ids=[p.stem for p in FRAMES])
def test_example_frame_is_its_own_class(classifier, path):
    frame = cv2.imread(str(path))
    assert frame.shape == (735, 975, 3)       # a full scanner frame, UI included
    pred, rect = classifier.classify_frame(frame)
    assert rect.as_list() == [81, 115, 874, 734]   # the model's crop preset applied
    assert pred.label == EXPECTED[path.stem], pred.topk(3)


def test_auto_crop_keeps_coarse_plane_on_most_frames(classifier):
    # Auto-detection (no preset) must find an image region that keeps the coarse plane right on
    # nearly all frames; its boxes are not the authors' exact crop, so fine labels may move.
    planes = {lbl: classifier.info.coarse(lbl) for lbl in EXPECTED.values()}
    right = sum(classifier.classify_frame(cv2.imread(str(p)), crop="auto")[0].plane == planes[EXPECTED[p.stem]]
                for p in FRAMES)
    assert right >= 11


def test_metadata_is_complete():
    info = read_model_info(resolve("sononet16"))
    assert info.task == "plane" and len(info.labels) == 14
    assert set(info.coarse_map) == set(info.labels)
    assert (info.height, info.width, info.channels) == (224, 288, 1)
    assert info.normalisation == {"kind": "per_image_standardise", "scale": 255.0}
    assert info.crop_preset == "sononet_975x735" and info.cam_output == "cam"
    assert "Apache-2.0" in info.extra["license"]


def test_cam_output_localises(classifier):
    pred = classifier.predict(cv2.imread(str(FIXTURES / "sononet" / "FEMUR.jpg"))[115:734, 81:874])
    assert pred.cam is not None and pred.cam.shape[0] == 14
    # GAP of the class maps is the logit: the predicted class has the highest mean map.
    assert int(np.argmax(pred.cam.mean(axis=(1, 2)))) == int(np.argmax(pred.probs))


@pytest.mark.skipif(not (SHARED / "data" / "sononet" / "SonoNet16.npz").is_file(), reason="needs ../shared")
def test_onnx_matches_torch_port():
    torch = pytest.importorskip("torch")
    from engines.export import onnx_torch_max_abs_diff
    from engines.models import create_model
    model = create_model("sononet16", pretrained=True, npz_path=SHARED / "data" / "sononet" / "SonoNet16.npz")
    x = torch.randn(2, 1, 224, 288) * 255
    assert onnx_torch_max_abs_diff(model, resolve("sononet16"), x) < 1e-3


def test_int8_model_agrees_on_all_thirteen_frames():
    int8 = PlaneClassifier("sononet16_int8")
    assert int8.info.extra.get("precision") == "int8"
    for path in FRAMES:
        pred, _ = int8.classify_frame(cv2.imread(str(path)))
        assert pred.label == EXPECTED[path.stem], (path.stem, pred.topk(3))
