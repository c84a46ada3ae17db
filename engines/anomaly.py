"""Brain anomaly stage (seed 000's stage 2): normal / abnormal / uncertain on brain-plane frames.

    python -m engines anomaly --data ../shared/data/brain_anomaly --out runs/brain_anomaly \
        --zoo engines/zoo/brain_anomaly.onnx --report-dir docs/models/brain_anomaly

Data: `labels.csv` (file, source_image, label, anomaly_type, group, roboflow_split) + `images/`.
The export holds up to 3 augmented copies of each source image, so every split here is by
`group` (a patient or case), never by file.

Protocol (small data: 58 groups), chosen so that no figure is scored on what chose it:
1. k-fold cross-validation by group (stratified on the group's label), a fixed number of epochs
   (no early stopping on the scored fold): out-of-fold (OOF) logits for every image.
2. Temperature fitted on the OOF logits; the `uncertain` band [lo, hi) on the calibrated OOF
   p(abnormal): the widest coverage whose decided images reach --target accuracy.
3. The shipped model: the same recipe trained on all groups, exported with that temperature and
   band in its metadata (the runtime's AnomalyStage reads both).
4. A shortcut check: every normal image here comes from FETAL_PLANES_DB patients and nearly every
   abnormal one from another source ("case" groups). A model can score well by telling the sources
   apart. So the report also runs the final model on HC18 heads (a third source, normal heads,
   when ../shared/data/hc18 exists) and on the FETAL_PLANES brain validation images: what fraction
   it calls abnormal there is the false-alarm rate a sonographer would see on normal brains.

Images are 256x256 (stretched by the export); they get the same 1.4 : 1 aspect restore as the
stretched FETAL_PLANES copies, then gray, INTER_AREA resize, per-image standardisation: what
engines.preprocess.Preprocessor does with this model's metadata on the live crop.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import data as D
from .train import fit, invoked_command, parse_size, predict_logits

DEFAULT_DATA = D.REPO_ROOT.parent / "shared" / "data" / "brain_anomaly"
DEFAULT_HC18 = D.REPO_ROOT.parent / "shared" / "data" / "hc18"
LABELS: tuple[str, ...] = ("normal", "abnormal")
CACHE_MARGIN = 1.15


@dataclass(frozen=True)
class AnomalySample:
    path: Path
    label: int            # index into LABELS
    group: str            # patient / case: the unit of every split
    anomaly_type: str     # "" for normal


def load_anomaly_index(root: str | Path) -> list[AnomalySample]:
    root = Path(root)
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise D.DataError(f"{root}: no labels.csv (expected the brain_anomaly export: "
                          "file,source_image,label,anomaly_type,group,...)")
    out = []
    with csv_path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                label = LABELS.index(row["label"].strip())
                out.append(AnomalySample(root / row["file"], label, row["group"].strip(),
                                         row.get("anomaly_type", "").strip()))
            except (KeyError, ValueError) as exc:
                raise D.DataError(f"{csv_path}:{n}: bad row ({exc})") from exc
    if not out:
        raise D.DataError(f"{csv_path}: no rows")
    return out


def group_folds(samples: list[AnomalySample], k: int, seed: int) -> list[set[str]]:
    """k disjoint sets of groups, each group whole, normal and abnormal groups dealt round-robin
    (largest first) so every fold gets both labels and a similar number of images."""
    sizes: dict[str, int] = {}
    label_of: dict[str, int] = {}
    for s in samples:
        sizes[s.group] = sizes.get(s.group, 0) + 1
        label_of[s.group] = max(label_of.get(s.group, 0), s.label)
    rng = np.random.default_rng(seed)
    folds: list[set[str]] = [set() for _ in range(k)]
    load = np.zeros(k)
    for label in range(len(LABELS)):
        groups = [g for g in sizes if label_of[g] == label]
        rng.shuffle(groups)
        groups.sort(key=lambda g: -sizes[g])   # stable: ties keep the shuffled order
        for g in groups:
            counts = np.array([sum(1 for x in f if label_of[x] == label) for f in folds])
            f = int(np.lexsort((load, counts))[0])   # fewest groups of this label, then fewest images
            folds[f].add(g)
            load[f] += sizes[g]
    return folds


def read_gray(path: Path, restore: bool) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise D.DataError(f"cannot read image {path}")
    return D.gray(D.restore_aspect(img) if restore else img)


def prepare(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, h, w): aspect restored (the export stretched them to 256x256), gray, INTER_AREA resize; cached."""
    return D.cached_images(paths, lambda p: read_gray(p, restore=True), size, "anomaly-v1", progress=False)


def choose_band(p_abnormal: np.ndarray, y: np.ndarray, target: float = 0.95, step: float = 0.01) -> dict:
    """The uncertain band [lo, hi): below lo -> normal, at/above hi -> abnormal, between -> uncertain.

    Picks the band with the largest coverage (share of images decided) whose decided images are at
    least `target` accurate; ties go to the narrowest band. If no band reaches the target, the band
    with the best decided accuracy at coverage >= 0.5 is taken and `target_met` is False.
    """
    grid = np.round(np.arange(step, 1.0, step), 4)
    best, fallback = None, None
    for lo in grid[grid <= 0.5]:
        for hi in grid[grid >= 0.5]:
            decided = (p_abnormal < lo) | (p_abnormal >= hi)
            if not decided.any():
                continue
            pred = (p_abnormal >= hi).astype(int)
            acc = float((pred[decided] == y[decided]).mean())
            cov = float(decided.mean())
            cand = {"lo": float(lo), "hi": float(hi), "coverage": cov, "decided_accuracy": acc}
            if acc >= target and (best is None or (cov, -(hi - lo)) > (best["coverage"], -(best["hi"] - best["lo"]))):
                best = cand
            if cov >= 0.5 and (fallback is None or (acc, cov) > (fallback["decided_accuracy"], fallback["coverage"])):
                fallback = cand
    chosen = best or fallback or {"lo": 0.5, "hi": 0.5, "coverage": 1.0,
                                  "decided_accuracy": float(((p_abnormal >= 0.5) == y).mean())}
    return {**chosen, "target": target, "target_met": best is not None}


def register(subparsers) -> None:
    p = subparsers.add_parser("anomaly", help="train, cross-validate and export the brain anomaly model")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="brain_anomaly folder (labels.csv + images/)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--input", default="160x128", help="model input WxH")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (by group)")
    p.add_argument("--epochs", type=int, default=10, help="fixed epochs (no early stopping: see module doc)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--target", type=float, default=0.95, help="decided-accuracy target for the uncertain band")
    p.add_argument("--hc18", default=str(DEFAULT_HC18), help="HC18 folder for the shortcut check ('' to skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--zoo", default=None, help="also export the final model here, e.g. engines/zoo/brain_anomaly.onnx")
    p.add_argument("--report-dir", default=None, help="report folder (default: OUT/report)")
    p.add_argument("--reuse", action="store_true",
                   help="no training: take OUT's OOF logits and final model, re-choose the band (--target), re-export")
    p.set_defaults(func=run, patience=10 ** 6, max_minutes=None)


def _new_model(args):
    from .models import create_model, has_imagenet_weights
    # ImageNet weights exist for the efficientnet_lite0 families only; the others start from scratch.
    return create_model(args.model, num_classes=len(LABELS), in_chans=1,
                        pretrained=has_imagenet_weights(args.model))


def run(args: argparse.Namespace) -> int:
    import torch

    from engines.errors import UserError

    torch.set_num_threads(args.threads)
    w, h = parse_size(args.input)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        samples = load_anomaly_index(args.data)
    except D.DataError as exc:
        raise UserError(str(exc)) from exc
    y = np.array([s.label for s in samples])
    groups = np.array([s.group for s in samples])
    print(f"data: {args.data}: {len(samples)} images, {len(set(groups))} groups "
          f"({int((y == 0).sum())} normal / {int((y == 1).sum())} abnormal images); {args.folds}-fold CV by group")
    if args.reuse:
        oof, fold_of, final, config = _load_run(out, args, samples)
        config["command"] += "; then " + invoked_command()
        w, h = config["input"]
    else:
        oof, fold_of, final, config = _train_cv_and_final(args, samples, y, groups, (w, h), out)
    report = cv_report(oof, y, samples, fold_of, args.target)
    report["config"] = config
    report["shortcut_check"] = shortcut_check(final, (w, h), report["temperature"]["T"], report["band"], args.hc18)
    report_dir = Path(args.report_dir) if args.report_dir else out / "report"
    write_report(report, oof, y, report_dir)
    onnx_path = export_final(final, config, report, Path(args.zoo) if args.zoo else out / "brain_anomaly.onnx")
    if args.zoo:
        card = onnx_path.with_suffix(".md")
        card.write_text(model_card(onnx_path, report, report_dir))
        print(f"wrote {card}")
    return 0


def _train_cv_and_final(args, samples, y, groups, size, out: Path):
    """k-fold OOF logits, then the final model on every group; both saved in OUT."""
    import torch

    w, h = size
    big = (int(round(w * CACHE_MARGIN)), int(round(h * CACHE_MARGIN)))
    x_big = prepare([s.path for s in samples], big)
    x_exact = D.per_image_standardise(prepare([s.path for s in samples], (w, h)))
    folds = group_folds(samples, args.folds, args.seed)
    t0 = time.time()
    oof = np.zeros((len(samples), len(LABELS)), np.float32)
    fold_of = np.full(len(samples), -1)
    for k, val_groups in enumerate(folds):
        val = np.isin(groups, list(val_groups))
        fold_of[val] = k
        torch.manual_seed(args.seed + k)
        model = _new_model(args)
        print(f"fold {k + 1}/{args.folds}: train {int((~val).sum())} images, held out {int(val.sum())} "
              f"({len(val_groups)} groups)")
        fit(model, len(LABELS), x_big[~val], y[~val], None, None, (w, h), args, np.random.default_rng(args.seed + k))
        oof[val] = predict_logits(model, x_exact[val])
    cv_minutes = (time.time() - t0) / 60

    torch.manual_seed(args.seed)
    final = _new_model(args)
    print(f"final model: all {len(samples)} images")
    final_minutes = fit(final, len(LABELS), x_big, y, None, None, (w, h), args, np.random.default_rng(args.seed))["minutes"]
    command = invoked_command()
    config = {"model": args.model, "labels": list(LABELS), "input": [w, h], "epochs": args.epochs,
              "folds": args.folds, "seed": args.seed, "data": str(args.data), "command": command,
              "cv_minutes": round(cv_minutes, 1), "final_minutes": round(final_minutes, 1)}
    torch.save({"state_dict": final.state_dict(), "config": config}, out / "final.pt")
    np.savez(out / "oof_logits.npz", logits=oof, labels=y, groups=groups, fold=fold_of)

    return oof, fold_of, final, config


def _load_run(out: Path, args, samples):
    """--reuse: OUT's saved OOF logits and final model (re-choose the band, re-export; no training)."""
    import torch

    from engines.errors import UserError
    if not (out / "final.pt").is_file() or not (out / "oof_logits.npz").is_file():
        raise UserError(f"--reuse: {out} has no final.pt / oof_logits.npz (run without --reuse first)")
    saved = np.load(out / "oof_logits.npz")
    if len(saved["labels"]) != len(samples):
        raise UserError(f"--reuse: {out} was made from {len(saved['labels'])} images, the data has {len(samples)}")
    ckpt = torch.load(out / "final.pt", map_location="cpu", weights_only=False)
    config = ckpt["config"]
    args.model = config["model"]
    final = _new_model(args)
    final.load_state_dict(ckpt["state_dict"])
    return saved["logits"], saved["fold"], final.eval(), config


def cv_report(oof: np.ndarray, y: np.ndarray, samples: list[AnomalySample], fold_of: np.ndarray, target: float) -> dict:
    from calibration.temperature import expected_calibration_error, fit_temperature, softmax

    from .evaluate import roc_auc_binary
    t = fit_temperature(oof, y)
    p_before = softmax(oof)
    p_after = softmax(oof, t)
    pa = p_after[:, 1]
    band = choose_band(pa, y, target)
    pred = (pa >= 0.5).astype(int)
    per_fold = []
    for k in sorted(set(fold_of.tolist())):
        m = fold_of == k
        per_fold.append({"fold": int(k), "images": int(m.sum()), "accuracy": float((pred[m] == y[m]).mean()),
                         "auc": roc_auc_binary(pa[m], y[m] == 1) if len(set(y[m])) == 2 else None})
    aucs = [f["auc"] for f in per_fold if f["auc"] is not None]
    types: dict[str, list[int]] = {}
    for s, p in zip(samples, pred):
        if s.label == 1:
            types.setdefault(s.anomaly_type or "unspecified", []).append(int(p == 1))
    decided = (pa < band["lo"]) | (pa >= band["hi"])
    return {
        "data": {"images": len(y), "groups": len({s.group for s in samples}),
                 "normal_images": int((y == 0).sum()), "abnormal_images": int((y == 1).sum())},
        "oof": {"accuracy_at_0.5": float((pred == y).mean()),
                "sensitivity": float(pred[y == 1].mean()), "specificity": float(1 - pred[y == 0].mean()),
                "auc": roc_auc_binary(pa, y == 1),
                "auc_per_fold_mean": float(np.mean(aucs)), "auc_per_fold_std": float(np.std(aucs)),
                "per_fold": per_fold,
                "abnormal_recall_by_type": {k: {"n": len(v), "recall": float(np.mean(v))}
                                            for k, v in sorted(types.items(), key=lambda kv: -len(kv[1]))},
                "uncertain_share": float(1 - decided.mean())},
        "temperature": {"T": float(t), "ece_before": expected_calibration_error(p_before, y),
                        "ece_after": expected_calibration_error(p_after, y)},
        "band": band,
    }


def shortcut_check(model, size: tuple[int, int], temperature: float, band: dict, hc18: str) -> dict:
    """How often the final model calls normal brains from other sources abnormal / uncertain."""
    from calibration.temperature import softmax
    result: dict = {}
    sets: dict[str, np.ndarray] = {}
    if hc18 and Path(hc18).is_dir():
        paths = sorted((Path(hc18) / "images").glob("*.jpg"))[:400]
        if paths:   # HC18 frames are not stretched and hold no scanner UI: gray + resize only
            sets["hc18_heads"] = D.cached_images(paths, lambda p: read_gray(p, restore=False), size, "hc18-v1",
                                                 progress=False)
    if D.DEFAULT_DATA.is_dir() and D.DEFAULT_VAL_PATIENTS.is_file():
        _, val = D.split_samples(D.load_index(D.DEFAULT_DATA), D.read_val_patients())
        brains = [s for s in val if s.coarse == "brain"]
        if brains:   # the runtime's crop of each frame, as the live stage would see it
            sets["fetal_planes_val_brain"] = D.cache_rois(brains, size, progress=False)
    for name, x in sets.items():
        pa = softmax(predict_logits(model, D.per_image_standardise(x)), temperature)[:, 1]
        result[name] = {"images": len(x), "called_abnormal": float((pa >= band["hi"]).mean()),
                        "called_uncertain": float(((pa >= band["lo"]) & (pa < band["hi"])).mean()),
                        "called_normal": float((pa < band["lo"]).mean())}
    if not result:
        result["note"] = "no HC18 or FETAL_PLANES data found: check not run"
    return result


def write_report(report: dict, oof: np.ndarray, y: np.ndarray, report_dir: Path) -> None:
    from calibration.temperature import reliability_diagram, softmax
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=1))
    reliability_diagram(softmax(oof), y, report_dir / "reliability.png", title="brain anomaly (OOF)",
                        probs_after=softmax(oof, report["temperature"]["T"]))
    (report_dir / "README.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    o, t, b, d = r["oof"], r["temperature"], r["band"], r["data"]
    lines = [
        "# Brain anomaly stage: cross-validated report", "",
        f"Data: ../shared/data/brain_anomaly (Roboflow 'fetal-abnormality-object-detection' v1, CC BY 4.0): "
        f"{d['images']} images, {d['groups']} groups ({d['normal_images']} normal / {d['abnormal_images']} abnormal). "
        f"{r['config']['folds']}-fold cross-validation by group (no group in two folds; augmented copies stay together), "
        f"{r['config']['epochs']} fixed epochs, out-of-fold predictions. Command: `{r['config']['command']}`.", "",
        "| metric | value |", "|---|---|",
        f"| accuracy at p=0.5 (OOF) | {o['accuracy_at_0.5']:.3f} |",
        f"| sensitivity / specificity | {o['sensitivity']:.3f} / {o['specificity']:.3f} |",
        f"| ROC-AUC (pooled OOF) | {o['auc']:.3f} |",
        f"| ROC-AUC per fold | {o['auc_per_fold_mean']:.3f} ± {o['auc_per_fold_std']:.3f} |",
        f"| temperature T (fitted on OOF) | {t['T']:.3f} |",
        f"| ECE before / after T | {t['ece_before']:.3f} / {t['ece_after']:.3f} |",
        f"| uncertain band on calibrated p(abnormal) | [{b['lo']:.2f}, {b['hi']:.2f}) |",
        f"| decided share / accuracy of decided | {b['coverage']:.3f} / {b['decided_accuracy']:.3f} "
        f"(target {b['target']}, {'met' if b['target_met'] else 'NOT met'}) |", "",
        "Abnormal recall by anomaly type (OOF, p >= 0.5):", "",
        "| type | images | recall |", "|---|---|---|",
        *[f"| {k} | {v['n']} | {v['recall']:.2f} |" for k, v in o["abnormal_recall_by_type"].items()], "",
        "## Shortcut check (the final model on normal brains from elsewhere)", "",
        "Every normal image in this set comes from FETAL_PLANES_DB and nearly every abnormal one from a different "
        "source, so a model can separate them by source (machine, preprocessing, annotation marks). "
        "What the shipped model says on normal heads it never saw:", "",
        "| set | images | abnormal | uncertain | normal |", "|---|---|---|---|---|",
    ]
    for name, v in r["shortcut_check"].items():
        if isinstance(v, dict):
            lines.append(f"| {name} | {v['images']} | {v['called_abnormal']:.3f} | {v['called_uncertain']:.3f} | "
                         f"{v['called_normal']:.3f} |")
    lines += ["", "FETAL_PLANES validation brains may share patients with this set's normal images (the export's "
              "normal images are FETAL_PLANES brains): a low rate there is expected and proves little; HC18 is the "
              "honest one. Small, single-source data: indicative only, not a diagnostic claim.", "",
              "![reliability](reliability.png)", ""]
    return "\n".join(lines)


def export_final(model, config: dict, report: dict, path: Path) -> Path:
    import torch

    from .export import export_onnx
    w, h = config["input"]
    b = report["band"]
    meta = {
        "model_id": path.stem, "task": "anomaly", "labels": list(LABELS), "coarse_map": {},
        "input": {"name": "image", "height": h, "width": w, "channels": 1},
        "normalisation": {"kind": "per_image_standardise", "scale": 1.0}, "resize": "area", "crop_preset": None,
        "temperature": report["temperature"]["T"], "uncertain_band": [b["lo"], b["hi"]],
        "applies_to": "brain",
        "training": {"family": config["model"], "data": "brain_anomaly (Roboflow export, CC BY 4.0), all groups",
                     "command": config["command"], "epochs": config["epochs"]},
        "metrics": {"oof_auc": report["oof"]["auc"], "oof_accuracy": report["oof"]["accuracy_at_0.5"],
                    "band_coverage": b["coverage"], "band_decided_accuracy": b["decided_accuracy"]},
        "license": "code Apache-2.0; weights trained on the brain_anomaly Roboflow export (CC BY 4.0) and "
                   "initialised from ImageNet EfficientNet-Lite0 weights (Apache-2.0)",
        "source": "sonoplane engines/anomaly.py",
    }
    example = torch.from_numpy(D.per_image_standardise(np.random.default_rng(0).integers(0, 255, (2, h, w), np.uint8)))
    return export_onnx(model, meta, path, example, fp16_weights=True)


def model_card(path: Path, r: dict, report_dir: Path) -> str:
    o, t, b, c = r["oof"], r["temperature"], r["band"], r["config"]
    sc = r["shortcut_check"].get("hc18_heads")
    sc_line = (f"on 400 HC18 normal heads (another source) it says abnormal {sc['called_abnormal']:.1%}, "
               f"uncertain {sc['called_uncertain']:.1%}" if sc else "HC18 shortcut check not run")
    return "\n".join([
        f"# {path.stem} — brain normal / abnormal / uncertain",
        "",
        f"- **What**: {c['model']} (ImageNet-initialised, 1-channel stem), 2 classes (normal, abnormal); the runtime "
        f"turns calibrated p(abnormal) into normal (< {b['lo']:.2f}), uncertain, abnormal (>= {b['hi']:.2f}). It runs "
        "only on frames whose smoothed plane is brain (streamer.pipeline.AnomalyStage).",
        f"- **Input**: 1 x {c['input'][1]} x {c['input'][0]} gray, INTER_AREA resize of the plane crop, per-image "
        "standardisation.",
        "- **Data**: ../shared/data/brain_anomaly, a Roboflow export (CC BY 4.0): 210 normal (FETAL_PLANES_DB "
        "brains) and 201 abnormal images (ventriculomegaly, encephalocele, polencephaly, cysts, ...), 58 groups.",
        f"- **Validation**: {c['folds']}-fold cross-validation by group, out-of-fold: AUC {o['auc']:.3f} "
        f"(per fold {o['auc_per_fold_mean']:.3f} ± {o['auc_per_fold_std']:.3f}), accuracy {o['accuracy_at_0.5']:.3f}, "
        f"sensitivity {o['sensitivity']:.3f}, specificity {o['specificity']:.3f}; band decides {b['coverage']:.1%} of "
        f"images at {b['decided_accuracy']:.3f} accuracy. Temperature {t['T']:.3f} (ECE {t['ece_before']:.3f} -> "
        f"{t['ece_after']:.3f}, OOF).",
        f"- **Caveat (read this)**: normal and abnormal images come from different sources; {sc_line}. "
        "Indicative only; not a diagnostic device. Full report: " + str(report_dir) + "/README.md.",
        f"- **Training**: {c['epochs']} epochs, CV {c['cv_minutes']} min + final {c['final_minutes']} min on a 2-core CPU.",
        f"- **Size**: {path.stat().st_size / 1e6:.2f} MB (weights stored as fp16, computed in fp32).",
        "- **License**: code Apache-2.0; weights trained on CC BY 4.0 data (Roboflow 'fetal-abnormality-object-"
        "detection' v1; FETAL_PLANES_DB, Burgos-Artizzu et al. 2020) from ImageNet EfficientNet-Lite0 weights (Apache-2.0).",
        f"- **Made by**: `{c['command']}`.",
        "",
    ])
