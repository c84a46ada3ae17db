#!/usr/bin/env python3
"""The open-set trade-off: share of non-standard views shown as a fetal plane vs four-plane accuracy.

    # validation stills (FETAL_PLANES_DB, the committed patient split), through the runtime path
    python tools/open_set_curve.py --stills [--model planes_lite0]
    # the same with logit-based scores instead of the distance (threshold fitted on training patients)
    python tools/open_set_curve.py --stills --score energy max-softmax
    # sweeps: replay recorded runs (bench_video.py --save-results) over thresholds
    python tools/open_set_curve.py --results R1.jsonl --labels S1.csv [--results R2.jsonl --labels S2.csv]

The rule is the model's (metadata `open_set`: distance > threshold, or, for far-or-unsure fits, distance >
near while the top plane probability < confident); the curve scales both distances by one factor.
Non-standard = FETAL_PLANES_DB `Other` and `Maternal cervix`; "shown as a fetal plane" = brain, abdomen,
femur or thorax (showing `other`, `cervix` or `uncertain` is fine). Thresholds are multiples of the
model's own (metadata `open_set.threshold`, fitted on training patients by `python -m engines open-set`);
"off" is no rejection. --score energy / max-softmax (engines.open_set.logit_score) replace the distance on the
stills: each score's threshold rejects the same share of the TRAINING patients' fetal-plane images as the model's
distance rule does (metadata `train_fetal_rejected`), and the curve runs over training reject rates. Stills: the per-image arg-max plane, rejected images count as uncertain. Sweeps:
streamer.smoothing (LabelSmoother + OpenSetGate, the runtime's classes) replayed on the video clock over
the recorded top-3 probabilities and open-set distances (tools/tune_smoothing.py's replay), scored with
tools/bench_video.py's scorer. Record the sweeps WITH open-set on (the distance is then in every result).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_video import score  # noqa: E402
from tune_smoothing import probs_from_topk  # noqa: E402

FETAL = ("brain", "abdomen", "femur", "thorax")
FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, None)   # None: open-set off


def runtime_outputs(clf, samples) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), open-set distances (N,)) of FETAL_PLANES_DB samples through the runtime path."""
    from engines import data as D
    logits, dist = [], []
    for s in samples:
        out = clf.backend.infer(clf.preprocess(D.runtime_roi(D.read_frame(s))))
        logits.append(out.logits[0])
        dist.append(np.nan if out.open_set is None else float(out.open_set[0]))
    return np.asarray(logits, np.float64), np.asarray(dist, np.float64)


REJECT_RATES = (0.0025, 0.005, None, 0.02, 0.05, 0.1, 0.2)   # None: the distance rule's own training rate


def score_curve(kind: str, info, train_logits: np.ndarray, truth: np.ndarray, pred: np.ndarray, val_logits: np.ndarray,
                names: list[str]) -> list[dict]:
    """Validation stills with a logit score (energy / max-softmax) as the reject rule: thresholds set on the
    TRAINING patients' fetal-plane images (in-sample: the score has no fitted part) at training reject rates,
    the shipped one being the distance rule's own (metadata train_fetal_rejected)."""
    from engines.open_set import logit_score, threshold_at_reject_rate
    shipped_rate = float((info.open_set or {}).get("train_fetal_rejected") or 0.01)
    train_scores = logit_score(kind, train_logits, info.labels, info.coarse_map, info.temperature)
    scores = logit_score(kind, val_logits, info.labels, info.coarse_map, info.temperature)
    fetal, nonstd = np.isin(truth, FETAL), ~np.isin(truth, FETAL)
    print(f"{info.model_id}: score {kind}, threshold at a training reject rate ({len(train_scores)} training "
          f"fetal-plane images; the distance rule's rate {shipped_rate:.4f} marked *)")
    print(f"{'train rate':>10} {'threshold':>10} {'four-plane acc':>15} {'non-std shown fetal':>20} {'fetal rejected':>15}")
    rows = []
    for rate in REJECT_RATES + ("off",):
        r = shipped_rate if rate is None else rate
        thr = None if rate == "off" else threshold_at_reject_rate(train_scores, r)
        rej = np.zeros(len(scores), bool) if thr is None else scores > thr
        rej &= np.isin(pred, FETAL)
        shown = np.where(rej, "uncertain", pred)
        acc = float((shown[fetal] == truth[fetal]).mean())
        k = int(np.isin(shown[nonstd], FETAL).sum())
        rows.append({"score": kind, "train_reject_rate": None if thr is None else r, "threshold": thr,
                     "shipped_rate": rate is None, "four_plane_acc": acc, "nonstandard_shown_fetal": k,
                     "nonstandard": int(nonstd.sum()), "fetal_rejected": float(rej[fetal].mean()),
                     "nonstandard_shown_fetal_images": [names[i] for i in np.flatnonzero(nonstd & np.isin(shown, FETAL))]})
        name = "off" if thr is None else f"{r:.4f}" + (" *" if rate is None else "")
        print(f"{name:>10} {'' if thr is None else f'{thr:.4f}':>10} {acc:>15.3f} {k:>14d} / {nonstd.sum():<3d} "
              f"{rej[fetal].mean():>15.3f}")
    return rows


def stills(model: str, data: str, threads: int, gate_model: str | None = None,
           scores: tuple[str, ...] = ("distance",)) -> list[dict]:
    from engines import data as D
    from engines.open_set import rejects
    from streamer.infer import PlaneClassifier, Prediction, softmax_with_temperature
    clf = PlaneClassifier(model, threads=threads)
    cfg = clf.info.open_set
    if cfg is None and "distance" in scores:
        raise SystemExit(f"{model}: no open-set fit in this model (python -m engines open-set --model ...)")
    samples = D.load_index(data)
    train, val = D.split_samples(samples, D.read_val_patients())
    gate = PlaneClassifier(gate_model, threads=threads) if gate_model else None
    truth, pred, dist, top, background, logits = [], [], [], [], [], []
    for s in val:
        roi = D.runtime_roi(D.read_frame(s))
        out = clf.backend.infer(clf.preprocess(roi))
        p = Prediction(softmax_with_temperature(out.logits[0], clf.info.temperature), clf.info.labels,
                       clf.info.coarse_map, open_set=None if out.open_set is None else float(out.open_set[0]))
        truth.append(s.coarse)
        pred.append(p.plane)
        dist.append(p.open_set)
        top.append(max(p.plane_probs().values()))
        logits.append(out.logits[0])
        if gate is not None:     # SonoNet16's Background class ("other") as a second opinion
            background.append(gate.predict(roi).plane == "other")
    truth, pred, dist, top = np.array(truth), np.array(pred), np.array(dist), np.array(top)
    rows = []
    if set(scores) - {"distance"}:      # the training patients' fetal-plane images set the logit scores' thresholds
        train_logits, _ = runtime_outputs(clf, [s for s in train if s.coarse in FETAL])
    for kind in scores:
        if kind != "distance":
            rows += score_curve(kind, clf.info, train_logits, truth, pred, np.asarray(logits, np.float64),
                                [Path(s.path).stem for s in val])
    if "distance" not in scores:
        return rows
    near, confident = cfg.get("near", cfg["threshold"]), cfg.get("confident", 1.0)
    fetal, nonstd = np.isin(truth, FETAL), ~np.isin(truth, FETAL)
    print(f"{model}: validation stills {len(val)} ({fetal.sum()} of the four fetal planes, {nonstd.sum()} non-standard: "
          f"{(truth == 'other').sum()} Other + {(truth == 'cervix').sum()} cervix); shipped rule: {rule_text(cfg)}")
    print(f"{'threshold':>12} {'four-plane acc':>15} {'non-std shown fetal':>20} {'fetal rejected':>15}")
    per_class = {}
    for f in FACTORS:
        thr = None if f is None else f * cfg["threshold"]
        rej = np.zeros(len(dist), bool) if thr is None else rejects(dist, top, thr, f * near, confident)
        rej &= np.isin(pred, FETAL)      # as the runtime: the model's own other / cervix answer stands
        shown = np.where(rej, "uncertain", pred)
        acc = float((shown[fetal] == truth[fetal]).mean())
        k = int(np.isin(shown[nonstd], FETAL).sum())
        if f in (None, 1.0):    # per class: right = the true plane (other / cervix: anything but a fetal plane)
            per_class["off" if f is None else "shipped"] = {
                c: {"n": int((truth == c).sum()),
                    "right": int(((shown == truth) if c in FETAL else ~np.isin(shown, FETAL))[truth == c].sum())}
                for c in ("brain", "abdomen", "femur", "thorax", "cervix", "other")}
        rows.append({"factor": f, "threshold": thr, "four_plane_acc": acc, "nonstandard_shown_fetal": k,
                     "nonstandard": int(nonstd.sum()), "fetal_rejected": float(rej[fetal].mean())})
        name = "off" if thr is None else f"{thr:.1f}" + (" *" if f == 1.0 else "")
        print(f"{name:>12} {acc:>15.3f} {k:>14d} / {nonstd.sum():<3d} {rej[fetal].mean():>15.3f}")
    print("per class, right / n (Other, cervix: right = not shown as a fetal plane):")
    for c, v in per_class["off"].items():
        print(f"  {c:<8} off {v['right']:>3d} / {v['n']:<3d}  shipped threshold {per_class['shipped'][c]['right']:>3d} / {v['n']}")
    rows.append({"per_class": per_class})
    if gate is not None:
        bg = np.array(background)
        for name, rej in ((f"{gate_model} Background gate", bg),
                          (f"open-set * or {gate_model} Background", bg | (dist > cfg["threshold"]))):
            rej = rej & np.isin(pred, FETAL)
            shown = np.where(rej, "uncertain", pred)
            acc = float((shown[fetal] == truth[fetal]).mean())
            k = int(np.isin(shown[nonstd], FETAL).sum())
            rows.append({"gate": name, "four_plane_acc": acc, "nonstandard_shown_fetal": k,
                         "nonstandard": int(nonstd.sum()), "fetal_rejected": float(rej[fetal].mean())})
            print(f"{name}: four-plane acc {acc:.3f}, non-std shown fetal {k} / {nonstd.sum()}, "
                  f"fetal rejected {rej[fetal].mean():.3f}")
    return rows


def rule_text(cfg: dict) -> str:
    if cfg.get("near") is None:
        return f"distance > {cfg['threshold']:.1f}"
    return (f"distance > {cfg['threshold']:.1f}, or > {cfg['near']:.1f} with top plane probability < "
            f"{cfg['confident']}")


def replay(results: list[dict], labels, coarse_map, threshold: float | None, release: float,
           video_times: dict[int, float], near: float | None = None, confident: float | None = None) -> list[dict]:
    """The runtime's smoother and gate over recorded results. The top plane probability comes from the
    recorded top-3 (the rest of the probability is spread over classes outside it)."""
    from streamer.smoothing import LabelSmoother, OpenSetGate
    smoother = LabelSmoother(labels, coarse_map)
    gate = OpenSetGate(threshold, release, near, confident) if threshold else None
    out = []
    for r in results:
        probs = probs_from_topk(r["topk"], labels)
        if gate is not None and probs is None:
            gate.reset()
        reject = bool(gate and probs is not None and
                      gate.update(r.get("open_set"), smoother.top_plane_probability(probs)))
        state = smoother.update(probs, video_times[r["frame"]], blank=probs is None, frozen=r["flags"]["frozen"],
                                reject=reject)
        out.append({**r, "plane": state.plane, "confidence": state.confidence})
    return out


def sweeps(paths: list[str], label_csvs: list[str], model: str | None, release: float | None) -> list[dict]:
    from engines.metadata import read_model_info
    from engines.zoo import resolve
    recs = []
    for path, csv_path in zip(paths, label_csvs):
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        res = [r for r in rows if r.get("kind", "result") == "result"]
        if not res:
            raise SystemExit(f"{path}: no result messages")
        if all(r.get("open_set") is None for r in res):
            raise SystemExit(f"{path}: no open-set distances recorded (record with open-set on)")
        recs.append((res, list(csv.DictReader(open(csv_path)))))
    info = read_model_info(resolve(model or recs[0][0][0]["model"]["id"]))
    cfg = info.open_set or {}
    base, release = cfg.get("threshold"), release if release is not None else cfg.get("release", 0.6)
    if base is None:
        raise SystemExit(f"{info.model_id}: no open-set fit in this model")
    near, confident = cfg.get("near"), cfg.get("confident")
    print(f"{info.model_id}: {len(recs)} sweep(s), replayed on the video clock; shipped rule {rule_text(cfg)}, "
          f"release {release}; thresholds below scale both distances")
    print(f"{'threshold':>12} {'4-plane stable acc':>19} {'non-std shown fetal':>20} {'stable acc':>11} "
          f"{'flicker/min':>12} {'tts p90 s':>10}")
    out = []
    for f in FACTORS:
        thr = None if f is None else f * base
        reps = [score(replay(res, info.labels, info.coarse_map, thr, release,
                             {int(g["frame"]): float(g["t_s"]) for g in rows},
                             None if near is None or f is None else f * near, confident), rows) for res, rows in recs]
        n_std = sum(r["nonstandard_frames"] for r in reps)
        w4 = [sum(1 for g in rows if g["kind"] == "stable" and g["plane"].startswith("Fetal")) for _, rows in recs]
        ws = [sum(1 for g in rows if g["kind"] == "stable" and g["plane"]) for _, rows in recs]
        row = {"factor": f, "threshold": thr, "release": release,
               "four_plane_stable_accuracy": float(np.average([r["four_plane_stable_accuracy"] for r in reps], weights=w4)),
               "nonstandard_shown_fetal": float(sum((r["nonstandard_shown_fetal"] or 0) * r["nonstandard_frames"]
                                                    for r in reps) / max(1, n_std)),
               "nonstandard_frames": n_std,
               "stable_accuracy": float(np.average([r["stable_accuracy"] for r in reps], weights=ws)),
               "flicker_per_min": float(np.average([r["flicker_per_min"] for r in reps], weights=ws)),
               "time_to_stable_p90_s": float(np.average([r["time_to_stable_p90_s"] or 0 for r in reps], weights=ws))}
        out.append(row)
        name = "off" if thr is None else f"{thr:.1f}" + (" *" if f == 1.0 else "")
        print(f"{name:>12} {row['four_plane_stable_accuracy']:>19.3f} {row['nonstandard_shown_fetal']:>20.3f} "
              f"{row['stable_accuracy']:>11.3f} {row['flicker_per_min']:>12.2f} {row['time_to_stable_p90_s']:>10.2f}")
    return out


def distance_noise(paths: list[str], label_csvs: list[str]) -> dict:
    """Frame-to-frame noise of the open-set distance within each fetal still's stable stretch: quantiles of
    d / median(d of that still). The hysteresis band (release) should cover the low quantiles."""
    ratios, stills = [], 0
    for path, csv_path in zip(paths, label_csvs):
        res = {r["frame"]: r for r in map(json.loads, filter(str.strip, Path(path).read_text().splitlines()))
               if r.get("kind", "result") == "result" and r.get("open_set") is not None}
        per_still: dict[tuple, list[float]] = {}
        for g in csv.DictReader(open(csv_path)):
            f = int(g["frame"])
            if g["kind"] == "stable" and g["plane"].startswith("Fetal") and f in res:
                per_still.setdefault((g["source"], g["plane"]), []).append(res[f]["open_set"])
        for d in per_still.values():
            d = np.asarray(d, float)
            ratios.extend(d / max(np.median(d), 1e-9))
        stills += len(per_still)
    if not ratios:
        raise SystemExit("no fetal stable frames with an open-set distance in these recordings")
    qs = (0.01, 0.02, 0.05, 0.1, 0.5, 0.9, 0.95)
    out = {"stills": stills, "frames": len(ratios),
           "quantiles": {str(q): round(float(np.quantile(ratios, q)), 3) for q in qs}}
    print(f"distance / median distance of its still, {stills} fetal stills, {len(ratios)} frames: "
          + ", ".join(f"q{q} {v}" for q, v in out["quantiles"].items()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stills", action="store_true", help="validation stills of FETAL_PLANES_DB (needs ../shared)")
    ap.add_argument("--results", action="append", default=[], metavar="RESULTS.jsonl")
    ap.add_argument("--labels", action="append", default=[], metavar="CSV", help="one per --results, in order")
    ap.add_argument("--model", default=None, help="default: planes_lite0 (stills) / the recorded model (sweeps)")
    ap.add_argument("--release", type=float, default=None, help="sweeps: hysteresis release (default: the model's)")
    ap.add_argument("--data", default=None, help="FETAL_PLANES_DB folder (default ../shared/data/fetal_planes)")
    ap.add_argument("--gate-model", default=None,
                    help="stills: also score a second model's Background/other answer as a gate (e.g. sononet16)")
    ap.add_argument("--score", nargs="+", choices=("distance", "energy", "max-softmax"), default=["distance"],
                    help="stills: the reject score(s): the model's open-set distance (default), energy of the logits "
                         "(T = 1) or max-softmax (1 - top plane probability); logit scores get a threshold fitted on "
                         "training patients at the distance rule's training reject rate")
    ap.add_argument("--noise", action="store_true",
                    help="with --results: frame-to-frame noise of the distance within each fetal still (for the release)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not args.stills and not args.results:
        ap.error("give --stills and/or --results with --labels")
    if len(args.results) != len(args.labels):
        ap.error("give one --labels CSV per --results file")
    report = {}
    if args.stills:
        from engines import data as D
        report["stills"] = stills(args.model or "planes_lite0", args.data or str(D.DEFAULT_DATA), args.threads,
                                  args.gate_model, tuple(dict.fromkeys(args.score)))
    if args.results and args.noise:
        report["noise"] = distance_noise(args.results, args.labels)
    elif args.results:
        report["sweeps"] = sweeps(args.results, args.labels, args.model, args.release)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
