#!/usr/bin/env python3
"""Tune the temporal smoothing on labelled recordings, without re-running the model.

    python tools/bench_video.py SWEEP.mp4 --labels SWEEP.csv --fast --json r.json --save-results runs/bench
    python tools/tune_smoothing.py runs/bench/SWEEP.jsonl --labels SWEEP.csv [RESULTS --labels CSV ...] \
        [--json tune.json]

Replays streamer.smoothing.LabelSmoother (the runtime's own class) over a grid of tau / enter / keep /
min-dwell on the per-frame scores a real `sonoplane run` recorded, and scores every setting with
tools/bench_video.py's scorer (stable accuracy, macro-F1, flicker, time-to-stable). The replay uses the
recorded top-3 fine probabilities on the video's clock (so a `--fast` recording replays as native rate
with every frame classified) (the rest of the mass spread evenly over the other classes): with the
shipped models the top 3 hold almost all the mass, but a replayed figure can differ slightly from a live run,
so confirm the chosen setting with bench_video.py. Blank frames (no inference) and the frozen flag are
replayed as recorded.

Ranking: stable accuracy (smoothed) - 0.01 x flicker per minute - 0.05 x time-to-stable p90 (s): right, calm
and quick, in that order. The current default (streamer.smoothing.SmoothingConfig()) is printed beside it.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_video import score  # noqa: E402
from engines.metadata import read_model_info  # noqa: E402
from engines.zoo import resolve  # noqa: E402
from streamer.smoothing import LabelSmoother, SmoothingConfig  # noqa: E402

GRID = {"tau_s": (0.1, 0.15, 0.25, 0.4), "enter": (0.5, 0.6, 0.7), "keep_gap": (0.1, 0.2),
        "min_dwell_s": (0.1, 0.2, 0.3, 0.5)}


def probs_from_topk(topk: list, labels: tuple[str, ...]) -> np.ndarray | None:
    """Full probability vector from a recorded top-k (rest of the mass spread over the other classes)."""
    if not topk:
        return None
    p = np.zeros(len(labels), np.float32)
    for label, prob, _plane in topk:
        p[labels.index(label)] = prob
    rest = max(0.0, 1.0 - float(p.sum()))
    others = p == 0
    if others.any():
        p[others] = rest / others.sum()
    return p


def replay(results: list[dict], labels: tuple[str, ...], coarse_map: dict, cfg: SmoothingConfig,
           video_times: dict[int, float] | None = None) -> list[dict]:
    """The results with `plane` / `confidence` / frozen flag as LabelSmoother(cfg) would have shown them.

    video_times (frame -> seconds in the video): replay on the video's clock, as a scanner feeds frames at
    native rate, even for a `--fast` recording (whose capture clock runs at processing speed)."""
    smoother = LabelSmoother(labels, coarse_map, cfg)
    out = []
    for r in results:
        probs = probs_from_topk(r["topk"], labels)
        t = video_times[r["frame"]] if video_times is not None else r["t_capture_mono"]
        state = smoother.update(probs, t, blank=probs is None, frozen=r["flags"]["frozen"])
        out.append({**r, "plane": state.plane, "confidence": state.confidence,
                    "flags": {**r["flags"], "frozen": state.frozen}})
    return out


def objective(rep: dict) -> float:
    return (rep["stable_accuracy"] or 0.0) - 0.01 * rep["flicker_per_min"] - 0.05 * (rep["time_to_stable_p90_s"] or 0.0)


def evaluate(recordings: list[tuple[list[dict], list[dict]]], labels, coarse_map, cfg: SmoothingConfig) -> dict:
    """Scores pooled over recordings (each scored alone, then averaged weighted by stable frames)."""
    reps = [score(replay(res, labels, coarse_map, cfg, {int(r["frame"]): float(r["t_s"]) for r in rows}), rows)
            for res, rows in recordings]
    weights = np.array([sum(1 for r in rows if r["kind"] == "stable") for _, rows in recordings], float)
    keys = ("stable_accuracy", "stable_accuracy_raw", "macro_f1", "flicker_per_min", "time_to_stable_median_s",
            "time_to_stable_p90_s", "never_settled")
    out = {k: float(np.average([rep[k] or 0.0 for rep in reps], weights=weights)) for k in keys}
    out["never_settled"] = int(sum(rep["never_settled"] for rep in reps))
    out["objective"] = objective(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", metavar="RESULTS.jsonl", help="from bench_video.py --save-results")
    ap.add_argument("--labels", action="append", required=True, metavar="CSV", help="one per RESULTS, in order")
    ap.add_argument("--model", default=None, help="model the results came from (default: the id they record)")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if len(args.labels) != len(args.results):
        ap.error("give one --labels CSV per RESULTS file")
    recordings = []
    for path, labels_csv in zip(args.results, args.labels):
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        results = [r for r in rows if r.get("kind", "result") == "result"]
        if not results:
            raise SystemExit(f"{path}: no result messages")
        recordings.append((results, list(csv.DictReader(open(labels_csv)))))
    model = args.model or recordings[0][0][0]["model"]["id"]
    info = read_model_info(resolve(model))
    labels, coarse_map = info.labels, info.coarse_map

    default = evaluate(recordings, labels, coarse_map, SmoothingConfig())
    rows = []
    for tau, enter, gap, dwell in itertools.product(*GRID.values()):
        cfg = SmoothingConfig(tau_s=tau, enter=enter, keep=round(enter - gap, 3), min_dwell_s=dwell)
        rows.append({"config": {k: v for k, v in asdict(cfg).items() if k != "gap_reset_s"},
                     **evaluate(recordings, labels, coarse_map, cfg)})
    rows.sort(key=lambda r: -r["objective"])
    head = f"{'tau':>5} {'enter':>5} {'keep':>5} {'dwell':>5} | {'acc':>6} {'raw':>6} {'F1':>6} {'flick/min':>9} " \
           f"{'tts med':>7} {'tts p90':>7} {'never':>5} {'score':>6}"
    print(f"model {model}; {len(recordings)} recording(s); {len(rows)} settings; replayed from recorded top-3")
    print(head)

    def line(c: dict, r: dict, tag: str = "") -> str:
        return (f"{c['tau_s']:>5.2f} {c['enter']:>5.2f} {c['keep']:>5.2f} {c['min_dwell_s']:>5.2f} | "
                f"{r['stable_accuracy']:>6.3f} {r['stable_accuracy_raw']:>6.3f} {r['macro_f1']:>6.3f} "
                f"{r['flicker_per_min']:>9.2f} {r['time_to_stable_median_s']:>7.2f} {r['time_to_stable_p90_s']:>7.2f} "
                f"{r['never_settled']:>5d} {r['objective']:>6.3f}{tag}")
    for r in rows[:args.top]:
        print(line(r["config"], r))
    d = SmoothingConfig()
    print(line({"tau_s": d.tau_s, "enter": d.enter, "keep": d.keep, "min_dwell_s": d.min_dwell_s}, default,
               "  <- current default"))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": model, "default": default, "ranked": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
