"""Draw the overlay: stable plane (large), confidence bar, top-3 raw classes, states, fps, latency.

Never shows an old label as current: with no result, or a result older than `stale_after_s`
(by the overlay's own clock, from receipt), or a source that is not live, the plane is drawn
grey and struck through under a STALE / NO SIGNAL banner.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from engines.planes import COARSE_PLANES

FONT = cv2.FONT_HERSHEY_DUPLEX
# One colour per coarse plane (BGR), readable on dark ultrasound.
PLANE_COLOURS = {
    "brain": (255, 170, 60), "abdomen": (80, 200, 255), "femur": (120, 230, 120), "thorax": (120, 120, 255),
    "spine": (230, 130, 230), "profile": (200, 230, 90), "cervix": (180, 180, 255), "other": (200, 200, 200),
}
GREY = (150, 150, 150)
AMBER = (0, 190, 255)
RED = (60, 60, 235)
PANEL_WIDTH = 0.32   # share of the output width used by the side panel


def is_stale(result: dict | None, now_mono: float, received_mono: float | None, stale_after_s: float) -> tuple[bool, str]:
    """(stale, why). A result is current only if fresh, from a live source and not flagged stale."""
    if result is None:
        return True, "NO SIGNAL"
    if received_mono is not None and now_mono - received_mono > stale_after_s:
        return True, f"STALE {now_mono - received_mono:.1f} s"
    src_state = (result.get("source") or {}).get("state", "live")
    if src_state != "live":
        return True, f"SOURCE {str(src_state).upper()}"
    if (result.get("flags") or {}).get("stale"):
        return True, "STALE"
    return False, ""


def _text(img, text, org, scale, colour, thick):
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thick + 3, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, thick, cv2.LINE_AA)


def render_overlay(frame_bgr: np.ndarray | None, result: dict | None, now_mono: float,
                   received_mono: float | None = None, stale_after_s: float = 0.5,
                   out_size: tuple[int, int] = (1280, 720), exam: dict | None = None) -> np.ndarray:
    """A new out_size image: the scanner image on the left, the guidance panel on the right."""
    W, H = out_size
    canvas = np.zeros((H, W, 3), np.uint8)
    panel_w = int(PANEL_WIDTH * W)
    img_w = W - panel_w
    if frame_bgr is not None and frame_bgr.size:
        fh, fw = frame_bgr.shape[:2]
        k = min(img_w / fw, H / fh)
        nw, nh = max(1, int(fw * k)), max(1, int(fh * k))
        x, y = (img_w - nw) // 2, (H - nh) // 2
        canvas[y:y + nh, x:x + nw] = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    s = H / 720.0
    th = max(1, int(round(1.5 * s)))
    px = img_w + int(20 * s)
    cv2.rectangle(canvas, (img_w, 0), (W, H), (28, 24, 22), -1)
    stale, why = is_stale(result, now_mono, received_mono, stale_after_s)
    flags = (result or {}).get("flags") or {}
    plane = (result or {}).get("plane", "none")
    label = (result or {}).get("label")
    conf = float((result or {}).get("confidence") or 0.0)

    # State banner across the image.
    banner, banner_colour = "", None
    if stale:
        banner, banner_colour = why, RED
    elif flags.get("none") or plane == "none":
        banner, banner_colour = "NO IMAGE - probe lifted", AMBER
    elif flags.get("frozen"):
        banner, banner_colour = "FROZEN", AMBER
    elif flags.get("uncertain") or plane == "uncertain":
        banner, banner_colour = "UNCERTAIN", AMBER
    if banner:
        cv2.rectangle(canvas, (0, 0), (img_w, int(48 * s)), banner_colour, -1)
        _text(canvas, banner, (int(16 * s), int(34 * s)), 0.95 * s, (255, 255, 255), th)

    y = int(56 * s)
    _text(canvas, "PLANE", (px, y), 0.6 * s, GREY, 1)
    y += int(62 * s)
    shown = plane if plane in COARSE_PLANES else ("—" if plane == "none" else plane)
    colour = GREY if stale or plane not in COARSE_PLANES else PLANE_COLOURS[plane]
    size = 1.7 * s if len(shown) <= 8 else 1.3 * s
    _text(canvas, shown.upper(), (px, y), size, colour, max(2, int(3 * s)))
    if stale:   # struck through: the last label is history, not the current view
        (tw, _), _ = cv2.getTextSize(shown.upper(), FONT, size, max(2, int(3 * s)))
        cv2.line(canvas, (px - 4, y - int(20 * s)), (px + tw + 4, y - int(20 * s)), RED, max(2, int(3 * s)))
    y += int(38 * s)
    if label and plane in COARSE_PLANES:
        _text(canvas, label, (px, y), 0.75 * s, GREY if stale else (230, 230, 230), th)
    y += int(34 * s)
    bar_w = W - px - int(24 * s)
    cv2.rectangle(canvas, (px, y), (px + bar_w, y + int(18 * s)), (70, 70, 70), -1)
    if not stale and plane in COARSE_PLANES:
        cv2.rectangle(canvas, (px, y), (px + int(bar_w * min(conf, 1.0)), y + int(18 * s)), colour, -1)
    _text(canvas, f"{conf * 100:.0f}%" if plane in COARSE_PLANES else "", (px + bar_w - int(60 * s), y - int(6 * s)),
          0.55 * s, GREY, 1)
    y += int(56 * s)

    if exam and exam.get("views"):
        # The exam checklist replaces the raw top-3: a sonographer needs what is missing.
        draw_checklist(canvas, exam, px, y, W - px - int(16 * s), H - int(100 * s), s)
        return _footer(canvas, result, px, H, s)

    _text(canvas, "THIS FRAME (raw)", (px, y), 0.55 * s, GREY, 1)
    for name, p, pl in ((result or {}).get("topk") or [])[:3]:
        y += int(30 * s)
        c = GREY if stale else PLANE_COLOURS.get(pl, GREY)
        _text(canvas, f"{name[:18]:<18}", (px, y), 0.55 * s, c, 1)
        _text(canvas, f"{p * 100:5.1f}%", (px + bar_w - int(70 * s), y), 0.55 * s, c, 1)
    y += int(46 * s)

    anomaly = (result or {}).get("anomaly")
    if anomaly:
        state = anomaly.get("state", "?")
        c = {"normal": (120, 230, 120), "abnormal": RED, "uncertain": AMBER}.get(state, GREY)
        _text(canvas, "BRAIN ANOMALY (indicative)", (px, y), 0.55 * s, GREY, 1)
        y += int(32 * s)
        _text(canvas, f"{state.upper()}  p={anomaly.get('p_abnormal', 0):.2f}", (px, y), 0.7 * s,
              GREY if stale else c, th)
        y += int(40 * s)

    return _footer(canvas, result, px, H, s)


def _footer(canvas, result, px, H, s):
    if result:
        st = result.get("stages") or {}
        lat = (st.get("publish", 0) - st.get("capture", 0)) * 1e3 if st else 0.0
        foot = [f"{result.get('fps', 0):.0f} fps   capture->publish {lat:.0f} ms",
                f"skipped {result.get('skipped_total', 0)}   frame {result.get('frame', 0)}",
                f"model {(result.get('model') or {}).get('id', '?')}"]
        for i, line in enumerate(foot):
            _text(canvas, line, (px, H - int((20 + 26 * (len(foot) - 1 - i)) * s)), 0.5 * s, GREY, 1)
    return canvas


GREEN = (113, 191, 47)
_THUMBS: dict = {}


def _thumb(path: str, size: tuple[int, int]) -> np.ndarray | None:
    """A captured view's image, small, read once per file (the window/MP4 redraw at 30 fps)."""
    key = (path, size)
    if key not in _THUMBS:
        # A capture replaced by a better one is deleted: check first, so OpenCV does not print a warning.
        img = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if img is None:
            return None              # not there (yet, or any more): try again next frame
        _THUMBS[key] = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        if len(_THUMBS) > 256:
            _THUMBS.pop(next(iter(_THUMBS)))
    return _THUMBS[key]


def draw_checklist(canvas: np.ndarray, exam: dict, x: int, y: int, w: int, y_max: int, s: float) -> None:
    """The exam checklist: per view a thumbnail (or an empty red box) and its status."""
    from pathlib import Path

    views = exam.get("views") or []
    done = sum(v.get("status") in ("captured", "manual") for v in views)
    ended = exam.get("state") == "ended"
    _text(canvas, f"CHECKLIST {done}/{len(views)}" + ("  - ENDED" if ended else ""), (x, y), 0.55 * s, GREY, 1)
    y += int(10 * s)
    row = max(int(14 * s), min(int(46 * s), (y_max - y) // max(1, len(views))))
    tw, th = int(row * 4 / 3) - 4, row - 6
    root = Path(exam.get("dir") or ".")
    for v in views:
        ok = v.get("status") in ("captured", "manual")
        colour = GREEN if ok else RED
        cv2.rectangle(canvas, (x, y + 2), (x + 4, y + row - 4), colour, -1)
        best = v.get("best") or {}
        thumb = _thumb(str(root / best["image"]), (tw, th)) if best.get("image") else None
        if thumb is not None:
            canvas[y + 2:y + 2 + th, x + 8:x + 8 + tw] = thumb
        else:
            cv2.rectangle(canvas, (x + 8, y + 2), (x + 8 + tw, y + 2 + th), RED, 1)
        status = {"pending": "MISSING", "rejected": "REJECTED", "manual": "done by hand"}.get(
            v.get("status"), f"captured {best.get('score', 0):.2f}" if best else "captured")
        _text(canvas, str(v.get("title", v.get("id")))[:24], (x + tw + 16, y + int(row * 0.45)), 0.5 * s,
              (230, 230, 230), 1)
        _text(canvas, status, (x + tw + 16, y + int(row * 0.9)), 0.45 * s, colour, 1)
        y += row
        if y > y_max:
            break
