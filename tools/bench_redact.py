"""Redaction bench: ms per frame of `engines.redact` on the published crop, and the share of
outgoing frames that still carry a patient line, before (no header rule, no redaction) and after.

    python tools/bench_redact.py                  # bundled clip, every 3rd frame
    python tools/bench_redact.py --every 1 --repeat 3

The patient line "PATIENT JANE DOE 1985-02-03" is drawn (white) into each frame in three places:
`above` the image in the screen's top band, on a dark `band` touching the image's top, and `over`
tissue in the middle of the image. Its pixels are known (the mask drawn), so no OCR is needed: a
frame carries the line when more than 10 % of the line's pixels reach the outgoing image unblanked.
`header` is the clip's own burned-in header (exam date/time, name): its bright pixels above row 70.
Crops come from the real CropTracker over the clip, as in the pipeline.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.crop import CropTracker, detect_ultrasound_region  # noqa: E402
import engines.crop as crop_module  # noqa: E402
from engines.redact import redact_text  # noqa: E402

CLIP = Path(__file__).resolve().parents[1] / "streamer" / "assets" / "sample_scan.mp4"
LINE = "PATIENT JANE DOE 1985-02-03"
VISIBLE_SHARE = 0.10


def draw_case(frame: np.ndarray, case: str, image_top: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame with the patient line drawn, and the line's mask."""
    out, mask = frame.copy(), np.zeros(frame.shape[:2], np.uint8)
    h, w = frame.shape[:2]
    s = h / 720
    if case == "above":      # large and bright, just above the image
        org, scale, thick = (int(0.2 * w), max(int(30 * s), image_top - int(12 * s))), 1.2 * s, max(2, int(3 * s))
    elif case == "band":     # a dark band drawn over the image's top rows, the text on it
        band = (image_top, image_top + int(34 * s))
        out[band[0]:band[1]] = 12
        org, scale, thick = (int(0.25 * w), band[1] - int(8 * s)), 0.9 * s, max(2, int(2 * s))
    else:                    # over tissue, mid-image
        org, scale, thick = (int(0.3 * w), int(h * 0.55)), 1.0 * s, max(2, int(2 * s))
    for img, colour in ((out, (255, 255, 255)), (mask, 255)):
        cv2.putText(img, LINE, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out, mask > 0


def carries(outgoing: np.ndarray, rect, mask: np.ndarray, frame: np.ndarray) -> bool:
    """More than VISIBLE_SHARE of the masked pixels are in the outgoing image and not blanked."""
    m = rect.apply(mask)
    total = int(mask.sum())
    if total == 0:
        return False
    visible = m & (outgoing.max(axis=2) > 0) & (np.abs(outgoing.astype(np.int16)
                                                       - rect.apply(frame).astype(np.int16)).max(axis=2) == 0)
    return visible.sum() > VISIBLE_SHARE * total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(CLIP))
    ap.add_argument("--every", type=int, default=3, help="use every Nth frame")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats per frame (min taken)")
    args = ap.parse_args()
    import av

    frames = []
    with av.open(args.video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % args.every == 0:
                frames.append(f.to_ndarray(format="bgr24"))
    cases = ("header", "above", "band", "over")
    counts = {mode: {c: 0 for c in cases} for mode in ("before", "after")}
    times = {"720p": [], "1080p": []}
    for mode in ("before", "after"):
        crop_module_rule = mode == "after"
        for case in cases:
            tracker = CropTracker("auto")
            tracker_detect = detect_ultrasound_region
            # The tracker calls the module-level detector: switch the header rule for "before".
            crop_module.detect_ultrasound_region = (lambda f, _r=crop_module_rule: tracker_detect(f, header_rule=_r))
            try:
                for frame in frames:
                    if case == "header":
                        img, mask = frame, np.zeros(frame.shape[:2], bool)
                        mask[:70] = frame[:70].max(axis=2) > 140
                    else:
                        top = (detect_ultrasound_region(frame) or crop_module.CropRect.full(frame)).y0
                        img, mask = draw_case(frame, case, max(top, 40))
                    rect = tracker.update(img)
                    roi = np.ascontiguousarray(rect.apply(img))
                    out = redact_text(roi)[0] if mode == "after" else roi
                    counts[mode][case] += carries(out, rect, mask, img)
            finally:
                crop_module.detect_ultrasound_region = tracker_detect
    # Timing: redaction of the crop, 720p and the same frames upscaled to 1080p.
    for frame in frames[:: max(1, len(frames) // 60)]:
        rect = detect_ultrasound_region(frame) or crop_module.CropRect.full(frame)
        for key, img in (("720p", frame), ("1080p", cv2.resize(frame, (1920, 1080)))):
            r = rect if key == "720p" else crop_module.CropRect(*(int(v * 1.5) for v in rect.as_list()))
            roi = np.ascontiguousarray(r.apply(img))
            best = 1e9
            for _ in range(args.repeat):
                t = time.perf_counter()
                redact_text(roi)
                best = min(best, time.perf_counter() - t)
            times[key].append(best * 1e3)
    n = len(frames)
    print(f"frames: {n} of {args.video} (every {args.every})")
    print("share of outgoing frames carrying the text (before = no header rule, no redaction):")
    for case in cases:
        b, a = counts["before"][case], counts["after"][case]
        print(f"  {case:<7} before {b:4d}/{n} ({b / n:.0%})   after {a:4d}/{n} ({a / n:.0%})")
    for key, v in times.items():
        print(f"redact_text on the crop, {key}: median {np.median(v):.2f} ms, p90 {np.percentile(v, 90):.2f} ms "
              f"({len(v)} frames, best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
