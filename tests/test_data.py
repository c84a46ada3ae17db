"""engines.data on tiny fake datasets in both layouts (no ../shared needed), plus augmentation."""
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import data as D
from engines.augment import augment_batch, augment_image

PLANES = [("Fetal brain", "Trans-thalamic"), ("Fetal brain", "Trans-cerebellum"), ("Fetal abdomen", "Not A Brain"),
          ("Fetal femur", "Not A Brain"), ("Fetal thorax", "Not A Brain"), ("Other", "Not A Brain"),
          ("Maternal cervix", "Not A Brain")]


def _fake_image(rng, h, w):
    img = np.zeros((h, w, 3), np.uint8)
    # A speckled, lit ultrasound-like region inside a dark screen.
    region = rng.integers(40, 220, (h * 3 // 4, w * 3 // 4), dtype=np.uint8)
    img[h // 8:h // 8 + region.shape[0], w // 8:w // 8 + region.shape[1]] = region[..., None]
    return img


def _rows(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, n_patients + 1):
        for k in range(int(rng.integers(1, 4))):
            plane, brain = PLANES[(p + k) % len(PLANES)]
            rows.append((f"Patient{p:05d}_Plane{k}_1_of_1", p, plane, brain))
    return rows


@pytest.fixture
def labels_csv_layout(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine", "Train", "copy"])
        for i, (name, p, plane, brain) in enumerate(_rows()):
            stretched = i % 2 == 0
            img = _fake_image(rng, 64, 64) if stretched else _fake_image(rng, 60, 84)
            ext = ".jpg" if stretched else ".png"
            cv2.imwrite(str(tmp_path / "images" / f"{name}{ext}"), img)
            w.writerow([f"images/{name}{ext}", name, p, plane, brain, "Op", "Voluson E6", 1,
                        "resized640" if stretched else "original"])
    return tmp_path


@pytest.fixture
def zenodo_layout(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "Images").mkdir()
    lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    for name, p, plane, brain in _rows(seed=1):
        cv2.imwrite(str(tmp_path / "Images" / f"{name}.png"), _fake_image(rng, 60, 84))
        lines.append(f"{name};{p};{plane};{brain};Op;Aloka;1")
    (tmp_path / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_labels_csv_layout(labels_csv_layout):
    samples = D.load_index(labels_csv_layout)
    assert len(samples) == len(_rows())
    assert {s.fine for s in samples} <= set(D.FINE_LABELS)
    assert all(D.FINE_TO_COARSE[s.fine] == s.coarse for s in samples)
    brain = [s for s in samples if s.coarse == "brain"]
    assert {s.fine for s in brain} == {"Brain (Tt.)", "Brain (Tc.)"}
    assert any(s.stretched for s in samples) and not all(s.stretched for s in samples)
    # Stretched 64x64 copies come back 1.4 : 1 wide.
    frame = D.read_frame(next(s for s in samples if s.stretched))
    assert frame.shape[:2] == (64, int(round(64 * D.RESTORED_ASPECT)))


def test_zenodo_layout_with_trailing_space_header(zenodo_layout):
    samples = D.load_index(zenodo_layout)
    assert len(samples) == len(_rows(seed=1))
    assert all(s.path.parent.name == "Images" and s.path.is_file() for s in samples)
    assert not any(s.stretched for s in samples)


@pytest.mark.parametrize("layout", ["labels_csv_layout", "zenodo_layout"])
def test_patient_split_disjoint_deterministic(layout, request):
    samples = D.load_index(request.getfixturevalue(layout))
    val = D.patient_split(samples, 0.2, seed=3)
    assert val == D.patient_split(samples, 0.2, seed=3)
    train, valid = D.split_samples(samples, val)
    assert not {s.patient for s in train} & {s.patient for s in valid}
    assert len(train) + len(valid) == len(samples)
    assert 0.1 < len(valid) / len(samples) < 0.35
    # Every class with at least 5 patients gets validation images.
    for c in {s.fine for s in samples}:
        if len({s.patient for s in samples if s.fine == c}) >= 5:
            assert any(s.fine == c for s in valid), c


def test_split_file_roundtrip_and_committed_split(tmp_path):
    path = D.write_val_patients({"12", "3", "7"}, tmp_path / "val.txt", "how it was made\nline two")
    assert path.read_text().startswith("# how it was made\n# line two\n3\n7\n12")
    assert D.read_val_patients(path) == {"3", "7", "12"}
    committed = D.read_val_patients(D.DEFAULT_VAL_PATIENTS)
    assert 50 <= len(committed) <= 120 and all(p.isdigit() for p in committed)


def test_bad_folder_is_a_clear_error(tmp_path):
    with pytest.raises(D.DataError, match="neither labels.csv"):
        D.load_index(tmp_path)
    with pytest.raises(D.DataError, match="not found"):
        D.load_index(tmp_path / "missing")


def test_cache_rois_and_standardise(labels_csv_layout, tmp_path):
    samples = D.load_index(labels_csv_layout)[:6]
    arr = D.cache_rois(samples, (48, 36), cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (6, 36, 48) and arr.dtype == np.uint8
    again = D.cache_rois(samples, (48, 36), cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(arr, again)
    x = D.per_image_standardise(arr)
    assert x.shape == (6, 1, 36, 48)
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-4) and np.allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_training_input_matches_runtime_preprocessor(labels_csv_layout, tmp_path):
    """Validation tensors built from the cache equal engines.preprocess on the runtime crop."""
    from engines.metadata import info_from_dict
    from engines.preprocess import Preprocessor
    samples = D.load_index(labels_csv_layout)[:4]
    info = info_from_dict({"model_id": "t", "labels": ["a"], "input": {"height": 36, "width": 48, "channels": 1},
                           "normalisation": {"kind": "per_image_standardise", "scale": 1.0}, "resize": "area"},
                          Path("x"))
    ours = D.per_image_standardise(D.cache_rois(samples, (48, 36), cache_dir=None, progress=False))
    pre = Preprocessor(info)
    for i, s in enumerate(samples):
        runtime = pre(D.runtime_roi(D.read_frame(s)))
        # Differences come only from rounding the averaged gray to uint8 before resizing.
        assert np.abs(runtime[0] - ours[i]).max() < 0.1


def test_augment_shapes_and_variety():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 255, (60, 80), dtype=np.uint8)
    a = augment_image(img, (64, 48), rng)
    b = augment_image(img, (64, 48), rng)
    assert a.shape == (48, 64) and a.dtype == np.uint8 and not np.array_equal(a, b)
    assert augment_batch(np.stack([img] * 3), (64, 48), rng).shape == (3, 48, 64)
