#!/usr/bin/env python3
"""Do two redaction paths find the same text? Box-set agreement, not timings.

    python tools/compare_redaction.py --before-tree DIR [--sweep VIDEO]

1. Detector, before vs now: DIR/engines/redact.py's find_text_boxes against this checkout's, on
   BGR images: frames of the bundled clip with and without the patient line drawn (above, band,
   over: tools/bench_redact.py's cases), frames of --sweep with and without the line over tissue,
   and synthetic noise images with a text line of random colour, size and position. Counts the
   images whose box sets differ.
2. Frames topic, full-size vs display-size path (this checkout): find_text_boxes on the full-size
   colour crop of a YUV frame against streamer.topic_image.display_and_boxes, on real crops
   (the two clips with white and light-blue lines drawn) and on 200 synthetic crops with coloured
   text; for the synthetic ones also how often each leaves > 10 % of the text's pixels unboxed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_redact import CLIP, as_yuv_frame, draw_case, load_redaction_module, unboxed_share  # noqa: E402
from engines import redact  # noqa: E402
from engines.crop import CropRect, detect_ultrasound_region  # noqa: E402
from streamer.croptrack import snap_size  # noqa: E402
from streamer.topic_image import display_and_boxes  # noqa: E402


def key(boxes) -> list[tuple[int, int, int, int]]:
    return sorted((b.x0, b.y0, b.x1, b.y1) for b in boxes)


def clip_frames(video: str, step: int) -> list[np.ndarray]:
    import av
    out = []
    with av.open(video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="bgr24"))
    return out


def text_image(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurred colour noise with one text line of random colour, size and thickness, and its mask."""
    img = cv2.GaussianBlur(rng.integers(0, 60, (h, w, 3), np.uint8), (0, 0), 1.5)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if max(colour) < 180:
        colour = tuple(min(255, c + 120) for c in colour)
    org = (int(rng.integers(0, w // 2)), int(rng.integers(40, h - 20)))
    scale, thick = float(rng.uniform(0.5, 2.0)) * h / 720, int(rng.integers(1, 4))
    mask = np.zeros((h, w), np.uint8)
    for target, c in ((img, colour), (mask, 255)):
        cv2.putText(target, "SRI II 5 / CRI 1 ID 4711", org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, thick, cv2.LINE_AA)
    return img, mask > 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-tree", required=True, metavar="DIR", help="a checkout with the redaction before a change")
    ap.add_argument("--sweep", default="/tmp/exam_sweeps/val_1080p60.mp4", help="a second clip (skipped if missing)")
    ap.add_argument("--synthetic", type=int, default=200)
    args = ap.parse_args()
    before = load_redaction_module(args.before_tree, "compare_redaction")
    clips = [(str(CLIP), 9)] + ([(args.sweep, 151)] if Path(args.sweep).is_file() else [])

    # 1. The detector, before vs now, on BGR images.
    images = []
    for video, step in clips:
        for frame in clip_frames(video, step):
            top = (detect_ultrasound_region(frame) or CropRect.full(frame)).y0
            images.append(frame)
            images += [draw_case(frame, case, max(top, 40))[0] for case in ("above", "band", "over", "colour")]
    rng = np.random.default_rng(0)
    images += [text_image(rng, *((1080, 1920) if k % 2 else (720, 1280)))[0] for k in range(args.synthetic // 4)]
    differ = sum(key(before.find_text_boxes(img)) != key(redact.find_text_boxes(img)) for img in images)
    print(f"1. detector, {args.before_tree} vs this checkout: {len(images) - differ}/{len(images)} images "
          f"with identical box sets")

    # 2. The frames topic: full-size path vs display-size path, on YUV frames.
    same = total = 0
    for video, step in clips:
        for frame in clip_frames(video, step):
            rect = snap_size(detect_ultrasound_region(frame) or CropRect.full(frame))
            for case in ("none", "over", "band", "colour"):
                img = frame if case == "none" else draw_case(frame, case, max(rect.y0, 40))[0]
                yf = as_yuv_frame(img)
                total += 1
                same += key(redact.find_text_boxes(yf.colour(rect))) == key(display_and_boxes(yf, rect, 640)[1])
    print(f"2. frames topic, full-size vs display-size path: {same}/{total} real crops with identical box sets")
    rng = np.random.default_rng(1)
    missed = {"full-size": 0, "display-size": 0}
    same = 0
    for k in range(args.synthetic):
        h, w = (1080, 1920) if k % 2 else (720, 1280)
        img, mask = text_image(rng, h, w)
        yf = as_yuv_frame(img)
        rect = CropRect(int(rng.integers(0, 40)), int(rng.integers(0, 30)), w - int(rng.integers(0, 40)),
                        h - int(rng.integers(0, 30)))
        full, small = redact.find_text_boxes(yf.colour(rect)), display_and_boxes(yf, rect, 640)[1]
        same += key(full) == key(small)
        missed["full-size"] += unboxed_share(full, rect.apply(mask)) > 0.1
        missed["display-size"] += unboxed_share(small, rect.apply(mask)) > 0.1
    print(f"   synthetic coloured text: {same}/{args.synthetic} crops with identical box sets; more than 10 % of "
          f"the text unboxed: full-size {missed['full-size']}, display-size {missed['display-size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
