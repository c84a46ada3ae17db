"""`DIR/report.html` from `DIR/exam.json`: one self-contained page (opens from disk, no server).

Each view's best frame and heatmap are embedded (downscaled JPEG, base64) and linked to the
full-resolution PNGs beside the report; the label timeline is inline SVG.
"""
from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import cv2

from engines.errors import UserError

THUMB_WIDTH = 420
PLANE_COLOURS = {"brain": "#3caaff", "abdomen": "#ffc850", "femur": "#78e678", "thorax": "#ff7878",
                 "spine": "#e682e6", "profile": "#5ae6c8", "cervix": "#ffb4b4", "other": "#c8c8c8",
                 "uncertain": "#777777", "none": "#333333"}
STATUS_TEXT = {"pending": "MISSING", "captured": "captured", "rejected": "rejected - missing",
               "manual": "marked done by hand"}


def _embed(root: Path, rel: str | None) -> str | None:
    if not rel or not (root / rel).is_file():
        return None
    img = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
    if img is None:
        return None
    if img.shape[1] > THUMB_WIDTH:
        k = THUMB_WIDTH / img.shape[1]
        img = cv2.resize(img, (THUMB_WIDTH, max(1, int(img.shape[0] * k))), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode() if ok else None


def timeline_svg(exam: dict, width: int = 900) -> str:
    """Shown plane over time, one lane per plane, with a marker at each kept capture."""
    timeline = exam.get("timeline") or []
    duration = max(float(exam.get("duration_s") or 0.0), timeline[-1][0] if timeline else 0.0, 1e-3)
    lanes = [p for p in PLANE_COLOURS if any(seg[1] == p for seg in timeline)] or ["none"]
    lane_h, left, top = 18, 80, 8
    height = top + lane_h * len(lanes) + 30
    sx = lambda t: left + (width - left - 10) * min(max(t / duration, 0.0), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="label timeline">']
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        parts.append(f'<text x="4" y="{y + 13}" font-size="11" fill="#ccc">{html.escape(lane)}</text>'
                     f'<line x1="{left}" x2="{width - 10}" y1="{y + lane_h / 2}" y2="{y + lane_h / 2}" stroke="#333"/>')
    for n, (t, plane, label) in enumerate(timeline):
        t_end = timeline[n + 1][0] if n + 1 < len(timeline) else duration
        if plane not in lanes:
            continue
        y = top + lanes.index(plane) * lane_h
        parts.append(f'<rect x="{sx(t):.1f}" y="{y + 3}" width="{max(sx(t_end) - sx(t), 0.8):.1f}" height="{lane_h - 6}" '
                     f'fill="{PLANE_COLOURS[plane]}"><title>{t:.2f}-{t_end:.2f} s {html.escape(str(label or plane))}</title></rect>')
    for v in exam.get("views", []):
        for c in v.get("captures", []):
            if v["plane"] in lanes:
                y = top + lanes.index(v["plane"]) * lane_h + lane_h / 2
                x = sx(c["t_s"])
                parts.append(f'<path d="M{x:.1f} {y - 7} l5 7 l-5 7 l-5 -7z" fill="#fff" stroke="#000">'
                             f'<title>{html.escape(v["id"])} capture, frame {c["frame"]}, {c["t_s"]:.2f} s</title></path>')
    axis_y = top + lane_h * len(lanes) + 14
    for k in range(6):
        t = duration * k / 5
        parts.append(f'<text x="{sx(t) - 10:.1f}" y="{axis_y}" font-size="10" fill="#aaa">{t:.1f}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(root: Path, exam: dict) -> str:
    e = html.escape
    views = exam.get("views", [])
    done = sum(v["status"] in ("captured", "manual") for v in views)
    model = exam.get("model") or {}
    started = exam.get("started")
    rows = []
    for v in views:
        best = v.get("best")
        img, heat = (_embed(root, best.get("image")), _embed(root, best.get("heatmap"))) if best else (None, None)
        figs = "".join(
            f'<figure><a href="{e(rel)}"><img src="{src}" alt="{e(alt)}"></a><figcaption>{e(alt)}</figcaption></figure>'
            for src, rel, alt in ((img, best and best.get("image"), "best frame"),
                                  (heat, best and best.get("heatmap"), "class-activation heatmap")) if src)
        facts = "<p class=muted>no frame kept</p>"
        if best:
            parts = best.get("score_parts") or {}
            facts = (f"<p>frame {best['frame']} at {best['t_s']:.2f} s &middot; score {best['score']:.3f} "
                     f"(probability {parts.get('probability', 0):.3f}, sharpness {parts.get('sharpness', 0):.3f}, "
                     f"steadiness {parts.get('steadiness', 0):.3f}) &middot; confidence {best['confidence']:.2f}"
                     f"{' &middot; label ' + e(best['label']) if best.get('label') else ''}"
                     f"{' &middot; manual' if best.get('manual') else ''}</p>")
        first = v.get("first_captured_s")
        rows.append(
            f'<section class="view {e(v["status"])}" id="view-{e(v["id"])}"><h2>{e(v["title"])} '
            f'<span class="status">{e(STATUS_TEXT.get(v["status"], v["status"]))}</span></h2>'
            f'<p class=muted>view <code>{e(v["id"])}</code> &middot; plane {e(v["plane"])}'
            f'{" &middot; labels " + e(", ".join(v["labels"])) if v.get("labels") else ""} &middot; '
            f'first seen {"-" if v.get("first_seen_s") is None else format(v["first_seen_s"], ".2f") + " s"} &middot; '
            f'first captured {"-" if first is None else format(first, ".2f") + " s"} &middot; '
            f'{len(v.get("captures", []))} kept</p>{facts}<div class=figs>{figs}</div></section>')
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sonoplane exam report - {e(exam['protocol']['name'])}</title>
<style>
body {{ background:#111417; color:#e8e8e8; font:15px system-ui,sans-serif; margin:24px; }}
h1 {{ margin:0 0 4px; }} .muted {{ color:#9aa; font-size:13px; }}
.summary {{ font-size:18px; margin:12px 0; }}
.view {{ border-left:6px solid #555; padding:6px 14px; margin:14px 0; background:#1a1e22; }}
.view.captured, .view.manual {{ border-color:#2fbf71; }} .view.pending, .view.rejected {{ border-color:#e04848; }}
.status {{ font-size:14px; padding:2px 8px; border-radius:4px; background:#333; vertical-align:middle; }}
.view.pending .status, .view.rejected .status {{ background:#e04848; color:#fff; }}
.figs {{ display:flex; gap:12px; flex-wrap:wrap; }} figure {{ margin:0; }} img {{ max-width:{THUMB_WIDTH}px; display:block; }}
figcaption {{ font-size:12px; color:#9aa; }} code {{ color:#cde; }}
</style></head><body>
<h1>Exam report: {e(exam['protocol'].get('title', exam['protocol']['name']))}</h1>
<p class=muted>protocol <code>{e(exam['protocol']['name'])}</code> &middot; started {e(when)} &middot;
source {e(str(exam.get('source')))} &middot; model {e(str(model.get('id')))} (sha256 {e(str(model.get('sha256')))}, {e(str(model.get('backend')))})</p>
<p class="summary" id="summary">{done} of {len(views)} views done &middot; exam duration {float(exam.get('duration_s') or 0):.1f} s
{'' if exam.get('state') == 'ended' else ' &middot; <b>exam still running</b>'}</p>
<h2>Label timeline</h2>
{timeline_svg(exam)}
<p class=muted>Shown (smoothed) plane over the exam; diamonds mark kept captures.</p>
{''.join(rows)}
<p class=muted>Images: the cropped ultrasound region only, as published by the pipeline. Heatmaps: the
model's own class-activation map for the shown label. Generated by sonoplane report.</p>
</body></html>
"""


def write_report(root: str | Path, exam: dict | None = None) -> Path:
    """DIR/report.html from DIR/exam.json (or from the given exam state, as the exam writer does)."""
    root = Path(root)
    path = root / "exam.json"
    if exam is None and not path.is_file():
        raise UserError(f"no exam.json in {root} (run `sonoplane run --exam NAME --exam-dir {root}` first)")
    try:
        exam = exam if exam is not None else json.loads(path.read_text(encoding="utf-8"))
        if exam.get("v") != 1 or not isinstance(exam.get("views"), list):
            raise ValueError("not a version-1 exam.json")
        page = render_report(root, exam)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: cannot read the exam ({exc})") from None
    out = root / "report.html"
    tmp = root / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
