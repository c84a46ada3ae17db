#!/usr/bin/env python3
"""The frames worker's work per sent frame, step by step: session 4's path and the current one.

    python tools/profile_frames_topic.py VIDEO [--every N] [--max-frames N] [--repeat 3]

Frames of VIDEO are taken as the live loop holds H.264 video (YUV 4:2:0 planes), cropped as the
runtime tracks them (detected region, sides a multiple of 4). For each frame, each step is timed
as this thread's CPU time (best of --repeat), OpenCV on one thread as on the worker:

- session 4's path: colour conversion of the whole crop, redaction at full size (shrink, brightest
  channel, top-hat + threshold, connected components, glyphs and words, blanking), the downscale
  to 640 px, the JPEG;
- now (streamer/topic_image.py): the chroma check, the working copy from the planes, its coloured
  blocks at full size (when any), the same detector steps, the display copy, blanking, the JPEG.

The detector steps run this checkout's engines.redact in both columns, so the table shows where the
time goes; tools/bench_redact.py --before-tree compares the old code's totals. Prints median ms
per step and the totals.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines import redact as R  # noqa: E402
from engines.crop import CropRect, detect_ultrasound_region  # noqa: E402
from engines.downscale import downscale_to_width  # noqa: E402
from streamer import topic_image as T  # noqa: E402
from streamer import yuv  # noqa: E402
from streamer.capture import LAYOUT_I420, CapturedFrame  # noqa: E402
from streamer.croptrack import snap_size  # noqa: E402
from streamer.publish import FRAME_MAX_WIDTH  # noqa: E402

JPEG = [cv2.IMWRITE_JPEG_QUALITY, 80]


class Steps:
    def __init__(self, repeat: int):
        self.repeat, self.ms = repeat, {}

    def __call__(self, name: str, fn):
        best, out = 1e9, None
        for _ in range(self.repeat):
            t = time.thread_time()
            out = fn()
            best = min(best, time.thread_time() - t)
        self.ms.setdefault(name, []).append(best * 1e3)
        return out


def _labelled_boxes(strokes: np.ndarray):
    n, labels = R._labels(strokes)
    points = cv2.findNonZero(strokes)
    if points is None:
        return n, labels, None
    points = points.reshape(-1, 2)
    return n, labels, R._boxes_of(n, labels[points[:, 1], points[:, 0]], points[:, 0], points[:, 1])


def detector_steps(step: Steps, column: str, gray: np.ndarray) -> list:
    """engines.redact.find_text_boxes_small, timed as its parts (the same code, split)."""
    strokes, tophat = step(f"{column}: top-hat + threshold", lambda: R.stroke_mask(gray))
    if hasattr(R, "_labels"):     # session 7: labels only, boxes from the stroke pixel list
        step(f"{column}: connected components (labels + boxes of the strokes)", lambda: _labelled_boxes(strokes))
    else:
        step(f"{column}: connected components", lambda: R._components(strokes))
    total = step(f"{column}: detector total (find_text_boxes_small)", lambda: R.find_text_boxes_small(gray))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--max-frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import av
    if not Path(args.video).is_file():
        print(f"profile_frames_topic: no such video: {args.video}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    step = Steps(args.repeat)
    n = 0
    with av.open(args.video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % args.every:
                continue
            bgr = f.to_ndarray(format="bgr24")
            h, w = bgr.shape[:2]
            frame = CapturedFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), LAYOUT_I420, h, w, 0, None, 0.0, 0.0, 0)
            rect = snap_size(detect_ultrasound_region(bgr) or CropRect.full(bgr))
            # Session 4's path.
            s4 = "session 4"
            crop = step(f"{s4}: colour conversion of the whole crop", lambda: frame.colour(rect))
            ch, cw = crop.shape[:2]
            f_ = R.work_factor(cw)
            small = step(f"{s4}: shrink (3 channels, area)", lambda: cv2.resize(
                crop[:ch // f_ * f_, :cw // f_ * f_], (cw // f_, ch // f_), interpolation=cv2.INTER_AREA))
            gray = step(f"{s4}: brightest channel", lambda: T.brightest(small))
            detector_steps(step, s4, gray)
            boxes = R.boxes_in_image(R.find_text_boxes_small(gray), f_, cw, ch)
            out = crop.copy()
            step(f"{s4}: blank at full size", lambda: [out.__setitem__((slice(b.y0, b.y1), slice(b.x0, b.x1)), 0)
                                                       for b in boxes])
            shown = step(f"{s4}: downscale to 640", lambda: downscale_to_width(out, FRAME_MAX_WIDTH, cv2.INTER_LINEAR))
            step(f"{s4}: JPEG", lambda: cv2.imencode(".jpg", shown, JPEG))
            # Now.
            now = "now"
            planes_path = rect.width >= 2 * FRAME_MAX_WIDTH
            step(f"{now}: chroma check (coloured blocks)", lambda: T.coloured_blocks(frame, rect, f_))
            if planes_path:
                step(f"{now}: working copy from the planes", lambda: yuv.to_bgr_shrunk(
                    frame.pixels, h, w, rect, f_))
                copy = step(f"{now}: working copy incl. coloured blocks, brightest", lambda: T.detection_copy(
                    frame, rect, f_))
            else:
                copy = None
            if copy is None:     # the full-size path: as session 4 up to the detector
                gray_now = T.brightest(cv2.resize(crop[:ch // f_ * f_, :cw // f_ * f_], (cw // f_, ch // f_),
                                                  interpolation=cv2.INTER_AREA))
            else:
                gray_now = copy[0]
            detector_steps(step, now, gray_now)
            display, boxes = step(f"{now}: display copy + boxes (whole display_and_boxes)",
                                  lambda: T.display_and_boxes(frame, rect, FRAME_MAX_WIDTH))
            step(f"{now}: display copy alone", lambda: T.display_image(frame, rect, FRAME_MAX_WIDTH))
            out_now = step(f"{now}: total before the JPEG (redacted_display)",
                           lambda: T.redacted_display(frame, rect, FRAME_MAX_WIDTH))
            step(f"{now}: JPEG", lambda: cv2.imencode(".jpg", out_now, JPEG))
            n += 1
            if n >= args.max_frames:
                break
    print(f"{n} frames of {args.video} (every {args.every}), crop {rect.as_list()} (last), "
          f"thread CPU, best of {args.repeat}, median ms:")
    for name, v in step.ms.items():
        print(f"  {name:<60} {np.median(v):6.2f}   (n={len(v)})")
    s4_total = sum(np.median(v) for k, v in step.ms.items() if k.startswith("session 4")
                   and k.split(": ")[1] not in ("top-hat + threshold", "connected components"))
    now_total = np.median(step.ms["now: total before the JPEG (redacted_display)"]) + np.median(step.ms["now: JPEG"])
    print(f"  total per sent frame: session 4's path {s4_total:.2f} ms, now {now_total:.2f} ms "
          f"(x{now_total / s4_total:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
