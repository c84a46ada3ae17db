#!/usr/bin/env python3
"""The seed-style baseline, for a speed-up ratio measured in one run.

What seed 000 describes, sequentially, per frame, at full resolution: cv2.fastNlMeansDenoising
+ cv2.equalizeHist on the whole frame, then an eager torch CNN (SonoNet16, the same network as
our default model, so only the pipeline differs). fastNlMeans costs seconds per 1080p frame, so
the run is capped at --frames.

    python tools/seed_baseline.py VIDEO [--frames 20] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_baseline(video: str, frames: int = 20) -> dict:
    import av
    import torch

    from engines.models import create_model

    torch.set_num_threads(2)
    model = create_model("sononet16", pretrained=True).eval()
    per_frame = []
    with av.open(video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= frames:
                break
            t0 = time.perf_counter()
            gray = cv2.cvtColor(f.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY)
            den = cv2.fastNlMeansDenoising(gray, None, h=10, templateWindowSize=7, searchWindowSize=21)
            eq = cv2.equalizeHist(den)
            x = cv2.resize(eq, (288, 224)).astype(np.float32)
            x = (x - x.mean()) / (x.std() + 1e-6) * 255
            with torch.no_grad():
                model(torch.from_numpy(x)[None, None])
            per_frame.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(per_frame)
    return {"frames": len(a), "ms_p50": float(np.percentile(a, 50)), "ms_p99": float(np.percentile(a, 99)),
            "ms_max": float(a.max()), "fps": 1000.0 / float(a.mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    r = run_baseline(args.video, args.frames)
    print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
