#!/usr/bin/env python3
"""Redaction under random patient text: how often a line of text drawn over the image survives.

    python tools/stress_redaction.py                                  # the bundled clip, four widths
    python tools/stress_redaction.py --video A.mp4 --images DIR --before-tree DIR

tools/bench_redact.py draws one fixed line in five fixed places; a detector tuned until that line
is always found can still miss text of another size, font, colour or place. This bench draws, on
frames of each video (and each still image) scaled to each --widths width, one line of random
patient-like text (names, IDs, dates, gestational ages) over the imaging region: random Hershey
font, cap height 1.5-3.5 % of the frame height (~16-38 px at 1080p), stroke a tenth to a sixth of it
(at least 1 px), colour from the palette scanners use for overlays (white, grey, yellow, cyan, light
blue, green), in the middle of the frame (over the image). The same frames and lines (one seed)
go through each detector, so figures are paired.

For each width and path it prints the share of lines that leak: more than 10 % of the line's pixels
outside every blanked box ("leak"), more than 2 % ("partial"); and, on the same frames without the
line, the share of the crop blanked (the cost of false boxes on tissue; it includes real UI text).
Paths: `topic` = the frames topic (streamer.topic_image: detection on a small copy of the YUV
planes, as the live loop publishes), `full` = engines.redact.find_text_boxes on the full-size
colour crop (what every outgoing full-size image gets), `capture` = `full` plus the learned text
detector's boxes (engines/text_detect.py: what a stored exam capture gets; --no-capture leaves it
out, it takes ~0.3-0.4 s per image). --before-tree DIR adds DIR's detector on the full-size path
(`full before`), in the same run. Leak figures only (and the learned detector's median time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_redact import (CLIP, as_yuv_frame, box_mask, load_redaction_module, scaled_to_width,  # noqa: E402
                          unboxed_share)
from engines import redact  # noqa: E402
from engines.crop import CropRect, detect_ultrasound_region  # noqa: E402
from streamer.croptrack import snap_size  # noqa: E402
from streamer.topic_image import display_and_boxes  # noqa: E402

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX)
PALETTE = ((255, 255, 255), (210, 210, 210), (0, 255, 255), (255, 255, 0), (255, 170, 40), (80, 255, 80))
SURNAMES = ("DOE", "MUELLER", "GARCIA LOPEZ", "NGUYEN", "O'BRIEN", "SMITH-JONES", "KOWALSKI", "ABE")
GIVEN = ("JANE", "MARIA", "AISHA", "LI", "EVA", "FATIMA", "ANNA", "SOFIA")
LEAK_SHARE, PARTIAL_SHARE = 0.10, 0.02
CLEAR_CONTRAST, CLEAR_CAP = 80, 6.0


def patient_text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return f"{rng.choice(SURNAMES)}, {rng.choice(GIVEN)}"
    if kind == 1:
        return f"ID {int(rng.integers(10 ** 5, 10 ** 9))}"
    if kind == 2:
        return f"DOB {int(rng.integers(1970, 2008))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if kind == 3:
        return f"GA {int(rng.integers(11, 41))}w{int(rng.integers(0, 7))}d  LMP"
    return f"{rng.choice(GIVEN).title()} {rng.choice(SURNAMES).title()} {int(rng.integers(1, 99)):02d}"


def draw_random_line(rng: np.random.Generator, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The frame with one random line of patient text in its middle (x 15-85 %, y 20-85 %: over
    the image on these clips; placed from the frame alone, so every detector sees the same
    lines), and the line's mask."""
    h, w = frame.shape[:2]
    text, font = patient_text(rng), int(rng.choice(FONTS))
    cap = float(rng.uniform(0.015, 0.035)) * h
    scale = cap / cv2.getTextSize("H", font, 1.0, 1)[0][1]
    thick = max(1, int(round(cap * float(rng.uniform(0.10, 0.17)))))
    x_lo, x_hi, y_lo, y_hi = int(0.15 * w), int(0.85 * w), int(0.20 * h), int(0.85 * h)
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x_room = x_hi - x_lo - tw
    org = (x_lo + int(rng.integers(0, max(1, x_room))), y_lo + th + int(rng.integers(0, y_hi - y_lo - th - base)))
    colour = tuple(int(c) for c in PALETTE[int(rng.integers(0, len(PALETTE)))])
    out, mask = frame.copy(), np.zeros(frame.shape[:2], np.uint8)
    for img, c in ((out, colour), (mask, 255)):
        cv2.putText(img, text, org, font, scale, c, thick, cv2.LINE_AA)
    return out, mask > 0, cap


def line_class(frame: np.ndarray, mask: np.ndarray, cap: float, crop_width: int) -> str:
    """`clear`: the line's colour at least CLEAR_CONTRAST brighter (brightest channel) than the
    image around it, and its cap height at least CLEAR_CAP pixels in the detector's working copy
    (engines.redact.work_factor of the crop); `faint` or `small` otherwise (faint first)."""
    m8 = mask.astype(np.uint8)
    ring = cv2.dilate(m8, np.ones((9, 9), np.uint8)).astype(bool) & ~cv2.dilate(m8, np.ones((3, 3), np.uint8)).astype(bool)
    gray = frame.max(axis=2).astype(np.float32)
    if float(np.percentile(gray[mask], 90)) - float(gray[ring].mean()) < CLEAR_CONTRAST:
        return "faint"
    return "small" if cap / redact.work_factor(crop_width) < CLEAR_CAP else "clear"


def load_frames(videos: list[str], images: list[str], per_source: int) -> list[np.ndarray]:
    """`per_source` frames spread over each video, and every image of each --images folder (BGR)."""
    import av
    frames = []
    for video in videos:
        with av.open(video) as c:
            total = c.streams.video[0].frames or 0
            step = max(1, total // per_source) if total else 15
            taken = [f.to_ndarray(format="bgr24") for i, f in enumerate(c.decode(video=0)) if i % step == 0]
        frames += taken[:per_source]
    for folder in images:
        for p in sorted(Path(folder).glob("*.png")) + sorted(Path(folder).glob("*.jpg")):
            img = cv2.imread(str(p))
            if img is not None:
                frames.append(img)
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", action="append", help="a clip (repeatable; default: the bundled clip)")
    ap.add_argument("--images", action="append", default=[], metavar="DIR", help="a folder of still frames (png/jpg)")
    ap.add_argument("--frames", type=int, default=40, help="frames taken from each video")
    ap.add_argument("--lines", type=int, default=2, help="random lines tried per frame and width (one at a time)")
    ap.add_argument("--widths", default="1280,1920,2560,3840")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before-tree", metavar="DIR", help="also DIR's detector on the full-size path")
    ap.add_argument("--no-capture", action="store_true", help="leave out the `capture` path (the learned detector)")
    args = ap.parse_args()
    learned = None
    if not args.no_capture:
        from engines.text_detect import LearnedTextDetector
        learned, learned_s = LearnedTextDetector(), []

        def capture_boxes(colour):
            t = time.perf_counter()
            extra = learned.boxes(colour)
            learned_s.append(time.perf_counter() - t)
            return redact.find_text_boxes(colour) + extra
    before = load_redaction_module(args.before_tree, "stress_redaction") if args.before_tree else None
    sources = load_frames(args.video or [str(CLIP)], args.images, args.frames)
    if not sources:
        raise SystemExit("stress_redaction: no frames in the given videos / image folders")
    rng = np.random.default_rng(args.seed)
    paths = ["topic", "full"] + (["capture"] if learned else []) + (["full before"] if before else [])
    classes = ("clear", "small", "faint")
    print(f"{len(sources)} source frames x {args.lines} lines per width; seed {args.seed}")
    print(f"leak % = lines with > {LEAK_SHARE:.0%} of their pixels unblanked (partial: > {PARTIAL_SHARE:.0%}), per "
          f"class: clear = >= {CLEAR_CONTRAST} brighter than the image around it and cap >= {CLEAR_CAP:g} working "
          f"pixels; small = cap below; faint = contrast below")
    print(f"{'width':>6} {'path':<12} {'lines':>6} {'leak %':>7} {'partial %':>9} "
          + " ".join(f"{c + ' (n)':>14}" for c in classes) + f" {'blanked % (no line)':>20}")
    for width in (int(w) for w in args.widths.split(",")):
        leak = {p: 0 for p in paths}
        partial = {p: 0 for p in paths}
        by_class = {p: {c: 0 for c in classes} for p in paths}
        in_class = {c: 0 for c in classes}
        blanked = {p: [] for p in paths}
        lines = 0
        for src in sources:
            frame = scaled_to_width(src, width, cv2.INTER_AREA if width < src.shape[1] else cv2.INTER_LINEAR)
            rect = snap_size(detect_ultrasound_region(frame) or CropRect.full(frame))
            clean = as_yuv_frame(frame)
            detectors = {"topic": lambda yf: display_and_boxes(yf, rect, 640)[1],
                         "full": lambda yf: redact.find_text_boxes(yf.colour(rect))}
            if learned:
                detectors["capture"] = lambda yf: capture_boxes(yf.colour(rect))
            if before:
                detectors["full before"] = lambda yf: before.find_text_boxes(yf.colour(rect))
            for p, detect in detectors.items():
                blanked[p].append(float(box_mask(detect(clean), (rect.height, rect.width)).mean()))
            for _ in range(args.lines):
                img, mask, cap = draw_random_line(rng, frame)
                yf, m = as_yuv_frame(img), rect.apply(mask)
                if not m.any():
                    continue
                lines += 1
                kind = line_class(img, mask, cap, rect.width)
                in_class[kind] += 1
                for p, detect in detectors.items():
                    share = unboxed_share(detect(yf), m)
                    leak[p] += share > LEAK_SHARE
                    by_class[p][kind] += share > LEAK_SHARE
                    partial[p] += share > PARTIAL_SHARE
        for p in paths:
            shares = " ".join(f"{100 * by_class[p][c] / max(1, in_class[c]):>8.1f} ({in_class[c]:>3})" for c in classes)
            print(f"{width:>6} {p:<12} {lines:>6} {100 * leak[p] / lines:>7.1f} {100 * partial[p] / lines:>9.1f} "
                  f"{shares} {100 * float(np.mean(blanked[p])):>20.2f}")
    if learned:
        print(f"learned detector (capture path): median {1e3 * float(np.median(learned_s)):.0f} ms per image "
              f"over {len(learned_s)} images, one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
