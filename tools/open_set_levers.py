#!/usr/bin/env python3
"""Open-set levers side by side on the validation stills and sweeps, from raw model outputs
(tools/frame_outputs.py), with every threshold fitted on TRAINING patients (issue 9, session 6).

    python tools/open_set_levers.py --stills stills.npz \\
        [--sweep S0.npz --labels S0.csv ...] [--bootstrap 5000] [--json OUT.json]

Configurations (all rules fixed in advance; docs/smoothing.md "Remaining levers, session 6"):
  distance       planes_lite0, the shipped Mahalanobis rule (distance > metadata threshold, release 0.6)
  energy         planes_lite0, reject when -logsumexp(logits) is high
  max-softmax    planes_lite0, reject when 1 - the top plane probability is high
                 (both: threshold at the distance rule's training reject rate of the training patients'
                 fetal-plane images; hysteresis release translated by quantile: engines.open_set)
  sono           planes_lite0_sono with its own distance rule (the shipped named pair's planes)
  ensemble-or    mean of planes_lite0 and planes_lite0_sono probabilities; reject if either distance is above
                 its own threshold (hysteresis on max(d_i / T_i), release 0.6)
  ensemble-and   the same, reject only if both are (min(d_i / T_i))
  heart[+bg]     the distance rule, and a frame whose arg-max plane is thorax is rejected when SonoNet16's
                 outflow-view mass P(3VV) + P(LVOT) + P(RVOT) (+ P(Background)) exceeds t, t the largest value
                 keeping >= 0.99 of the training thorax images; on sweeps SonoNet16's verdict is the one of the
                 frame's 0.2-s cell of media time (run on a cadence, tools/frame_outputs.py --cadence-model)
  sono+heart     sono, plus the heart check (same t)

Stills: the per-image arg-max plane; a rejected image (arg-max a fetal plane) counts as uncertain. Sweeps: the
runtime's LabelSmoother + OpenSetGate (streamer.smoothing) replayed on the media clock over the full
probabilities, scored by tools/bench_video.py's scorer, pooled frame-weighted. Bootstrap: distinct images
resampled with replacement (fetal and non-standard separately; on sweeps all frames of a drawn image), 95 %
percentile intervals of each figure and, images drawn together, of each configuration's difference from the
shipped distance rule (`minus_distance_95`).
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

from engines.open_set import (NormalisedScore, logit_score, release_at_same_quantile,  # noqa: E402
                              threshold_at_reject_rate)
from calibration.temperature import softmax as calibration_softmax  # noqa: E402
from engines.planes import plane_matrix  # noqa: E402

FETAL = ("brain", "abdomen", "femur", "thorax")
BASE, SONO, GATE = "planes_lite0", "planes_lite0_sono", "sononet16"
OUTFLOW = ("3VV", "LVOT", "RVOT")
CONFIGS = ("distance", "energy", "max-softmax", "sono", "ensemble-or", "ensemble-and", "heart", "heart+bg",
           "sono+heart")
SUBPLANES = ("Brain (Tt.)", "Brain (Tc.)", "Brain (Tv.)")


def load(path: str) -> tuple[dict, dict]:
    z = np.load(path, allow_pickle=False)
    return {k: z[k] for k in z.files if k != "meta"}, json.loads(str(z["meta"]))


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):         # rows of NaN: frames a model did not run on stay NaN
        return calibration_softmax(logits, temperature)


class Outputs:
    """The models' raw outputs of one file (stills or one sweep) and what the configurations need from them."""

    def __init__(self, arrs: dict, meta: dict):
        self.a, self.meta = arrs, meta
        self.models = meta["models"]

    def has(self, model: str) -> bool:
        return f"logits__{model}" in self.a

    def info(self, model: str) -> dict:
        return self.models[model]

    def probs(self, model: str) -> np.ndarray:
        return softmax(self.a[f"logits__{model}"], self.info(model)["temperature"])

    def logits(self, model: str) -> np.ndarray:
        return self.a[f"logits__{model}"].astype(np.float64)

    def distance(self, model: str) -> np.ndarray:
        return self.a[f"open_set__{model}"]

    def outflow(self, background: bool) -> np.ndarray:
        labels = self.info(GATE)["labels"]
        p = self.probs(GATE)
        names = OUTFLOW + (("Background",) if background else ())
        return p[:, [labels.index(n) for n in names]].sum(1)


class Fit:
    """Everything fitted on the TRAINING patients' stills (never on validation)."""

    def __init__(self, stills: Outputs):
        a, base = stills.a, stills.info(BASE)
        train = ~a["validation"]
        fetal = train & np.isin(a["coarse"], FETAL)
        self.n_train_fetal = int(fetal.sum())
        self.base_threshold = base["open_set"]["threshold"]
        self.base_release = base["open_set"].get("release", 0.6)
        self.rate = float(base["open_set"]["train_fetal_rejected"])
        d = stills.distance(BASE)[fetal]
        self.distance_rate_check = float((d > self.base_threshold).mean())
        self.train_d = d
        self.train_scores = {kind: logit_score(kind, stills.logits(BASE)[fetal], base["labels"], base["coarse_map"],
                                               base["temperature"]) for kind in ("energy", "max-softmax")}
        self.scores = {kind: self.rule(kind, self.rate) for kind in self.train_scores}
        thorax = train & (a["coarse"] == "thorax")
        self.heart = {}
        if stills.has(GATE):
            for bg in (False, True):
                m = np.sort(stills.outflow(bg)[thorax])
                k = int(np.ceil(0.99 * len(m))) - 1          # keep = m <= t for >= 0.99 of them
                t = float(m[k])
                self.heart["heart+bg" if bg else "heart"] = {
                    "t": t, "train_thorax": int(len(m)), "train_thorax_kept": float((m <= t).mean()),
                    "curve": {str(q): float(np.quantile(m, q)) for q in (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0)}}
        self.sono_threshold = stills.info(SONO)["open_set"]["threshold"] if stills.has(SONO) else None

    def rule(self, kind: str, rate: float) -> dict:
        """A score's rule at a training reject rate: the threshold rejects that share of the training fetal-plane
        images; the release point is the score's value at the quantile 0.6 x (the distance's threshold at the same
        rate) has among the distances. Normalised (`norm`) so the threshold is 1, for OpenSetGate(1, norm.release)."""
        d_thr = threshold_at_reject_rate(self.train_d, rate)
        s = self.train_d if kind == "distance" else self.train_scores[kind]
        thr = threshold_at_reject_rate(s, rate)
        rel = self.base_release * thr if kind == "distance" else \
            release_at_same_quantile(s, self.train_d, d_thr, self.base_release)
        return {"threshold": thr, "release_point": rel, "median": float(np.median(s)),
                "train_fetal_rejected": float((s > thr).mean()), "norm": NormalisedScore(float(np.min(s)), thr, rel)}

    def summary(self) -> dict:
        return {"train_fetal_images": self.n_train_fetal, "reject_rate": self.rate,
                "distance": {"threshold": self.base_threshold, "release": self.base_release,
                             "train_fetal_rejected": self.distance_rate_check},
                **{k: {kk: vv for kk, vv in v.items() if kk != "norm"} | {"release_u": v["norm"].release}
                   for k, v in self.scores.items()},
                **self.heart, "sono_threshold": self.sono_threshold}


def frame_inputs(o: Outputs, fit: Fit, config: str, rate: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray | None]:
    """(probs (N, C), gate score (N,), gate threshold, release, heart verdict (N,) or None) of a configuration.
    rate: a training reject rate instead of the configuration's own threshold (the trade-off curves; distance,
    energy, max-softmax); 0: never reject."""
    base = o.info(BASE)
    heart = None
    if rate is not None:
        if rate == 0:
            return o.probs(BASE), np.zeros(len(o.a[f"logits__{BASE}"])), 1.0, 0.6, None
        sc = fit.rule(config, rate)
        raw = o.distance(BASE) if config == "distance" else \
            logit_score(config, o.logits(BASE), base["labels"], base["coarse_map"], base["temperature"])
        return o.probs(BASE), sc["norm"](raw), 1.0, sc["norm"].release, None
    if config in ("distance", "heart", "heart+bg"):
        probs, score, thr, rel = o.probs(BASE), o.distance(BASE), fit.base_threshold, fit.base_release
        if config != "distance":
            heart = o.outflow(config == "heart+bg") > fit.heart[config]["t"]
    elif config in ("energy", "max-softmax"):
        sc = fit.scores[config]
        raw = logit_score(config, o.logits(BASE), base["labels"], base["coarse_map"], base["temperature"])
        probs, score, thr, rel = o.probs(BASE), sc["norm"](raw), 1.0, sc["norm"].release
    elif config in ("sono", "sono+heart"):
        probs, score, thr, rel = o.probs(SONO), o.distance(SONO), fit.sono_threshold, 0.6
        if config == "sono+heart":
            heart = o.outflow(False) > fit.heart["heart"]["t"]
    elif config in ("ensemble-or", "ensemble-and"):
        u = np.stack([o.distance(BASE) / fit.base_threshold, o.distance(SONO) / fit.sono_threshold])
        probs = (o.probs(BASE) + o.probs(SONO)) / 2
        score, thr, rel = (u.max(0) if config == "ensemble-or" else u.min(0)), 1.0, 0.6
    else:
        raise ValueError(config)
    return probs, score, thr, rel, heart


def coarse_of(probs: np.ndarray, info: dict) -> np.ndarray:
    labels = info["labels"]
    return np.array([info["coarse_map"].get(labels[i], "other") for i in np.nan_to_num(probs, nan=0).argmax(1)])


# ---------------------------------------------------------------------------------------------
# Stills
# ---------------------------------------------------------------------------------------------

def stills_eval(o: Outputs, fit: Fit, config: str, rate: float | None = None) -> dict:
    a = o.a
    val = a["validation"]
    probs, score, thr, _, heart = frame_inputs(o, fit, config, rate)
    info = o.info(BASE)
    pred = coarse_of(probs, info)
    rej = (score > thr) & np.isin(pred, FETAL)
    if heart is not None:
        rej |= heart & (pred == "thorax")
    shown = np.where(rej, "uncertain", pred)[val]
    truth, names, fine = a["coarse"][val], a["name"][val], a["fine"][val]
    fetal, nonstd = np.isin(truth, FETAL), ~np.isin(truth, FETAL)
    sub = np.isin(fine, SUBPLANES)
    fine_pred = np.array(info["labels"])[probs[val].argmax(1)]
    sub_pair = None
    if config.startswith("sono"):   # as `--subplane-model planes_lite0`: its proportions split the brain mass
        brain = [i for i, lab in enumerate(info["labels"]) if info["coarse_map"].get(lab) == "brain"]
        refined = probs[val].copy()
        share = o.probs(BASE)[val][:, brain]
        refined[:, brain] = refined[:, brain].sum(1, keepdims=True) * share / share.sum(1, keepdims=True)
        sub_pair = float((np.array(info["labels"])[refined.argmax(1)][sub] == fine[sub]).mean())
    return {"four_plane_acc": float((shown[fetal] == truth[fetal]).mean()), "fetal": int(fetal.sum()),
            "per_class": {c: f"{int((shown[truth == c] == c).sum())}/{int((truth == c).sum())}" for c in FETAL},
            "nonstandard_shown_fetal": int(np.isin(shown[nonstd], FETAL).sum()), "nonstandard": int(nonstd.sum()),
            "nonstandard_images": {str(n): str(s) for n, s in zip(names[nonstd], shown[nonstd])},
            "fetal_rejected": float(rej[val][fetal].mean()),
            "brain_subplanes": float((fine_pred[sub] == fine[sub]).mean()) if sub.any() else None,
            "brain_subplane_images": int(sub.sum()), "brain_subplanes_with_planes_lite0": sub_pair,
            "_fetal_right": (shown[fetal] == truth[fetal]), "_fetal_names": names[fetal],
            "_nonstd_shown": np.isin(shown[nonstd], FETAL), "_nonstd_names": names[nonstd]}


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------

def replay(o: Outputs, fit: Fit, config: str, times: np.ndarray, rate: float | None = None) -> tuple[list[dict], dict]:
    """The runtime's smoother + gate over one sweep's frames; (results for bench_video.score, cost counts)."""
    from streamer.smoothing import LabelSmoother, OpenSetGate
    info = o.info(BASE)
    labels, cmap = tuple(info["labels"]), info["coarse_map"]
    probs, score, thr, rel, heart = frame_inputs(o, fit, config, rate)
    a = o.a
    if heart is not None:     # the verdict of the first frame of each 0.2-s cell holds for the cell
        cell = np.floor(a["t_media"] / o.meta["cadence_s"] + 1e-9).astype(int)
        has = ~np.isnan(a[f"logits__{GATE}"]).any(1)
        first = {c: i for i, c in zip(np.flatnonzero(has)[::-1], cell[has][::-1])}
        heart = np.array([bool(heart[first[c]]) if c in first else False for c in cell])
    smoother = LabelSmoother(labels, cmap)
    gate = OpenSetGate(thr, rel)
    to_plane = plane_matrix(labels, cmap)
    out, gate_cells = [], set()
    for i in range(len(a["frame"])):
        blank, frozen = bool(a["blank"][i]), bool(a["frozen"][i])
        if blank:
            gate.reset()
            state = smoother.update(None, float(times[i]), blank=True, frozen=frozen, reject=False)
            top = []
        else:
            p = probs[i].astype(np.float32)
            reject = gate.update(float(score[i]), float((p @ to_plane).max()))
            raw_plane = cmap.get(labels[int(p.argmax())], "other")
            if heart is not None and raw_plane == "thorax":
                gate_cells.add(int(np.floor(a["t_media"][i] / o.meta["cadence_s"] + 1e-9)))
                reject = reject or bool(heart[i])
            state = smoother.update(p, float(times[i]), blank=False, frozen=frozen, reject=reject)
            k = int(p.argmax())
            top = [[labels[k], float(p[k]), raw_plane]]
        out.append({"frame": int(a["frame"][i]), "plane": state.plane, "confidence": state.confidence, "topk": top,
                    "flags": {"frozen": state.frozen}, "skipped_total": 0})
    return out, {"frames": len(out), "gate_runs": len(gate_cells)}


def sweeps_eval(sweeps: list[tuple[Outputs, list[dict]]], fit: Fit, config: str, rate: float | None = None) -> dict:
    from bench_video import score
    from engines.planes import FETAL_PLANES_DB_TO_COARSE
    reps, per_frame, gate_runs, frames = [], [], 0, 0
    for o, rows in sweeps:
        times = np.full(len(o.a["frame"]), np.nan)
        for g in rows:
            if int(g["frame"]) < len(times):
                times[int(g["frame"])] = float(g["t_s"])
        res, cost = replay(o, fit, config, times, rate)
        rep = score(res, rows)
        reps.append((rep, rows))
        gate_runs += cost["gate_runs"]
        frames += cost["frames"]
        shown = {r["frame"]: r["plane"] for r in res}
        for g in rows:
            f = int(g["frame"])
            truth = FETAL_PLANES_DB_TO_COARSE.get(g["plane"], "")
            if g["kind"] == "stable" and truth and f in shown:
                per_frame.append((g["source"], truth, shown[f]))
    four = [(s, t, sh) for s, t, sh in per_frame if t in FETAL]
    nonstd = [(s, t, sh) for s, t, sh in per_frame if t not in FETAL]
    m = sum(len(rows) for _, rows in reps) / 30 / 60
    ws = [sum(1 for g in rows if g["kind"] == "stable" and g["plane"]) for _, rows in reps]
    return {"four_plane_stable_acc": float(np.mean([t == sh for _, t, sh in four])), "four_plane_frames": len(four),
            "nonstandard_shown_fetal": float(np.mean([sh in FETAL for *_, sh in nonstd])),
            "nonstandard_shown_fetal_frames": int(sum(sh in FETAL for *_, sh in nonstd)),
            "nonstandard_frames": len(nonstd),
            "stable_acc": float(np.average([r["stable_accuracy"] for r, _ in reps], weights=ws)),
            "flicker_per_min": float(sum(r["flicker_per_min"] * len(rows) / 30 / 60 for r, rows in reps) / m),
            "sononet16_runs_per_frame": gate_runs / max(1, frames),
            "_four": four, "_nonstd": nonstd}


def per_image(ev: dict) -> dict:
    """Non-standard images: share of their frames shown as a fetal plane; fetal images below 0.8 right."""
    from collections import defaultdict
    ns, fe = defaultdict(list), defaultdict(list)
    for s, _, sh in ev["_nonstd"]:
        ns[s].append(sh)
    for s, t, sh in ev["_four"]:
        fe[(s, t)].append(sh)
    out = {"nonstandard": {s: {"frames": len(v), "shown_fetal": round(float(np.mean([x in FETAL for x in v])), 3),
                               "most_shown": max(set(v), key=v.count)} for s, v in sorted(ns.items())},
           "fetal_below_0.8": {}}
    for (s, t), v in sorted(fe.items()):
        acc = float(np.mean([x == t for x in v]))
        if acc < 0.8:
            out["fetal_below_0.8"][f"{s} ({t})"] = {"frames": len(v), "right": round(acc, 3),
                                                    "most_shown": max(set(v), key=v.count)}
    return out


# ---------------------------------------------------------------------------------------------
# Bootstrap over images
# ---------------------------------------------------------------------------------------------

def bootstrap_ratio(groups: dict, draws: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """groups: image -> (hits, n). Resample images with replacement; (point, 2.5 %, 97.5 %) of sum(hits)/sum(n)."""
    hits = np.array([h for h, _ in groups.values()], float)
    n = np.array([k for _, k in groups.values()], float)
    idx = rng.integers(0, len(n), (draws, len(n)))
    stats = hits[idx].sum(1) / n[idx].sum(1)
    return float(hits.sum() / n.sum()), float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def image_groups(pairs) -> dict:
    g: dict = {}
    for name, hit in pairs:
        h, n = g.get(name, (0, 0))
        g[name] = (h + int(hit), n + 1)
    return g


def bootstrap(stills_ev: dict | None, sweep_ev: dict | None, draws: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    if stills_ev is not None:
        out["stills_four_plane_acc"] = bootstrap_ratio(
            image_groups(zip(stills_ev["_fetal_names"], stills_ev["_fetal_right"])), draws, rng)
        out["stills_nonstandard_shown_fetal"] = bootstrap_ratio(
            image_groups(zip(stills_ev["_nonstd_names"], stills_ev["_nonstd_shown"])), draws, rng)
    if sweep_ev is not None:
        out["sweeps_four_plane_stable_acc"] = bootstrap_ratio(
            image_groups((s, t == sh) for s, t, sh in sweep_ev["_four"]), draws, rng)
        out["sweeps_nonstandard_shown_fetal"] = bootstrap_ratio(
            image_groups((s, sh in FETAL) for s, _, sh in sweep_ev["_nonstd"]), draws, rng)
    return out


def paired_difference(groups_a: dict, groups_b: dict, draws: int, rng: np.random.Generator
                      ) -> tuple[float, float, float]:
    """The same images resampled for both configurations: (point, 2.5 %, 97.5 %) of ratio_b - ratio_a."""
    names = sorted(groups_a)
    ha, na = (np.array([groups_a[k][j] for k in names], float) for j in (0, 1))
    hb, nb = (np.array([groups_b[k][j] for k in names], float) for j in (0, 1))
    idx = rng.integers(0, len(names), (draws, len(names)))
    diff = hb[idx].sum(1) / nb[idx].sum(1) - ha[idx].sum(1) / na[idx].sum(1)
    return float(hb.sum() / nb.sum() - ha.sum() / na.sum()), float(np.quantile(diff, 0.025)), \
        float(np.quantile(diff, 0.975))


def paired_vs(ref: tuple, other: tuple, draws: int, seed: int = 0) -> dict:
    """95 % intervals of (other - ref) on every figure, images resampled together (ref, other: (stills, sweeps))."""
    rng = np.random.default_rng(seed)
    out = {}
    (sa, wa), (sb, wb) = ref, other
    out["stills_four_plane_acc"] = paired_difference(image_groups(zip(sa["_fetal_names"], sa["_fetal_right"])),
                                                     image_groups(zip(sb["_fetal_names"], sb["_fetal_right"])), draws, rng)
    out["stills_nonstandard_shown_fetal"] = paired_difference(
        image_groups(zip(sa["_nonstd_names"], sa["_nonstd_shown"])),
        image_groups(zip(sb["_nonstd_names"], sb["_nonstd_shown"])), draws, rng)
    if wa is not None and wb is not None:
        out["sweeps_four_plane_stable_acc"] = paired_difference(
            image_groups((s, t == sh) for s, t, sh in wa["_four"]), image_groups((s, t == sh) for s, t, sh in wb["_four"]),
            draws, rng)
        out["sweeps_nonstandard_shown_fetal"] = paired_difference(
            image_groups((s, sh in FETAL) for s, _, sh in wa["_nonstd"]),
            image_groups((s, sh in FETAL) for s, _, sh in wb["_nonstd"]), draws, rng)
    return out


def public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stills", required=True, help="tools/frame_outputs.py --stills output (fits + validation)")
    ap.add_argument("--sweep", action="append", default=[], metavar="S.npz", help="tools/frame_outputs.py --video output")
    ap.add_argument("--labels", action="append", default=[], metavar="CSV", help="one per --sweep (make_sweep.py csv)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--curve", action="store_true",
                    help="also distance / energy / max-softmax at the same training reject rates (trade-off curves)")
    ap.add_argument("--bootstrap", type=int, default=0, help="draws for 95 %% intervals over images (0: none)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if len(args.sweep) != len(args.labels):
        ap.error("give one --labels CSV per --sweep file")
    try:
        stills = Outputs(*load(args.stills))
        sweeps = [(Outputs(*load(s)), list(csv.DictReader(open(c)))) for s, c in zip(args.sweep, args.labels)]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"open_set_levers: cannot read the inputs: {exc}") from None
    fit = Fit(stills)
    report = {"fit_on_training_patients": fit.summary(), "configs": {}}
    print("fitted on training patients:", json.dumps(report["fit_on_training_patients"], default=float))
    print(f"{'config':>13} | {'stills 4-plane':>14} {'non-std':>7} {'sub-planes':>10} | {'sweeps 4-plane':>14} "
          f"{'non-std':>7} {'stable':>6} {'flick/min':>9} {'SonoNet16/frame':>15}")
    evals: dict = {}
    for cfg in args.configs:
        need = {"sono": [SONO], "ensemble-or": [SONO], "ensemble-and": [SONO], "heart": [GATE], "heart+bg": [GATE],
                "sono+heart": [SONO, GATE]}
        if any(not stills.has(m) for m in need.get(cfg, [])) or \
                any(not o.has(m) for o, _ in sweeps for m in need.get(cfg, [])):
            print(f"{cfg:>13} | skipped: the outputs lack {need[cfg]}")
            continue
        st = stills_eval(stills, fit, cfg)
        sw = sweeps_eval(sweeps, fit, cfg) if sweeps else None
        entry = {"stills": public(st)}
        line = (f"{cfg:>13} | {st['four_plane_acc']:>14.3f} {st['nonstandard_shown_fetal']:>3d}/{st['nonstandard']:<3d} "
                f"{st['brain_subplanes'] if st['brain_subplanes'] is not None else float('nan'):>10.3f} |")
        if sw is not None:
            entry["sweeps"] = public(sw)
            entry["sweeps_per_image"] = per_image(sw)
            line += (f" {sw['four_plane_stable_acc']:>14.3f} {sw['nonstandard_shown_fetal']:>7.3f} {sw['stable_acc']:>6.3f} "
                     f"{sw['flicker_per_min']:>9.2f} {sw['sononet16_runs_per_frame']:>15.3f}")
        if args.bootstrap:
            entry["bootstrap_95"] = bootstrap(st, sw, args.bootstrap)
            if cfg != "distance" and "distance" in evals:   # the difference from the shipped rule, same images
                entry["minus_distance_95"] = paired_vs(evals["distance"], (st, sw), args.bootstrap)
        evals[cfg] = (st, sw)
        report["configs"][cfg] = entry
        print(line)
    if args.curve:
        report["curves"] = curves(stills, sweeps, fit)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


CURVE_RATES = (0.0025, 0.005, None, 0.02, 0.05, 0.1, 0.2, 0)    # None: the shipped rule's training rate; 0: off


def curves(stills: Outputs, sweeps: list, fit: Fit) -> dict:
    """Distance, energy and max-softmax side by side at the same training reject rates (stills, and sweeps)."""
    out = {}
    print("trade-off at training reject rates (fetal-plane images of training patients): "
          "stills four-plane / non-std k/8 | sweeps four-plane stable / non-std shown fetal")
    for kind in ("distance", "energy", "max-softmax"):
        rows = []
        for rate in CURVE_RATES:
            r = fit.rate if rate is None else rate
            st = stills_eval(stills, fit, kind, r)
            row = {"train_reject_rate": r, "shipped_rate": rate is None, "stills_four_plane_acc": st["four_plane_acc"],
                   "stills_nonstandard_shown_fetal": st["nonstandard_shown_fetal"],
                   "stills_fetal_rejected": st["fetal_rejected"]}
            if sweeps:
                sw = sweeps_eval(sweeps, fit, kind, r)
                row.update({"sweeps_four_plane_stable_acc": sw["four_plane_stable_acc"],
                            "sweeps_nonstandard_shown_fetal": sw["nonstandard_shown_fetal"]})
            rows.append(row)
            print(f"  {kind:>11} rate {'off' if r == 0 else f'{r:.4f}'}{' *' if rate is None else '  '}: "
                  f"{row['stills_four_plane_acc']:.3f} {row['stills_nonstandard_shown_fetal']}/8"
                  + (f" | {row['sweeps_four_plane_stable_acc']:.3f} {row['sweeps_nonstandard_shown_fetal']:.3f}"
                     if sweeps else ""))
        out[kind] = rows
    return out


if __name__ == "__main__":
    raise SystemExit(main())
