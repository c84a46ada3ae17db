#!/usr/bin/env python3
"""Rebuild the bundled demo clip streamer/assets/sample_scan.mp4 (+ .csv ground truth).

    python tools/make_sample_clip.py [--shared ../shared]

Stills: three FETAL_PLANES_DB images (CC BY 4.0) and four SonoNet example frames (Apache-2.0),
listed in streamer/assets/ATTRIBUTION.md. The FETAL_PLANES_DB stills were chosen among images the
pretrained SonoNet16 labels correctly through the real auto-crop path on the rendered screen, so the demo shows right labels: the clip is a demo, not
an evaluation (tools/bench_video.py on validation-patient sweeps is the evaluation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_sweep  # noqa: E402

FETAL_PLANES_FILES = [
    "Patient00305_Plane3_5_of_5.jpg",   # Fetal brain
    "Patient00305_Plane2_1_of_2.jpg",   # Fetal abdomen
    "Patient00721_Plane5_1_of_1.jpg",   # Fetal femur
]
SONONET_NAMES = ["4CH", "BRAIN-TV", "FEMUR"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "streamer" / "assets" / "sample_scan.mp4")
    args = ap.parse_args()
    data = args.shared / "data"
    return make_sweep.main([
        "--images", str(data / "fetal_planes" / "labels.csv"), "--files", *FETAL_PLANES_FILES,
        "--sononet-examples", str(data / "sononet" / "examples"), "--sononet-names", *SONONET_NAMES,
        "--size", "1280x720", "--fps", "30", "--hold", "3.5", "--transition", "0.5",
        "--frozen", "2", "--blank", "2", "--crf", "28", "--seed", "7",
        "--out", str(args.out), "--labels", str(args.out.with_suffix(".csv")),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
