"""FETAL_PLANES_DB: index, patient-level split, and images prepared exactly as the runtime sees them.

Two folder layouts are read (`load_index` picks by the file that is there):

- `labels.csv` (the ../shared/data/fetal_planes subset): columns file, Image_name, Patient_num,
  Plane, Brain_plane, Operator, US_Machine, Train, copy. `copy == "resized640"` images were
  stretched to 640x640 by an earlier export; `restore_aspect` gives them back a plausible
  1.4 : 1 shape (the originals are ~1.3-1.5 : 1) before anything else looks at them.
- the full Zenodo record 3904280: `FETAL_PLANES_DB_data.csv` (`;`-separated, the last header is
  `Train ` with a trailing space) and `Images/<Image_name>.png`.

Labels: the model's fine classes split the brain into its sub-planes (FINE_LABELS); every fine
class maps to a coarse plane (FINE_TO_COARSE, engines.planes vocabulary).

Images are prepared like the live pipeline: the ultrasound region is found with the runtime's
own `engines.crop.detect_ultrasound_region`, then `engines.preprocess.Preprocessor` (resize +
normalisation from the model metadata) makes the tensor. Training keeps a slightly larger uint8
copy of the crop so augmentation can crop/translate before the final resize.

Split: by patient only (an image never leaves its patient), deterministic for a seed, greedy
stratification on each patient's fine classes so every class gets ~val_fraction of its images.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from .planes import FETAL_PLANES_DB_TO_COARSE

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fetal_planes"
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DEFAULT_VAL_PATIENTS = SPLITS_DIR / "fetal_planes_val_patients.txt"

# Fine classes (the 9-way head): brain sub-planes kept apart, the other planes as they are.
BRAIN_SUBPLANES = {"Trans-thalamic": "Brain (Tt.)", "Trans-cerebellum": "Brain (Tc.)",
                   "Trans-ventricular": "Brain (Tv.)", "Other": "Brain (other)"}
FINE_LABELS: tuple[str, ...] = ("Brain (Tt.)", "Brain (Tc.)", "Brain (Tv.)", "Brain (other)",
                                "Abdomen", "Femur", "Thorax", "Cervix", "Other")
FINE_TO_COARSE: dict[str, str] = {
    "Brain (Tt.)": "brain", "Brain (Tc.)": "brain", "Brain (Tv.)": "brain", "Brain (other)": "brain",
    "Abdomen": "abdomen", "Femur": "femur", "Thorax": "thorax", "Cervix": "cervix", "Other": "other",
}
# The 6-way head: the dataset's own planes.
COARSE_LABELS: tuple[str, ...] = ("brain", "abdomen", "femur", "thorax", "cervix", "other")
MAIN_PLANES: tuple[str, ...] = ("brain", "abdomen", "femur", "thorax")
LABEL_SETS = {"fine": FINE_LABELS, "coarse": COARSE_LABELS}

RESTORED_ASPECT = 1.4   # width / height given back to the 640x640-stretched images


class DataError(ValueError):
    """The data folder is missing, has an unknown layout, or a bad row."""


@dataclass(frozen=True)
class Sample:
    path: Path
    patient: str
    coarse: str          # engines.planes vocabulary: brain, abdomen, femur, thorax, cervix, other
    fine: str            # FINE_LABELS
    stretched: bool      # True for the 640x640 `resized640` copies
    machine: str = ""

    def label(self, label_set: str) -> str:
        return self.fine if label_set == "fine" else self.coarse


def _fine_label(plane: str, brain_plane: str) -> str:
    coarse = FETAL_PLANES_DB_TO_COARSE.get(plane.strip())
    if coarse is None:
        raise DataError(f"unknown Plane value {plane!r}")
    if coarse == "brain":
        return BRAIN_SUBPLANES.get(brain_plane.strip(), "Brain (other)")
    return {"abdomen": "Abdomen", "femur": "Femur", "thorax": "Thorax",
            "cervix": "Cervix", "other": "Other"}[coarse]


def load_index(root: str | Path) -> list[Sample]:
    """All labelled images of a FETAL_PLANES_DB folder (either layout), in file order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    samples: list[Sample] = []
    if (root / "labels.csv").is_file():
        with open(root / "labels.csv", newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    fine = _fine_label(row["Plane"], row["Brain_plane"])
                    samples.append(Sample(root / row["file"], str(int(row["Patient_num"])),
                                          FINE_TO_COARSE[fine], fine,
                                          row.get("copy", "").strip() == "resized640",
                                          row.get("US_Machine", "")))
                except (KeyError, ValueError) as exc:
                    raise DataError(f"{root / 'labels.csv'} row {i + 2}: {exc}") from exc
    elif (root / "FETAL_PLANES_DB_data.csv").is_file():
        csv_path = root / "FETAL_PLANES_DB_data.csv"
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=";")
            # Header names carry stray spaces (`Train `): normalise them once.
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            for i, row in enumerate(reader):
                try:
                    fine = _fine_label(row["Plane"], row["Brain_plane"])
                    samples.append(Sample(root / "Images" / f"{row['Image_name'].strip()}.png",
                                          str(int(row["Patient_num"])), FINE_TO_COARSE[fine], fine,
                                          False, row.get("US_Machine", "")))
                except (KeyError, ValueError) as exc:
                    raise DataError(f"{csv_path} row {i + 2}: {exc}") from exc
    else:
        raise DataError(f"{root}: neither labels.csv nor FETAL_PLANES_DB_data.csv found "
                        "(expected ../shared/data/fetal_planes or the Zenodo FETAL_PLANES_DB folder)")
    if not samples:
        raise DataError(f"{root}: no labelled images")
    return samples


# ---------------------------------------------------------------------------------------------
# Patient-level split
# ---------------------------------------------------------------------------------------------

def patient_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0) -> set[str]:
    """Validation patient ids: disjoint by patient, stratified on fine classes, deterministic.

    Patients are visited rarest-class first (random order within, from `seed`); a patient goes to
    validation when that brings its classes' validation counts closer to `val_fraction` of their
    totals (sum of squared relative errors). Patients hold several planes (brain patients often
    all three sub-planes), so per-class fractions land near, not exactly on, the target.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1)")
    per_patient: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        per_patient[s.patient][s.fine] += 1
    totals = Counter(s.fine for s in samples)
    target = {c: val_fraction * n for c, n in totals.items()}
    rng = random.Random(seed)
    patients = sorted(per_patient, key=lambda p: (len(p), p))
    rng.shuffle(patients)
    # Rarest class first, so the thin classes are placed while the big ones still have room.
    patients.sort(key=lambda p: min(totals[c] for c in per_patient[p]))
    in_val: Counter = Counter()
    val: set[str] = set()
    for p in patients:
        counts = per_patient[p]
        before = sum(((in_val[c] - target[c]) / target[c]) ** 2 for c in counts)
        after = sum(((in_val[c] + n - target[c]) / target[c]) ** 2 for c, n in counts.items())
        if after < before:
            val.add(p)
            in_val.update(counts)
    return val


def write_val_patients(val: Iterable[str], path: str | Path, how: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(val, key=lambda p: (len(p), p))
    lines = [f"# {line}" for line in how.strip().splitlines()] + ids
    path.write_text("\n".join(lines) + "\n")
    return path


def read_val_patients(path: str | Path = DEFAULT_VAL_PATIENTS) -> set[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def split_samples(samples: Sequence[Sample], val_patients: set[str]) -> tuple[list[Sample], list[Sample]]:
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val


def describe_split(train: Sequence[Sample], val: Sequence[Sample]) -> dict:
    """Sizes per class and patients, for reports and model cards."""
    return {
        "train_images": len(train), "val_images": len(val),
        "train_patients": len({s.patient for s in train}), "val_patients": len({s.patient for s in val}),
        "train_per_class": dict(sorted(Counter(s.fine for s in train).items())),
        "val_per_class": dict(sorted(Counter(s.fine for s in val).items())),
    }


# ---------------------------------------------------------------------------------------------
# Images as the runtime sees them
# ---------------------------------------------------------------------------------------------

def read_frame(sample: Sample) -> np.ndarray:
    """The image as a BGR screen-like frame, aspect restored for the 640x640-stretched copies."""
    img = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {sample.path}")
    if sample.stretched:
        img = restore_aspect(img)
    return img


def restore_aspect(img: np.ndarray, aspect: float = RESTORED_ASPECT) -> np.ndarray:
    h = img.shape[0]
    return cv2.resize(img, (int(round(aspect * h)), h), interpolation=cv2.INTER_LINEAR)


def runtime_roi(frame: np.ndarray) -> np.ndarray:
    """The crop the live pipeline would take (auto-detection, no preset); whole frame if none."""
    from engines.crop import detect_ultrasound_region
    rect = detect_ultrasound_region(frame)
    return rect.apply(frame) if rect is not None else frame


def gray(roi: np.ndarray) -> np.ndarray:
    """Colour channels averaged, as engines.preprocess does for 1-channel models."""
    if roi.ndim == 2:
        return roi
    return np.round(roi[:, :, :3].astype(np.float32).mean(axis=2)).astype(np.uint8)


def cache_rois(samples: Sequence[Sample], size: tuple[int, int], cache_dir: str | Path | None = "/tmp/sonoplane_cache",
               progress: bool = True) -> np.ndarray:
    """uint8 (N, H, W) gray runtime crops resized to `size` (w, h) with INTER_AREA, cached as .npy.

    The cache key covers the file list, the size and this module's crop code version, so a stale
    cache is never reused for other images.
    """
    def runtime_crop(s: Sample) -> np.ndarray:
        return gray(runtime_roi(read_frame(s)))
    return cached_images(samples, runtime_crop, size, "roi-v1", cache_dir, progress)


def cached_images(items: Sequence, load, size: tuple[int, int], version: str,
                  cache_dir: str | Path | None = "/tmp/sonoplane_cache", progress: bool = True) -> np.ndarray:
    """uint8 (N, h, w): `load(item)` (a gray uint8 image) resized to `size` with INTER_AREA, cached as .npy
    under a key of the items, the size and `version` (bump it when `load` changes)."""
    w, h = size
    key = hashlib.sha1(json.dumps([str(getattr(i, "path", i)) for i in items] + [w, h, version]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{version}_{w}x{h}_{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        arr = np.load(path)
        if arr.shape == (len(items), h, w):
            return arr
    out = np.empty((len(items), h, w), np.uint8)
    it: Iterable = enumerate(items)
    if progress:
        try:
            from tqdm import tqdm
            it = tqdm(it, total=len(items), desc=f"decode+crop {w}x{h}", leave=False, mininterval=10)
        except ImportError:
            pass
    for i, item in it:
        out[i] = resize_area(load(item), (w, h))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def resize_area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Halve first like engines.preprocess.Preprocessor.resize, so cached crops match its output.
    tw, th = size
    while img.shape[1] >= 4 * tw and img.shape[0] >= 4 * th:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def per_image_standardise(batch: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """float32 (N, 1, H, W) from uint8 (N, H, W): the `per_image_standardise` normalisation."""
    x = batch.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    x = (x - mean) * np.where(std > 1e-6, scale / np.maximum(std, 1e-6), 0.0)
    return x[:, None].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Write the committed validation split: `python -m engines.data --data ../shared/data/fetal_planes`."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_VAL_PATIENTS))
    args = ap.parse_args(argv)
    samples = load_index(args.data)
    val = patient_split(samples, args.val_fraction, args.seed)
    train_s, val_s = split_samples(samples, val)
    info = describe_split(train_s, val_s)
    how = (f"FETAL_PLANES_DB validation patients (Patient_num), one per line.\n"
           f"Made by: python -m engines.data --data {args.data} --val-fraction {args.val_fraction} --seed {args.seed}\n"
           f"engines.data.patient_split: split by patient only, greedy stratification on fine classes.\n"
           f"Data: {len(samples)} images / {len({s.patient for s in samples})} patients (../shared subset, Train==1 half).\n"
           f"Validation: {info['val_images']} images / {info['val_patients']} patients; "
           f"train: {info['train_images']} images / {info['train_patients']} patients.\n"
           f"Validation per class: {json.dumps(info['val_per_class'])}")
    write_val_patients(val, args.out, how)
    print(how)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
