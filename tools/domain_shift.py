#!/usr/bin/env python3
"""Domain shift, measured: what a plane model says on images from other scanners and datasets.

    python tools/domain_shift.py [--model planes_lite0] [--hc18 ../shared/data/hc18/images] [--json OUT]

1. The 13 SonoNet example frames (tests/fixtures/sononet: a different scanner, full screens with UI),
   per frame: expected plane (from the file name), the arg-max plane and its probability, the open-set
   distance and whether the open-set gate rejects it (then the runtime would show `uncertain`).
   Profile, lips and the two spine views (4 frames) are outside planes_lite0's classes: the right answer there is a rejection
   (or `other`), never a fetal plane.
2. HC18 (fetal head circumference challenge: heads, mostly trans-thalamic; another population and
   machines): share of images called brain, without and with the open-set rejection.
Each image goes the runtime's way: auto-crop (engines.crop) + Preprocessor + ONNX Runtime
(streamer.infer.PlaneClassifier.classify_frame).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from streamer.infer import PlaneClassifier  # noqa: E402

SONONET_DIR = ROOT / "tests" / "fixtures" / "sononet"
EXPECTED = {"3VV": "thorax", "4CH": "thorax", "LVOT": "thorax", "RVOT": "thorax", "ABDOMINAL": "abdomen",
            "KIDNEYS": "abdomen", "BRAIN-CB": "brain", "BRAIN-TV": "brain", "FEMUR": "femur", "LIPS": "profile",
            "PROFILE": "profile", "SPINE-CORONAL": "spine", "SPINE-SAGITTAL": "spine"}
FETAL = ("brain", "abdomen", "femur", "thorax")


def shown(pred, threshold: float | None) -> str:
    """What a stream of this frame would show: the arg-max plane, or uncertain when the gate rejects."""
    if threshold is not None and pred.open_set is not None and pred.open_set > threshold:
        return "uncertain"
    return pred.plane


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="planes_lite0")
    ap.add_argument("--hc18", default=str(ROOT.parent / "shared" / "data" / "hc18" / "images"),
                    help="HC18 image folder (skipped when missing)")
    ap.add_argument("--limit", type=int, default=0, help="HC18: at most this many images (0: all)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    clf = PlaneClassifier(args.model)
    thr = (clf.info.open_set or {}).get("threshold")
    report: dict = {"model": clf.info.model_id, "open_set_threshold": thr, "sononet": [], "hc18": None}

    print(f"{clf.info.model_id}: SonoNet example frames (tests/fixtures/sononet), open-set threshold {thr}")
    print(f"{'frame':<15} {'expected':<8} {'arg-max':<8} {'p':>5} {'distance':>9}  shown      right?")
    right = right_shown = 0
    for name in sorted(EXPECTED):
        img = cv2.imread(str(SONONET_DIR / f"{name}.jpg"))
        pred, _ = clf.classify_frame(img)
        exp, plane = EXPECTED[name], pred.plane
        s = shown(pred, thr)
        in_classes = exp in FETAL
        ok = plane == exp
        ok_shown = (s == exp) if in_classes else s not in FETAL   # unknown view: anything but a fetal plane
        right += ok
        right_shown += ok_shown
        dist = f"{pred.open_set:9.1f}" if pred.open_set is not None else f"{'-':>9}"
        print(f"{name:<15} {exp:<8} {plane:<8} {pred.confidence:5.2f} {dist}  {s:<10} {'yes' if ok_shown else 'NO'}")
        report["sononet"].append({"frame": name, "expected": exp, "argmax": plane, "label": pred.label,
                                  "p": round(pred.confidence, 4), "open_set": pred.open_set, "shown": s,
                                  "right_shown": bool(ok_shown)})
    n = len(EXPECTED)
    print(f"arg-max right {right}/{n} (profile/lips/spine cannot be: not in the model's classes); "
          f"shown right {right_shown}/{n} (for those 4, anything but a fetal plane counts as right)")
    report["sononet_argmax_right"], report["sononet_shown_right"] = right, right_shown

    hc = Path(args.hc18)
    files = sorted(p for p in hc.glob("*_HC.*") if "Annotation" not in p.name) if hc.is_dir() else []
    if args.limit:
        files = files[:args.limit]
    if files:
        planes, rejected = [], []
        for p in files:
            pred, _ = clf.classify_frame(cv2.imread(str(p)))
            planes.append(pred.plane)
            rejected.append(shown(pred, thr) == "uncertain" and pred.plane != "uncertain")
        planes, rejected = np.array(planes), np.array(rejected)
        brain = float((planes == "brain").mean())
        brain_shown = float(((planes == "brain") & ~rejected).mean())
        counts = {k: int(v) for k, v in zip(*np.unique(planes, return_counts=True))}
        print(f"HC18 ({len(files)} heads): called brain {brain:.3f} without open-set, {brain_shown:.3f} with it "
              f"(rejected {rejected.mean():.3f}); arg-max planes {counts}")
        report["hc18"] = {"images": len(files), "brain": brain, "brain_with_open_set": brain_shown,
                          "rejected": float(rejected.mean()), "argmax_planes": counts}
    else:
        print(f"HC18: {hc} not found, skipped")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
