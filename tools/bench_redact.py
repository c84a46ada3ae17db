"""Redaction bench: ms per frame of `engines.redact` on the published crop, and the share of
outgoing frames that still carry a patient line, before (no header rule, no redaction) and after.

    python tools/bench_redact.py                  # bundled clip, every 3rd frame
    python tools/bench_redact.py --every 1 --repeat 3
    python tools/bench_redact.py --before-tree /tmp/before     # session 4's path with the old redaction

The patient line "PATIENT JANE DOE 1985-02-03" is drawn (white) into each frame in three places:
`above` the image in the screen's top band, on a dark `band` touching the image's top, and `over`
tissue in the middle of the image. Its pixels are known (the mask drawn), so no OCR is needed: a
frame carries the line when more than 10 % of the line's pixels reach the outgoing image unblanked.
`header` is the clip's own burned-in header (exam date/time, name): its bright pixels above row 70.
Crops come from the real CropTracker over the clip, as in the pipeline.

`colour` draws the line in light blue over tissue (coloured UI text is bright in one channel).
`live` takes each frame (text drawn) as YUV 4:2:0, as the live loop holds H.264 video
(streamer/yuv.py): the crop converted to colour (CapturedFrame.colour) and redacted at full size,
judged against the frame's own colour conversion. The two `topic` modes judge what the frames topic
really publishes, the <= 640-px image, each against its own unredacted image: `topic-s4` is the
worker's path up to session 4 (colour crop, full-size redaction, downscale), `topic` the current
one (streamer/topic_image.py: detection on a small copy of the planes, boxes blanked at display
size). At display size a pixel carries the line when any of the line's pixels falls in it.
Timing rows (CPU of this thread, best of --repeat): redaction of a BGR crop (`after`), and the frames
worker's preparation of a YUV crop before the JPEG, both ways, at 720p, 1080p and 4K (the clip
rescaled; crops with sides a multiple of 4, as the runtime tracks them); --video to time another clip.
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
from engines.downscale import downscale_to_width  # noqa: E402
from engines.redact import redact_text  # noqa: E402
from streamer.capture import LAYOUT_I420, CapturedFrame  # noqa: E402
from streamer.croptrack import snap_size  # noqa: E402
from streamer.topic_image import display_and_boxes, redacted_display  # noqa: E402

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
    ink = (255, 170, 40) if case == "colour" else (255, 255, 255)
    for img, colour in ((out, ink), (mask, 255)):
        cv2.putText(img, LINE, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out, mask > 0


def box_mask(boxes, shape) -> np.ndarray:
    """The pixels (bool, of an image of `shape`) inside any of the boxes."""
    covered = np.zeros(shape[:2], bool)
    for b in boxes:
        covered[b.y0:b.y1, b.x0:b.x1] = True
    return covered


def unboxed_share(boxes, mask: np.ndarray) -> float:
    """The share of the masked pixels outside every box (what blanking the boxes would leave)."""
    return float((mask & ~box_mask(boxes, mask.shape)).sum() / max(1, mask.sum()))


def scaled_to_width(img: np.ndarray, width: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """`img` resized to `width` pixels wide, its height in proportion rounded to an even number
    (as video frames are)."""
    h = round(img.shape[0] * width / img.shape[1]) // 2 * 2
    return cv2.resize(img, (width, h), interpolation=interpolation)


def carries(outgoing: np.ndarray, rect, mask: np.ndarray, frame: np.ndarray) -> bool:
    """More than VISIBLE_SHARE of the masked pixels are in the outgoing image and not blanked."""
    m = rect.apply(mask)
    total = int(mask.sum())
    if total == 0:
        return False
    visible = m & (outgoing.max(axis=2) > 0) & (np.abs(outgoing.astype(np.int16)
                                                       - rect.apply(frame).astype(np.int16)).max(axis=2) == 0)
    return visible.sum() > VISIBLE_SHARE * total


def as_yuv_frame(img: np.ndarray) -> CapturedFrame:
    """The frame as the live loop holds YUV 4:2:0 video (I420 planes)."""
    h, w = img.shape[:2]
    return CapturedFrame(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), LAYOUT_I420, h, w, 0, None, 0.0, 0.0, 0)


def carries_display(outgoing: np.ndarray, reference: np.ndarray, rect, mask: np.ndarray) -> bool:
    """`carries` for an image published at display size: a display pixel shows the line when any
    of the line's pixels falls in it and it is neither blanked nor changed from `reference` (the
    same image unredacted); the share is of all the line's display pixels (the frame's mask at
    the same scale)."""
    h, w = outgoing.shape[:2]
    sx, sy = w / rect.width, h / rect.height
    full = cv2.resize(mask.astype(np.uint8), (max(1, round(mask.shape[1] * sx)), max(1, round(mask.shape[0] * sy))),
                      interpolation=cv2.INTER_AREA) > 0
    total = int(full.sum())
    if total == 0:
        return False
    shown = cv2.resize(rect.apply(mask).astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA) > 0
    visible = shown & (outgoing.max(axis=2) > 0) & (outgoing == reference).all(axis=2)
    return visible.sum() > VISIBLE_SHARE * total


# The redaction the `topic-s4` path and the `live` rows use: this checkout's, or --before-tree's.
s4_redact_text = redact_text


def load_redaction_module(tree: str, tool: str = "bench_redact"):
    """The engines/redact.py module of another checkout (e.g. a worktree of the commit before a change);
    a missing file ends `tool` with one line."""
    import importlib.util
    path = Path(tree) / "engines" / "redact.py"
    if not path.is_file():
        raise SystemExit(f"{tool}: no engines/redact.py under {tree}")
    spec = importlib.util.spec_from_file_location("redact_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["redact_before"] = module        # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def topic_s4(frame: CapturedFrame, rect, redact: bool = True) -> np.ndarray:
    """The frames topic's image up to session 4: colour crop, full-size redaction, downscale."""
    crop = frame.colour(rect)
    return downscale_to_width(s4_redact_text(crop, in_place=True)[0] if redact else crop, 640, cv2.INTER_LINEAR)


def topic_now(frame: CapturedFrame, rect, redact: bool = True) -> np.ndarray:
    """The frames topic's image now (Pipeline.frames_topic_image)."""
    return redacted_display(frame, rect, 640, redact=redact)


def topic_now_unblanked(frame: CapturedFrame, rect) -> np.ndarray:
    """What topic_now publishes before its boxes are blanked (its own reference)."""
    return display_and_boxes(frame, rect, 640)[0].copy()


def live_full_size(frame: CapturedFrame, rect) -> np.ndarray:
    """The frames worker's preparation: colour crop, redaction (in place: the crop is fresh), then
    the topic's downscale (Pipeline.frames_topic_image + Publisher._send_frame before the JPEG)."""
    return downscale_to_width(s4_redact_text(frame.colour(rect), in_place=True)[0], 640, cv2.INTER_LINEAR)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(CLIP))
    ap.add_argument("--every", type=int, default=3, help="use every Nth frame")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats per frame (min taken)")
    ap.add_argument("--width", type=int, metavar="W",
                    help="scale the clip's frames to W pixels wide before drawing the text (e.g. 1920: the frames "
                         "topic's 1080p path, detection on a small copy of the planes, is what 1080p and 4K "
                         "sources take; the bundled clip's own 720p crops take the full-size path)")
    ap.add_argument("--no-timing", action="store_true", help="leak figures only")
    ap.add_argument("--modes", default="before,after,live,topic-s4,topic",
                    help="comma list of the leak modes to run (default all)")
    ap.add_argument("--before-tree", metavar="DIR",
                    help="take `topic-s4` and the `live` rows' redaction from DIR/engines/redact.py (a checkout "
                         "of the commit before a change): before and after in one run")
    args = ap.parse_args()
    global s4_redact_text
    if args.before_tree:
        s4_redact_text = load_redaction_module(args.before_tree).redact_text
    import av

    frames = []
    with av.open(args.video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % args.every == 0:
                img = f.to_ndarray(format="bgr24")
                if args.width and args.width != img.shape[1]:
                    img = scaled_to_width(img, args.width)
                frames.append(img)
    cases = ("header", "above", "band", "over", "colour")
    modes = tuple(m for m in args.modes.split(",") if m)
    bad = set(modes) - {"before", "after", "live", "topic-s4", "topic"}
    if bad:
        raise SystemExit(f"bench_redact: unknown --modes {', '.join(sorted(bad))}")
    counts = {mode: {c: 0 for c in cases} for mode in modes}
    times = {k: [] for k in ("720p", "1080p", "720p live", "1080p live", "2160p live",
                             "720p topic", "1080p topic", "2160p topic")}
    for mode in modes:
        crop_module_rule = mode != "before"
        for case in cases:
            tracker = CropTracker("auto")
            tracker_detect = detect_ultrasound_region
            # The tracker calls the module-level detector: switch the header rule for "before".
            crop_module.detect_ultrasound_region = (lambda f, _r=crop_module_rule: tracker_detect(f, header_rule=_r))
            try:
                for frame in frames:
                    if case == "header":
                        img, mask = frame, np.zeros(frame.shape[:2], bool)
                        top = 70 * frame.shape[0] // 720       # the clip's header band, scaled with --width
                        mask[:top] = frame[:top].max(axis=2) > 140
                    else:
                        top = (detect_ultrasound_region(frame) or crop_module.CropRect.full(frame)).y0
                        img, mask = draw_case(frame, case, max(top, 40))
                    rect = tracker.update(img)
                    if mode.startswith("topic"):
                        yuv_frame = as_yuv_frame(img)
                        if mode == "topic":
                            out, ref = topic_now(yuv_frame, rect), topic_now_unblanked(yuv_frame, rect)
                        else:
                            out, ref = topic_s4(yuv_frame, rect), topic_s4(yuv_frame, rect, redact=False)
                        counts[mode][case] += carries_display(out, ref, rect, mask)
                        continue
                    if mode == "live":
                        yuv_frame = as_yuv_frame(img)
                        out = redact_text(yuv_frame.colour(rect))[0]
                        counts[mode][case] += carries(out, rect, mask, yuv_frame.image)
                        continue
                    roi = np.ascontiguousarray(rect.apply(img))
                    out = redact_text(roi)[0] if mode == "after" else roi
                    counts[mode][case] += carries(out, rect, mask, img)
            finally:
                crop_module.detect_ultrasound_region = tracker_detect
    # Timing: redaction of the crop, 720p and the same frames upscaled to 1080p.
    def best_ms(fn) -> float:
        best = 1e9
        for _ in range(args.repeat):
            t = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t)
        return best * 1e3

    cv2.setNumThreads(1)      # the frames worker's own thread, as in a run on two cores

    for frame in frames[:: max(1, len(frames) // 60)] if not args.no_timing else []:
        rect = detect_ultrasound_region(frame) or crop_module.CropRect.full(frame)
        for key, width in (("720p", 1280), ("1080p", 1920), ("2160p", 3840)):
            scale = width / frame.shape[1]
            img = frame if scale == 1 else cv2.resize(frame, (width, width * 9 // 16))
            # The crop as the runtime tracks it: sides a multiple of 4 (streamer/croptrack.py).
            r = snap_size(crop_module.CropRect(*(int(v * scale) for v in rect.as_list())))
            if key != "2160p":
                roi = np.ascontiguousarray(r.apply(img))
                times[key].append(best_ms(lambda: redact_text(roi)))
            yuv_frame = as_yuv_frame(img)
            times[f"{key} live"].append(best_ms(lambda: live_full_size(yuv_frame, r)))
            times[f"{key} topic"].append(best_ms(lambda: topic_now(yuv_frame, r)))
    n = len(frames)
    size = f", scaled to {frames[0].shape[1]}x{frames[0].shape[0]}" if frames and args.width else ""
    print(f"frames: {n} of {args.video} (every {args.every}{size}); topic-s4 and live rows: engines/redact.py of "
          f"{args.before_tree or 'this checkout'}")
    print("share of outgoing frames carrying the text (before = no header rule, no redaction; after = "
          "redaction of the BGR crop; live = of the colour crop of a YUV frame; topic-s4 / topic = the frames "
          "topic's published image, session 4's path / now):")
    for case in cases:
        print(f"  {case:<7} " + "   ".join(f"{m} {counts[m][case]:4d}/{n} ({counts[m][case] / n:.0%})" for m in modes))
    for key, v in times.items() if not args.no_timing else []:
        what = ("frames worker, session 4's path: colour + redaction + downscale of a YUV crop" if key.endswith("live")
                else "frames worker now: streamer.topic_image.redacted_display of a YUV crop" if key.endswith("topic")
                else "redact_text on the BGR crop")
        print(f"{what}, {key.split()[0]}: median {np.median(v):.2f} ms, p90 {np.percentile(v, 90):.2f} ms "
              f"({len(v)} frames, best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
