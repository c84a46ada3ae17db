"""Open-set rejection: say "not a standard plane" instead of a confident wrong plane.

The classifier was trained on 9 classes; on a view outside them (the dataset's `Other`, maternal
cervix, anything between standard views) its softmax still names a plane, often with high
confidence. A distance in feature space does better: the Mahalanobis distance of the frame's
pooled features (global average pool before the head) to the nearest fetal-plane class mean, with
one covariance shared by the classes (tied), fitted on TRAINING patients only (Lee et al. 2018,
"A simple unified framework for detecting out-of-distribution samples").

In the ONNX file (no runtime code beyond reading one more output):
    embedding  (N, D)  the pooled features (D = 1280 for efficientnet_lite0)
    open_set   (N,)    min over fetal classes c of ||(x - mu_c) W||^2, W the whitening of the tied
                       covariance (shrunk towards a scaled identity, top `components` directions)
and the metadata field `open_set`:
    {"kind": "mahalanobis_tied", "threshold": T, "release": r, "classes": [...], ...provenance}
A frame is rejected when its distance exceeds T; once rejecting, it stays rejected until the
distance falls below r * T (hysteresis, so a view on the edge does not flicker). The runtime
(streamer.smoothing.OpenSetGate) turns a rejected frame into no evidence for any plane, so the
shown label decays to `uncertain` instead of naming a plane.

    python -m engines open-set --model engines/zoo/planes_lite0.onnx      # fit + write in place
    python -m engines open-set --model M.onnx --out M2.onnx --quantile 0.99 --components 128
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from . import data as D
from .metadata import METADATA_KEY
from .planes import plane_matrix

EMBEDDING_OUTPUT = "embedding"
SCORE_OUTPUT = "open_set"
PREFIX = "open_set/"                 # names of every node/initializer this module adds
FETAL_PLANES = ("brain", "abdomen", "femur", "thorax")
DEFAULT_RELEASE = 0.6


# ---------------------------------------------------------------------------------------------
# Graph surgery (onnx)
# ---------------------------------------------------------------------------------------------

def _strip(proto) -> None:
    """Remove what an earlier fit added (refit replaces it)."""
    g = proto.graph
    keep = [n for n in g.node if not n.name.startswith(PREFIX)]
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if not i.name.startswith(PREFIX)]
    del g.initializer[:]
    g.initializer.extend(inits)
    outs = [o for o in g.output if o.name not in (EMBEDDING_OUTPUT, SCORE_OUTPUT)]
    del g.output[:]
    g.output.extend(outs)


def feature_tensor(proto) -> str:
    """The (N, D, h, w) feature map the CAM head reads: the first input of the head's Einsum/MatMul/Conv
    on the path to the `cam` output (sonoplane CamHead models)."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    node = producers.get("cam")
    for _ in range(4):
        if node is None:
            break
        if node.op_type in ("Einsum", "MatMul", "Conv"):
            return node.input[0]
        node = producers.get(node.input[0])
    raise ValueError("no CAM head found (open-set features need a sonoplane CamHead model: "
                     "efficientnet_lite0 / sepcnn / resnet families)")


def add_embedding(proto) -> None:
    from onnx import TensorProto, helper
    _strip(proto)
    feat = feature_tensor(proto)
    g = proto.graph
    g.node.append(helper.make_node("ReduceMean", [feat], [EMBEDDING_OUTPUT], axes=[2, 3], keepdims=0,
                                   name=PREFIX + "pool"))
    g.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", None]))


def add_score(proto, whitening: np.ndarray, means: np.ndarray) -> None:
    """open_set = min_c sum_k ((x W)_k - m_ck)^2 with W (D, K) and m (C, K) = mu W."""
    from onnx import TensorProto, helper, numpy_helper
    g = proto.graph
    # fp16 storage + Cast (engines.export.store_weights_fp16's idea): half the bytes, fp32 compute.
    w16 = numpy_helper.from_array(whitening.astype(np.float16), PREFIX + "whitening_fp16")
    m = numpy_helper.from_array(means[None].astype(np.float32), PREFIX + "means")   # (1, C, K)
    axes1 = numpy_helper.from_array(np.array([1], np.int64), PREFIX + "axis1")
    axes2 = numpy_helper.from_array(np.array([2], np.int64), PREFIX + "axis2")
    g.initializer.extend([w16, m, axes1, axes2])
    n = helper.make_node
    g.node.extend([
        n("Cast", [PREFIX + "whitening_fp16"], [PREFIX + "whitening"], to=TensorProto.FLOAT, name=PREFIX + "cast"),
        n("MatMul", [EMBEDDING_OUTPUT, PREFIX + "whitening"], [PREFIX + "z"], name=PREFIX + "project"),
        n("Unsqueeze", [PREFIX + "z", PREFIX + "axis1"], [PREFIX + "z1"], name=PREFIX + "unsqueeze"),
        n("Sub", [PREFIX + "z1", PREFIX + "means"], [PREFIX + "diff"], name=PREFIX + "sub"),
        n("Mul", [PREFIX + "diff", PREFIX + "diff"], [PREFIX + "sq"], name=PREFIX + "square"),
        n("ReduceSum", [PREFIX + "sq", PREFIX + "axis2"], [PREFIX + "dist"], keepdims=0, name=PREFIX + "sum"),
        n("ReduceMin", [PREFIX + "dist"], [SCORE_OUTPUT], axes=[1], keepdims=0, name=PREFIX + "min"),
    ])
    g.output.append(helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["batch"]))


def _meta(proto) -> dict:
    for e in proto.metadata_props:
        if e.key == METADATA_KEY:
            return json.loads(e.value)
    raise ValueError("no sonoplane metadata in the model")


def _set_meta(proto, meta: dict) -> None:
    from .metadata import metadata_json
    text = metadata_json({k: v for k, v in meta.items() if k != "format_version"})
    for e in proto.metadata_props:
        if e.key == METADATA_KEY:
            e.value = text
            return


# ---------------------------------------------------------------------------------------------
# Features and fit (numpy)
# ---------------------------------------------------------------------------------------------

def with_embedding_bytes(model_path: str | Path) -> bytes:
    import onnx
    proto = onnx.load(str(model_path))
    add_embedding(proto)
    return proto.SerializeToString()


def features(model_path: str | Path, samples, threads: int = 2, transform=None) -> tuple[np.ndarray, np.ndarray, object]:
    """(embeddings (N, D), logits (N, C), ModelInfo) of FETAL_PLANES_DB samples through the runtime path
    (auto-crop + Preprocessor), from the model with an embedding output added. transform: optional
    function of the runtime crop (e.g. partial_view) applied before preprocessing."""
    from .backends.onnxruntime_backend import cpu_session
    from .metadata import read_model_info
    from .preprocess import Preprocessor
    info = read_model_info(model_path)
    sess = cpu_session(with_embedding_bytes(model_path), threads)
    pre = Preprocessor(info)
    emb, logits = [], []
    for s in samples:
        roi = D.runtime_roi(D.read_frame(s))
        x = pre(transform(roi) if transform else roi)
        lo, e = sess.run([info.logits_output, EMBEDDING_OUTPUT], {info.input_name: x})
        emb.append(e[0])
        logits.append(lo[0])
    return np.stack(emb).astype(np.float64), np.stack(logits).astype(np.float64), info


def fit_tied(emb: np.ndarray, classes: np.ndarray, shrinkage: float = 0.1,
             components: int | None = 128) -> tuple[np.ndarray, np.ndarray, list]:
    """Whitening W (D, K) of the tied within-class covariance (shrunk towards tr/D * I, top K
    directions) and the class means in the whitened space (C, K); returns (W, means, class ids)."""
    ids = sorted(set(classes.tolist()))
    mu = np.stack([emb[classes == c].mean(0) for c in ids])
    centred = emb - mu[np.searchsorted(ids, classes)]
    cov = centred.T @ centred / len(emb)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:components or d]
    w = vecs[:, order] / np.sqrt(vals[order])
    return w, mu @ w, ids


def distances(emb: np.ndarray, w: np.ndarray, means: np.ndarray) -> np.ndarray:
    z = emb @ w
    return ((z[:, None, :] - means[None]) ** 2).sum(-1).min(1)


def patient_folds(patients: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of every image; all images of a patient share one fold."""
    ids = np.array(sorted(set(patients.tolist())))
    np.random.default_rng(seed).shuffle(ids)
    fold_of = {p: i % k for i, p in enumerate(ids)}
    return np.array([fold_of[p] for p in patients])


def cross_fit_distances(emb: np.ndarray, fine: np.ndarray, fetal: np.ndarray, folds: np.ndarray,
                        shrinkage: float = 0.1, components: int | None = 128,
                        extra: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold distances: for each fold, the class means / covariance are fitted on the fetal-plane
    images of the OTHER folds and the fold's images are scored, so every image gets a distance from a fit
    that did not see it (the backbone did: it was trained on these patients). extra: (embeddings, fold)
    of derived images (e.g. partial views), scored with their source image's fold."""
    out = np.empty(len(emb))
    out_extra = None if extra is None else np.empty(len(extra[0]))
    for k in np.unique(folds):
        fit = fetal & (folds != k)
        w, means, _ = fit_tied(emb[fit], fine[fit], shrinkage, components)
        out[folds == k] = distances(emb[folds == k], w, means)
        if extra is not None and (extra[1] == k).any():
            out_extra[extra[1] == k] = distances(extra[0][extra[1] == k], w, means)
    return out, out_extra


def partial_view(roi: np.ndarray, rng: np.random.Generator, zoom: tuple[float, float] = (1.8, 2.6)) -> np.ndarray:
    """An off-centre part of a crop, 1/zoom of its width and height: a view between standard planes,
    made from a training image (no standard plane is a random part of one)."""
    h, w = roi.shape[:2]
    z = rng.uniform(*zoom)
    ch, cw = max(8, int(h / z)), max(8, int(w / z))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(roi[y0:y0 + ch, x0:x0 + cw])


def top_plane_probability(logits: np.ndarray, labels, coarse_map: dict, temperature: float) -> np.ndarray:
    """(N,) the largest plane probability (fine classes summed per plane), as the runtime computes it."""
    z = logits / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p @ plane_matrix(labels, coarse_map).astype(np.float64)).max(1)


def rejects(d: np.ndarray, top_p: np.ndarray, far: float, near: float, confident: float) -> np.ndarray:
    """The gate's rule on single frames (streamer.smoothing.OpenSetGate without hysteresis)."""
    return (d > far) | ((d > near) & (top_p < confident))


# ---------------------------------------------------------------------------------------------
# Logit-based out-of-distribution scores (issue 9, session 6: measured beside the distance)
# ---------------------------------------------------------------------------------------------

LOGIT_SCORES = ("energy", "max-softmax")


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N,) free energy -T * logsumexp(z / T) of pre-softmax logits (Liu et al. 2020): low on images like
    the training data, higher out of distribution."""
    z = np.asarray(logits, np.float64) / temperature
    m = z.max(1, keepdims=True)
    return -temperature * (m[:, 0] + np.log(np.exp(z - m).sum(1)))


def logit_score(kind: str, logits: np.ndarray, labels, coarse_map: dict, temperature: float) -> np.ndarray:
    """(N,) an out-of-distribution score from the logits alone, higher = further out (as the distance):
    energy at T = 1, or 1 - the runtime's top plane probability (softmax at the model's temperature, fine
    classes summed per plane)."""
    if kind == "energy":
        return energy(logits, 1.0)
    if kind == "max-softmax":
        return 1.0 - top_plane_probability(np.asarray(logits, np.float64), labels, coarse_map, temperature)
    raise ValueError(f"unknown score {kind!r} (one of {', '.join(LOGIT_SCORES)})")


def threshold_at_reject_rate(scores: np.ndarray, rate: float) -> float:
    """The score above which a share `rate` of these (in-distribution) scores lies."""
    if not 0 < rate < 1:
        raise ValueError("rate must be in (0, 1)")
    return float(np.quantile(np.asarray(scores, np.float64), 1 - rate))


def release_at_same_quantile(scores: np.ndarray, ref_scores: np.ndarray, ref_threshold: float,
                             ref_release: float) -> float:
    """The hysteresis release point for another score, translated by quantile: the value of `scores` at the
    quantile that ref_release * ref_threshold has among ref_scores (the same images)."""
    q = float((np.asarray(ref_scores) <= ref_release * ref_threshold).mean())
    return float(np.quantile(np.asarray(scores, np.float64), q))


class NormalisedScore:
    """A score mapped so that the threshold is 1: u = (s - anchor) / (threshold - anchor), anchor any value below
    the release point (the smallest in-distribution score). OpenSetGate(1.0, norm.release) on u then rejects and
    releases exactly where s crosses the threshold and the release point: the runtime's hysteresis for any score."""

    def __init__(self, anchor: float, threshold: float, release_point: float):
        if not release_point <= threshold:
            raise ValueError("need release point <= threshold")
        anchor = min(float(anchor), release_point - 1e-6 * max(1.0, abs(threshold - release_point), abs(release_point)))
        self.anchor, self.span = anchor, float(threshold - anchor)
        self.release = (release_point - anchor) / self.span

    def __call__(self, s):
        return (np.asarray(s, np.float64) - self.anchor) / self.span


NEAR_QUANTILES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
FAR_QUANTILES = (0.99, 0.993, 0.995)       # a single image must not set the limit: no max
CONFIDENT = (0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def tune_rule(d_pos: np.ndarray, p_pos: np.ndarray, fetal_pred_pos: np.ndarray, d_neg: np.ndarray,
              p_neg: np.ndarray, fetal_pred_neg: np.ndarray, keep: float = 0.99) -> dict:
    """The (far, near, confident) rule that keeps >= `keep` of the positives (fetal-plane images, out-of-fold
    distances) and shows the fewest negatives as a fetal plane. A positive is lost when it is rejected while
    its arg-max is a fetal plane; a negative is shown fetal when its arg-max is a fetal plane and it is not
    rejected (the runtime lets the model's own other / cervix answer stand). Ties: more kept, then larger near."""
    best = None
    for fq in FAR_QUANTILES:
        far = float(np.quantile(d_pos, fq))
        for nq in NEAR_QUANTILES:
            near = min(far, float(np.quantile(d_pos, nq)))
            for conf in CONFIDENT:
                kept = 1 - float((rejects(d_pos, p_pos, far, near, conf) & fetal_pred_pos).mean())
                if kept < keep:
                    continue
                shown = float((~rejects(d_neg, p_neg, far, near, conf) & fetal_pred_neg).mean())
                key = (shown, -kept, -near)
                if best is None or key < best[0]:
                    best = (key, {"threshold": far, "near": near, "confident": conf, "far_quantile": fq,
                                  "near_quantile": nq, "tune_fetal_kept": kept, "tune_negatives_shown_fetal": shown})
    if best is None:
        raise ValueError("no rule keeps enough fetal images")
    return best[1]


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("open-set", help="fit the open-set (Mahalanobis) rejection of a plane model "
                              "on training patients and write it into the ONNX file")
    p.add_argument("--model", default="engines/zoo/planes_lite0.onnx", help="plane model ONNX (a CamHead model)")
    p.add_argument("--out", default=None, help="output ONNX (default: rewrite --model in place)")
    p.add_argument("--data", default=str(D.DEFAULT_DATA))
    p.add_argument("--split", default=str(D.DEFAULT_VAL_PATIENTS.relative_to(D.REPO_ROOT)),
                   help="validation patient ids: these patients are left out of the fit")
    p.add_argument("--components", type=int, default=128, help="whitened directions kept (0: all)")
    p.add_argument("--shrinkage", type=float, default=0.1, help="covariance shrinkage towards a scaled identity")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="threshold = this quantile of the training fetal-plane images' distances")
    p.add_argument("--threshold", type=float, default=None, help="set the threshold directly (overrides --quantile)")
    p.add_argument("--release", type=float, default=DEFAULT_RELEASE,
                   help="hysteresis: a rejecting stream is released below release x threshold")
    p.add_argument("--rule", choices=("distance", "far-or-unsure"), default="distance",
                   help="distance (shipped): distance > --quantile of the training fetal images' distances; "
                        "far-or-unsure: reject when very far, or far while the model's top plane probability is "
                        "low, tuned on training patients (out-of-fold distances, partial-view negatives)")
    p.add_argument("--keep", type=float, default=0.99,
                   help="far-or-unsure: share of training fetal-plane images the rule must keep")
    p.add_argument("--folds", type=int, default=5, help="patient-grouped folds for the out-of-fold distances")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd)


def fit_model(model: str | Path, out: str | Path, samples, val_patients: set[str], components: int,
              shrinkage: float, quantile: float, threshold: float | None, release: float,
              threads: int = 2, command: str = "", split_desc: str = "", rule: str = "distance",
              keep: float = 0.99, folds: int = 5, seed: int = 0) -> dict:
    import onnx

    train = [s for s in samples if s.patient not in val_patients]
    emb, logits, info = features(model, train, threads)
    coarse = np.array([info.coarse(s.fine) if s.fine in info.labels else s.coarse for s in train])
    fine = np.array([s.fine for s in train])
    fetal = np.isin(coarse, FETAL_PLANES)
    if fetal.sum() < 20:
        from .errors import UserError
        raise UserError("fewer than 20 training images of the fetal planes: cannot fit")
    w, means, ids = fit_tied(emb[fetal], fine[fetal], shrinkage, components or None)
    d_train = distances(emb, w, means)
    nonstd = ~fetal
    fit = {"kind": "mahalanobis_tied", "release": release, "classes": ids, "components": int(w.shape[1]),
           "shrinkage": shrinkage, "fit_images": int(fetal.sum()), "fit_patients": len({s.patient for s in train}),
           "split": split_desc, "command": command}
    if rule == "distance" or threshold is not None:
        thr = float(threshold) if threshold is not None else float(np.quantile(d_train[fetal], quantile))
        fit.update({"threshold": round(thr, 3), "threshold_rule": f"set to {threshold}" if threshold is not None
                    else f"quantile {quantile} of training fetal-plane distances",
                    "train_fetal_rejected": round(float((d_train[fetal] > thr).mean()), 4),
                    "train_nonstandard_rejected": round(float((d_train[nonstd] > thr).mean()), 4) if nonstd.any() else None})
    else:
        fit.update(tune_far_or_unsure(model, train, emb, logits, info, fine, fetal, keep, folds, seed, shrinkage,
                                      components or None, threads, d_train[fetal]))
    proto = onnx.load(str(model))
    add_embedding(proto)
    add_score(proto, w.astype(np.float32), means.astype(np.float32))
    meta = _meta(proto)
    meta["outputs"] = {**meta.get("outputs", {}), "embedding": EMBEDDING_OUTPUT, "open_set": SCORE_OUTPUT}
    meta["open_set"] = fit
    _set_meta(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return fit


def tune_far_or_unsure(model, train, emb, logits, info, fine, fetal, keep, folds, seed, shrinkage, components,
                       threads, d_insample_fetal: np.ndarray) -> dict:
    """The far-or-unsure rule, tuned on TRAINING patients only.

    Positives: the training fetal-plane images with out-of-fold distances (patient-grouped k-fold cross-
    fitting of the means/covariance). Negatives: one partial view of each training fetal-plane image (the
    training Other / cervix images are useless here: the backbone learnt them, they sit at distances far
    beyond any fetal image and the model names them right with p ~ 1). Caveat, not removable without
    retraining the backbone per fold: the backbone saw every training image, so the positives' softmax
    confidence is higher than an unseen patient's. d_insample_fetal: the fetal images' distances from the fit
    on all of them (fit_model's), reported beside the out-of-fold ones."""
    fold = patient_folds(np.array([s.patient for s in train]), folds, seed)
    rng = np.random.default_rng(seed)
    pos_idx = np.flatnonzero(fetal)
    emb_pv, logits_pv, _ = features(model, [train[i] for i in pos_idx], threads, lambda r: partial_view(r, rng))
    d_oof, d_pv = cross_fit_distances(emb, fine, fetal, fold, shrinkage, components, extra=(emb_pv, fold[pos_idx]))
    top = top_plane_probability(logits, info.labels, info.coarse_map, info.temperature)
    top_pv = top_plane_probability(logits_pv, info.labels, info.coarse_map, info.temperature)
    is_fetal = np.array([info.coarse(l) in FETAL_PLANES for l in info.labels])
    pred_fetal, pred_fetal_pv = is_fetal[logits.argmax(1)], is_fetal[logits_pv.argmax(1)]
    rule = tune_rule(d_oof[fetal], top[fetal], pred_fetal[fetal], d_pv, top_pv, pred_fetal_pv, keep)
    nonstd = ~fetal
    r = {k: round(v, 4) if isinstance(v, float) else v for k, v in rule.items()}
    return {**r, "threshold_rule": (
                f"far-or-unsure: reject if distance > threshold, or distance > near and top plane probability < "
                f"confident; tuned on training patients only: keep >= {keep} of {int(fetal.sum())} training fetal-plane "
                f"images (out-of-fold distances, {folds} patient-grouped folds), fewest of {len(d_pv)} partial views "
                f"of them shown as a fetal plane; grid: far quantiles {FAR_QUANTILES}, near quantiles "
                f"{NEAR_QUANTILES}, confident {CONFIDENT}"),
            "folds": folds,
            "oof_fetal_quantile_0.99": round(float(np.quantile(d_oof[fetal], 0.99)), 1),
            "insample_fetal_quantile_0.99": round(float(np.quantile(d_insample_fetal, 0.99)), 1),
            "partial_views_shown_fetal_without_gate": round(float(pred_fetal_pv.mean()), 4),
            "train_nonstandard_rejected": round(float(rejects(d_oof[nonstd], top[nonstd], rule["threshold"],
                                                              rule["near"], rule["confident"]).mean()), 4)
            if nonstd.any() else None,
            "caveat": "the backbone was trained on these patients: their softmax confidence is in-sample"}


def _cmd(args: argparse.Namespace) -> int:
    from .errors import UserError
    from .zoo import resolve
    try:
        model = resolve(args.model)
        samples = D.load_index(args.data)
        val = D.read_val_patients(args.split)
    except (FileNotFoundError, D.DataError) as exc:
        raise UserError(str(exc)) from None
    if not 0 < args.release <= 1:
        raise UserError("--release must be in (0, 1]")
    if not 0 < args.quantile <= 1:
        raise UserError("--quantile must be in (0, 1]")
    if not 0 < args.keep < 1 or args.folds < 2:
        raise UserError("--keep must be in (0, 1) and --folds at least 2")
    command = "python -m engines " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        fit = fit_model(model, args.out or model, samples, val, args.components, args.shrinkage, args.quantile,
                        args.threshold, args.release, args.threads, command, str(args.split), args.rule,
                        args.keep, args.folds)
    except ValueError as exc:      # not a CamHead model, or no sonoplane metadata
        raise UserError(f"{model}: {exc}") from None
    print(json.dumps(fit, indent=1))
    print(f"wrote {args.out or model} ({Path(args.out or model).stat().st_size / 1e6:.2f} MB)")
    return 0
