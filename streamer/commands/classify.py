"""`sonoplane classify`: one still at a time (full scanner screenshots or cropped images)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2


def main(args) -> int:
    from ..infer import PlaneClassifier

    clf = PlaneClassifier(args.model, backend=args.backend, threads=args.threads)
    failures = 0
    if not args.json:
        print(f"{'file':<40} {'plane':<10} {'label':<16} confidence")
    for name in args.images:
        image = cv2.imread(name, cv2.IMREAD_COLOR) if Path(name).is_file() else None
        if image is None:
            failures += 1
            why = "not found" if not Path(name).exists() else "not a readable image"
            print(f"sonoplane classify: error: {name}: {why}", file=sys.stderr)
            continue
        pred, rect = clf.classify_frame(image, crop=args.crop)
        if args.json:
            print(json.dumps({"file": name, "plane": pred.plane, "label": pred.label,
                              "confidence": round(pred.confidence, 4),
                              "probs": {l: round(float(p), 4) for l, p in zip(pred.labels, pred.probs)},
                              "crop": rect.as_list()}))
        else:
            print(f"{Path(name).name:<40} {pred.plane:<10} {pred.label:<16} {pred.confidence:.3f}")
    return 1 if failures else 0


def register(sub) -> None:
    p = sub.add_parser("classify", help="classify still images (one line each with --json)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", help="shipped model name or .onnx path")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "torch"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--crop", help="auto | none | preset (default: the model's preset when the size matches, else auto)")
    p.add_argument("--json", action="store_true", help='one JSON line per image: {"file","plane","label","confidence","probs"}')
    p.set_defaults(func=main)
