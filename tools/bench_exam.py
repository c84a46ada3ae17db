#!/usr/bin/env python3
"""Bench exam guidance on labelled videos: are the required views captured, rightly and quickly?

    python tools/bench_exam.py VIDEO --labels CSV [VIDEO --labels CSV ...] --exam PROTOCOL
                               [--model NAME|PATH] [--fast] --json REPORT.json

Each video goes through `sonoplane run --exam PROTOCOL --exam-dir TMP --record` (the code path a
user runs, tools/runlib.py as tools/bench_video.py) and the exam it leaves is scored against the
ground truth (tools/make_sweep.py format: frame,t_s,kind,plane,brain_plane,source):
- views present: views with at least one `stable` ground-truth frame of their plane (fine views:
  of their brain sub-plane, from `brain_plane`); views captured: those with a kept capture;
- capture precision: share of kept captures (and of best frames) whose ground-truth frame shows
  the view's plane (stable or frozen ground truth; a capture on a transition frame counts as
  wrong; captures on frozen ground-truth frames are also counted apart);
- time to capture: from the view's first stable ground-truth frame to its first capture (the
  moment it was made), in video seconds; fine brain views reported apart.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines.planes import FETAL_PLANES_DB_TO_COARSE  # noqa: E402
from runlib import run_pipeline  # noqa: E402

# FETAL_PLANES_DB Brain_plane -> the plane models' fine label (engines/data.py BRAIN_SUBPLANES).
BRAIN_SUBPLANES = {"Trans-thalamic": "Brain (Tt.)", "Trans-cerebellum": "Brain (Tc.)",
                   "Trans-ventricular": "Brain (Tv.)"}


def truth_matches(view: dict, row: dict | None, kinds=("stable", "frozen")) -> bool:
    """Does the ground-truth frame show the view? (A frozen frame still shows its plane.)"""
    if row is None or row["kind"] not in kinds:
        return False
    if FETAL_PLANES_DB_TO_COARSE.get(row["plane"], "") != view["plane"]:
        return False
    if view.get("labels"):
        return BRAIN_SUBPLANES.get(row.get("brain_plane", "").strip()) in view["labels"]
    return True


def score_exam(exam: dict, rows: list[dict], t_offset: float) -> dict:
    """exam.json + ground truth -> per-view and pooled figures. t_offset: video time of exam t_s 0."""
    gt = {int(r["frame"]): r for r in rows}
    views = {}
    for v in exam["views"]:
        present = [float(r["t_s"]) for r in rows if truth_matches(v, r, ("stable",))]
        caps = v.get("captures") or []
        right = [truth_matches(v, gt.get(c["frame"])) for c in caps]
        first_visible = min(present) if present else None
        first_capture = None if v.get("first_captured_s") is None else v["first_captured_s"] + t_offset
        views[v["id"]] = {
            "fine": bool(v.get("labels")), "present": bool(present), "captured": bool(caps),
            "status": v["status"], "captures": len(caps), "captures_right": int(sum(right)),
            "best_right": bool(right[0]) if right else None,
            "on_frozen_frames": sum((gt.get(c["frame"]) or {}).get("kind") == "frozen" for c in caps),
            "wrong_frames": [[c["frame"], (gt.get(c["frame"]) or {}).get("plane"),
                              (gt.get(c["frame"]) or {}).get("kind")] for c, ok in zip(caps, right) if not ok],
            "time_to_capture_s": (None if first_visible is None or first_capture is None
                                  else round(first_capture - first_visible, 3)),
        }
    return views


def pooled(views: list[dict]) -> dict:
    present = [v for v in views if v["present"]]
    caps = sum(v["captures"] for v in views)
    best = [v["best_right"] for v in views if v["best_right"] is not None]
    ttc = [v["time_to_capture_s"] for v in present if v["time_to_capture_s"] is not None]
    return {"views_present": len(present), "views_captured_of_present": sum(v["captured"] for v in present),
            "captures_not_present": sum(v["captures"] for v in views if not v["present"]),
            "captures": caps, "on_frozen_frames": sum(v["on_frozen_frames"] for v in views),
            "capture_precision": (sum(v["captures_right"] for v in views) / caps) if caps else None,
            "best_frame_precision": float(np.mean(best)) if best else None,
            "time_to_capture_median_s": float(np.median(ttc)) if ttc else None,
            "time_to_capture_max_s": float(np.max(ttc)) if ttc else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", metavar="VIDEO")
    ap.add_argument("--labels", action="append", required=True, metavar="CSV", help="one per VIDEO, in order")
    ap.add_argument("--exam", required=True, metavar="PROTOCOL", help="shipped name or .toml path")
    ap.add_argument("--model")
    ap.add_argument("--fast", action="store_true", help="every frame (default: native rate, as a scanner feeds it)")
    ap.add_argument("--json", required=True, metavar="REPORT.json")
    ap.add_argument("--exam-option", action="append", default=[], metavar="--exam-KNOB=V",
                    help="passed to sonoplane run, e.g. --exam-option=--exam-min-probability=0.7")
    ap.add_argument("--keep-exams", metavar="DIR", help="keep each video's exam folder under DIR/VIDEO_STEM")
    args = ap.parse_args(argv)
    if len(args.labels) != len(args.videos):
        ap.error("give one --labels CSV per VIDEO")
    per_video, all_views = {}, []
    for video, labels in zip(args.videos, args.labels):
        rows = list(csv.DictReader(open(labels)))
        with tempfile.TemporaryDirectory() as tmp:
            exam_dir = Path(args.keep_exams) / Path(video).stem if args.keep_exams else Path(tmp) / "exam"
            extra = ["--exam", args.exam, "--exam-dir", str(exam_dir), "--exam-control", "none"]
            extra += args.exam_option
            extra += (["--fast"] if args.fast else []) + (["--model", args.model] if args.model else [])
            results, info = run_pipeline(video, extra)
            exam = json.loads((exam_dir / "exam.json").read_text())
        first = results[0]
        t_first = first.get("t_media", first["t_capture_mono"])
        # Exam time 0 is the first result's media time; the video time of that frame is its pts.
        gt_t = {int(r["frame"]): float(r["t_s"]) for r in rows}
        t_offset = gt_t.get(first["frame"], 0.0) if "t_media" in first else 0.0
        views = score_exam(exam, rows, t_offset)
        coarse = [v for v in views.values() if not v["fine"]]
        fine = [v for v in views.values() if v["fine"]]
        per_video[str(video)] = {"views": views, "coarse": pooled(coarse), "fine_brain": pooled(fine) if fine else None,
                                 "all": pooled(list(views.values())), "classified": len(results),
                                 "skipped": results[-1]["skipped_total"] if results else 0,
                                 "cpu_cores": info["cores"], "wall_s": info["wall_s"], "t_first_media": t_first,
                                 "model": first["model"]}
        all_views += list(views.values())
    report = {"exam": args.exam, "mode": "fast" if args.fast else "native",
              "all": pooled(all_views), "coarse": pooled([v for v in all_views if not v["fine"]]),
              "fine_brain": pooled([v for v in all_views if v["fine"]]) if any(v["fine"] for v in all_views) else None,
              "videos": per_video}
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{'video':<28} {'views':<8} {'captured':>8} {'precision':>9} {'best prec':>9} {'ttc med':>8} {'ttc max':>8}")
    for name, rep in [*((Path(k).name, v) for k, v in per_video.items()), ("ALL", report)]:
        for part in ("coarse", "fine_brain"):
            p = rep.get(part)
            if not p or not p["views_present"] and not p["captures"]:
                continue
            f = lambda x, fmt: "-" if x is None else format(x, fmt)
            print(f"{name:<28} {part:<8} {p['views_captured_of_present']:>3} / {p['views_present']:<2} "
                  f"{f(p['capture_precision'], '.3f'):>9} {f(p['best_frame_precision'], '.3f'):>9} "
                  f"{f(p['time_to_capture_median_s'], '.2f'):>8} {f(p['time_to_capture_max_s'], '.2f'):>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
