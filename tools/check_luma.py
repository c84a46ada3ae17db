#!/usr/bin/env python3
"""Model input and prediction through the luma path vs the BGR path, frame by frame, on a video.

    python tools/check_luma.py VIDEO [--labels CSV] [--every 4] [--model NAME] [--json OUT.json]

The live loop works on the Y plane of YUV 4:2:0 video (streamer/yuv.py); before, it worked on the
BGR frame that FFmpeg's swscale made from it, and the model's gray input was the mean of B, G, R.
For every --every-th frame this decodes the frame once, crops it with the real crop tracker (on
the BGR frame, so both paths see the same region), and runs preprocessing + the model on both:
the BGR crop (the old path) and the Y crop with luma_range="limited" (the new one). Prints the
input difference in standardised units (mean / p99 / max over frames of each frame's mean and max
absolute difference), the share of frames whose top-1 label agrees, and, with the make_sweep
labels CSV, the raw per-frame accuracy of the coarse plane on labelled stable frames for each path.
No smoothing, no timing: a correctness check of the input, not a bench.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.crop import CropTracker  # noqa: E402
from engines.planes import FETAL_PLANES_DB_TO_COARSE  # noqa: E402
from streamer.infer import PlaneClassifier  # noqa: E402
from streamer.image_state import ImageStateDetector  # noqa: E402
from streamer.sources import _yuv420_planes  # noqa: E402

# Scored: the four fetal planes (the labels CSV names them as FETAL_PLANES_DB does).
FOUR_PLANES = ("brain", "abdomen", "femur", "thorax")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--labels", help="make_sweep labels CSV (frame, kind, plane columns)")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import av

    clf = PlaneClassifier(args.model)
    info, pre = clf.info, clf.preprocess
    truth = {}
    if args.labels:
        for row in csv.DictReader(open(args.labels)):
            plane = FETAL_PLANES_DB_TO_COARSE.get(row["plane"])
            if row["kind"] == "stable" and plane in FOUR_PLANES:
                truth[int(row["frame"])] = plane
    tracker, blank = CropTracker(info.crop_preset or "auto"), ImageStateDetector()
    mean_d, max_d, agree, n = [], [], 0, 0
    right = {"bgr": 0, "luma": 0}
    scored = 0
    with av.open(args.video) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if i % args.every:
                continue
            planes = _yuv420_planes(f)
            if planes is None:
                print(f"{args.video}: not limited-range YUV 4:2:0 with even sizes; the luma path does not apply")
                return 1
            bgr = f.to_ndarray(format="bgr24")
            rect = tracker.update(bgr)
            roi_bgr, roi_y = rect.apply(bgr), rect.apply(planes[0])
            if blank.update(roi_bgr, i / 60).blank:
                continue
            a, b = pre(roi_bgr), pre(np.ascontiguousarray(roi_y), luma_range="limited")
            d = np.abs(a - b)
            mean_d.append(float(d.mean()))
            max_d.append(float(d.max()))
            top = [info.coarse(info.labels[int(np.argmax(clf.backend.infer(x).logits[0]))]) for x in (a, b)]
            agree += top[0] == top[1]
            n += 1
            if i in truth:
                scored += 1
                right["bgr"] += top[0] == truth[i]
                right["luma"] += top[1] == truth[i]
    if not n:
        print("no non-blank frames")
        return 1
    md, xd = np.asarray(mean_d), np.asarray(max_d)
    report = {"video": args.video, "model": info.model_id, "frames": n, "every": args.every,
              "input_mean_abs_diff": {"mean": float(md.mean()), "p99": float(np.percentile(md, 99)),
                                      "max": float(md.max())},
              "input_max_abs_diff": {"mean": float(xd.mean()), "p99": float(np.percentile(xd, 99)),
                                     "max": float(xd.max())},
              "top1_agreement": agree / n, "scored_frames": scored,
              "accuracy_bgr": right["bgr"] / scored if scored else None,
              "accuracy_luma": right["luma"] / scored if scored else None}
    print(f"{args.video}: {n} non-blank frames (every {args.every}), model {info.model_id}")
    print(f"input |BGR - luma| per frame, standardised units: mean {md.mean():.4f} (p99 {np.percentile(md, 99):.4f}, "
          f"max {md.max():.4f}); per-frame max: mean {xd.mean():.3f}, max {xd.max():.3f}")
    print(f"top-1 coarse plane agrees on {100 * agree / n:.2f} % of frames")
    if scored:
        print(f"raw accuracy on {scored} labelled stable frames: BGR path {100 * right['bgr'] / scored:.2f} %, "
              f"luma path {100 * right['luma'] / scored:.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
