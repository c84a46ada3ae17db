"""Port the authors' SonoNet16 weights (Lasagne npz) to a sonoplane ONNX model.

    python -m engines.port_sononet [--npz ../shared/data/sononet/SonoNet16.npz] [--out engines/zoo/sononet16.onnx]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .export import export_onnx
from .metadata import file_sha256
from .models.sononet import DEFAULT_NPZ, sononet16
from .planes import SONONET16_LABELS, SONONET16_TO_COARSE
from .zoo import ZOO_DIR

CITATION = ("Baumgartner C.F. et al., SonoNet: Real-Time Detection and Localisation of Fetal Standard "
            "Scan Planes in Freehand Ultrasound, IEEE TMI 36(11) 2017, arXiv:1612.05601")


def sononet16_metadata(npz_path: Path) -> dict:
    return {
        "model_id": "sononet16",
        "task": "plane",
        "labels": list(SONONET16_LABELS),
        "coarse_map": SONONET16_TO_COARSE,
        "input": {"height": 224, "width": 288, "channels": 1},
        # As the authors trained it: colour channels averaged to gray, then per image
        # 255 * (x - mean) / std.
        "normalisation": {"kind": "per_image_standardise", "scale": 255.0},
        "resize": "linear",
        "crop_preset": "sononet_975x735",
        "temperature": 1.0,
        "license": "Apache-2.0 (weights: SonoNet-weights by C. Baumgartner)",
        "citation": CITATION,
        "source": {"weights": "https://github.com/baumgach/SonoNet-weights SonoNet16.npz",
                   "npz_sha256": file_sha256(npz_path)},
        "training": {"data": "the authors' private fetal ultrasound videos (not retrained here)",
                     "made_by": "python -m engines.port_sononet"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--out", type=Path, default=ZOO_DIR / "sononet16.onnx")
    args = ap.parse_args(argv)
    if not args.npz.is_file():
        ap.error(f"SonoNet16 weights not found: {args.npz}")
    model = sononet16(pretrained=True, npz_path=args.npz)
    example = torch.randn(2, 1, 224, 288) * 255.0
    export_onnx(model, sononet16_metadata(args.npz), args.out, example)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
