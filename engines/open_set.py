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


def features(model_path: str | Path, samples, threads: int = 2) -> tuple[np.ndarray, np.ndarray, object]:
    """(embeddings (N, D), logits (N, C), ModelInfo) of FETAL_PLANES_DB samples through the runtime path
    (auto-crop + Preprocessor), from the model with an embedding output added."""
    import onnxruntime as ort

    from .metadata import read_model_info
    from .preprocess import Preprocessor
    info = read_model_info(model_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(with_embedding_bytes(model_path), so, providers=["CPUExecutionProvider"])
    pre = Preprocessor(info)
    emb, logits = [], []
    for s in samples:
        x = pre(D.runtime_roi(D.read_frame(s)))
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
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd)


def fit_model(model: str | Path, out: str | Path, samples, val_patients: set[str], components: int,
              shrinkage: float, quantile: float, threshold: float | None, release: float,
              threads: int = 2, command: str = "", split_desc: str = "") -> dict:
    import onnx

    train = [s for s in samples if s.patient not in val_patients]
    emb, _, info = features(model, train, threads)
    coarse = np.array([info.coarse(s.fine) if s.fine in info.labels else s.coarse for s in train])
    fine = np.array([s.fine for s in train])
    fetal = np.isin(coarse, FETAL_PLANES)
    if fetal.sum() < 20:
        from .errors import UserError
        raise UserError("fewer than 20 training images of the fetal planes: cannot fit")
    w, means, ids = fit_tied(emb[fetal], fine[fetal], shrinkage, components or None)
    d_train = distances(emb, w, means)
    thr = float(threshold) if threshold is not None else float(np.quantile(d_train[fetal], quantile))
    nonstd = ~fetal
    fit = {"kind": "mahalanobis_tied", "threshold": round(thr, 3), "release": release,
           "classes": ids, "components": int(w.shape[1]), "shrinkage": shrinkage,
           "threshold_rule": f"set to {threshold}" if threshold is not None
           else f"quantile {quantile} of training fetal-plane distances",
           "fit_images": int(fetal.sum()), "fit_patients": len({s.patient for s in train}),
           "split": split_desc, "command": command,
           "train_fetal_rejected": round(float((d_train[fetal] > thr).mean()), 4),
           "train_nonstandard_rejected": round(float((d_train[nonstd] > thr).mean()), 4) if nonstd.any() else None}
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
    command = "python -m engines " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        fit = fit_model(model, args.out or model, samples, val, args.components, args.shrinkage, args.quantile,
                        args.threshold, args.release, args.threads, command, str(args.split))
    except ValueError as exc:      # not a CamHead model, or no sonoplane metadata
        raise UserError(f"{model}: {exc}") from None
    print(json.dumps(fit, indent=1))
    print(f"wrote {args.out or model} ({Path(args.out or model).stat().st_size / 1e6:.2f} MB)")
    return 0
