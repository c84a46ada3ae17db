"""Evaluate a plane model on the patient-level validation split, through the runtime's own path.

    python -m engines evaluate --model runs/lite0 --out docs/models/planes_lite0/
    python -m engines evaluate --model engines/zoo/sononet16.onnx --out docs/models/sononet16/

Every image goes the way a live frame goes: aspect restored (stretched 640x640 copies), the
runtime's auto-crop (engines.crop), engines.preprocess.Preprocessor from the model's own
metadata, ONNX Runtime on CPU. A run folder is evaluated through its exported model.onnx, so the
numbers belong to the shipped artefact, not to the torch weights.

Scopes (each with accuracy / top-1 error, class accuracy mean ± std over classes (seed 004's
metric), macro-F1, per-class precision/recall, one-vs-rest ROC-AUC, confusion matrix):
- coarse: the six dataset planes (brain, abdomen, femur, thorax, cervix, other); the model's
  fine output is mapped by its metadata coarse_map (SonoNet's spine/profile count as errors);
- four_planes: images of the four main fetal planes, prediction as above (not restricted);
- brain_subplanes: brain images with a Tt/Tc/Tv label, for models that output those sub-planes;
- fine: the model's own labels (our models only).
Calibration: ECE (15 bins) before/after temperature scaling, with T fitted on this same
validation split (stated in every report: fitted and measured on the same images, so the
"after" ECE is optimistic).
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import data as D

# ---------------------------------------------------------------------------------------------
# Metrics (numpy only)
# ---------------------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall (= per-class accuracy) and F1 per class; NaN where undefined."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        f1 = np.where((support > 0), np.where(precision + recall > 0,
                                              2 * precision * recall / (precision + recall), 0.0), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def class_accuracy_mean_std(cm: np.ndarray) -> tuple[float, float]:
    """Seed 004's metric: mean and (population) std over the classes present of per-class accuracy."""
    rec = per_class_metrics(cm)["recall"]
    rec = rec[~np.isnan(rec)]
    return float(rec.mean()), float(rec.std())


def macro_f1(cm: np.ndarray) -> float:
    f1 = per_class_metrics(cm)["f1"]
    return float(np.nanmean(f1))


def roc_auc_binary(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count half
    (Mann-Whitney U with average ranks). NaN when only one class is present."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):   # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_auc_ovr(probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    return np.array([roc_auc_binary(probs[:, k], np.asarray(y_true) == k) for k in range(probs.shape[1])])


def scope_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None, names: list[str]) -> dict:
    cm = confusion_matrix(y_true, y_pred, len(names))
    pcm = per_class_metrics(cm)
    mean, std = class_accuracy_mean_std(cm)
    out = {"n": int(len(y_true)), "accuracy": float((y_true == y_pred).mean()),
           "top1_error": float((y_true != y_pred).mean()), "class_acc_mean": mean, "class_acc_std": std,
           "macro_f1": macro_f1(cm), "labels": names, "confusion": cm.tolist(),
           "per_class": {n: {"support": int(pcm["support"][k]), "precision": _num(pcm["precision"][k]),
                             "recall": _num(pcm["recall"][k]), "f1": _num(pcm["f1"][k])}
                         for k, n in enumerate(names)}}
    if probs is not None:
        auc = roc_auc_ovr(probs, y_true)
        for k, n in enumerate(names):
            out["per_class"][n]["auc"] = _num(auc[k])
        out["macro_auc"] = _num(np.nanmean(auc)) if np.isfinite(auc).any() else None
    return out


def _num(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else round(v, 4)


# ---------------------------------------------------------------------------------------------
# Running a model the runtime way
# ---------------------------------------------------------------------------------------------

def model_path_for(arg: str) -> Path:
    p = Path(arg)
    if p.is_dir():
        if not (p / "model.onnx").is_file():
            raise FileNotFoundError(f"{p}: no model.onnx (train with export, or `python -m engines export`)")
        return p / "model.onnx"
    from .zoo import resolve
    return resolve(arg)


def run_logits(model_path: Path, samples: list[D.Sample], threads: int = 2) -> tuple[np.ndarray, object]:
    """Logits (N, classes) for each sample via crop + Preprocessor + ORT; and the ModelInfo."""
    from engines.preprocess import Preprocessor

    from .backends.onnxruntime_backend import cpu_session
    from .metadata import read_model_info
    sess = cpu_session(model_path, threads)
    info = read_model_info(model_path, session=sess)
    pre = Preprocessor(info)
    out = []
    for s in samples:
        x = pre(D.runtime_roi(D.read_frame(s)))
        out.append(sess.run([info.logits_output], {info.input_name: x})[0][0])
    return np.stack(out).astype(np.float64), info


def coarse_probs(probs: np.ndarray, labels: list[str], coarse_map: dict[str, str], coarse_names: list[str]) -> np.ndarray:
    """Sum fine-class probabilities into coarse planes; planes outside `coarse_names` are dropped
    (so rows may sum to < 1 for SonoNet's spine/profile)."""
    out = np.zeros((len(probs), len(coarse_names)))
    index = {c: i for i, c in enumerate(coarse_names)}
    for k, lab in enumerate(labels):
        c = coarse_map.get(lab, "other")
        if c in index:
            out[:, index[c]] += probs[:, k]
    return out


def evaluate(model_arg: str, data_root: str | Path, split_file: str | Path | None, out_dir: str | Path,
             name: str | None = None, threads: int = 2, subplane_model: str | None = None) -> dict:
    from calibration.temperature import (expected_calibration_error, fit_temperature, minimise_over_temperature,
                                         softmax)
    from .train import resolve_split

    model_path = model_path_for(model_arg)
    samples = D.load_index(data_root)
    val_patients, split_desc = resolve_split(samples, str(split_file) if split_file else None, 0)
    train_s, val_s = D.split_samples(samples, val_patients)
    logits, info = run_logits(model_path, val_s, threads)
    labels = list(info.labels)
    coarse_names = list(D.COARSE_LABELS)
    y_coarse = np.array([coarse_names.index(s.coarse) for s in val_s])
    own_fine = set(labels) >= set(D.FINE_LABELS)      # our 9-class models
    own_coarse = labels == coarse_names              # our 6-class models

    # Temperature on this split: own labels where the model has them, else the coarse-plane NLL.
    if own_fine or own_coarse:
        y_own = np.array([labels.index(s.fine if own_fine else s.coarse) for s in val_s])
        temperature = fit_temperature(logits, y_own)
    else:
        y_own = None

        def coarse_nll(t: float) -> float:
            p = coarse_probs(softmax(logits, t), labels, info.coarse_map, coarse_names)
            return float(-np.log(np.maximum(p[np.arange(len(p)), y_coarse], 1e-12)).mean())
        temperature = minimise_over_temperature(coarse_nll)

    report: dict = {"model": name or info.model_id, "model_file": str(model_path), "sha256": info.sha256,
                    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                    "data": {"root": str(data_root), "images": len(samples),
                             "patients": len({s.patient for s in samples}),
                             "description": "FETAL_PLANES_DB (Burgos-Artizzu et al. 2020, CC BY 4.0)"},
                    "split": {"source": split_desc, **D.describe_split(train_s, val_s)},
                    "pipeline": f"aspect restore (stretched copies) -> engines.crop auto-detect -> Preprocessor "
                                f"({info.width}x{info.height}, {info.normalisation['kind']}, {info.resize}) -> ORT CPU",
                    "scopes": {}}
    probs = softmax(logits)
    if subplane_model:
        # As the runtime does while the stable plane is brain: the primary keeps the plane, the
        # second model splits brain (engines/subplanes.py); here on the stills the primary calls brain.
        from .subplanes import mapping_for
        sub_logits, sub_info = run_logits(model_path_for(subplane_model), val_s, threads)
        mapping = mapping_for(info, sub_info, subplane_model)
        called_brain = np.array([info.coarse_map.get(labels[k]) == "brain" for k in probs.argmax(1)])
        # With each model's shipped temperature, as the runtime refines (streamer/subplanes.py): the
        # refiner's temperature sets how evenly brain mass is split, and an even split can lose the
        # fine arg-max to another plane, so T = 1 here would not score what the runtime shows.
        probs[called_brain] = mapping.refine(softmax(logits[called_brain], info.temperature),
                                             softmax(sub_logits[called_brain], sub_info.temperature))
        report["subplane_model"] = {"model": sub_info.model_id, "sha256": sub_info.sha256,
                                    "applied_to": int(called_brain.sum())}
    pc = coarse_probs(probs, labels, info.coarse_map, coarse_names)
    # A fine prediction outside the six dataset planes (SonoNet's spine, profile) is -1: always wrong.
    pred_coarse = np.array([coarse_names.index(c) if c in coarse_names else -1
                            for c in (info.coarse_map.get(labels[k], "other") for k in probs.argmax(1))])

    def calibration_view(t: float) -> np.ndarray:
        # ECE on the model's own labels where it has ours, else on coarse planes (summed
        # probabilities, out-of-vocabulary mass as an extra column).
        p = softmax(logits, t)
        return p if y_own is not None else _with_rest(coarse_probs(p, labels, info.coarse_map, coarse_names))
    calib_labels = y_own if y_own is not None else y_coarse
    before_probs, after_probs = calibration_view(1.0), calibration_view(temperature)
    calib = {"before": expected_calibration_error(before_probs, calib_labels),
             "after": expected_calibration_error(after_probs, calib_labels)}
    report["temperature"] = {"T": round(temperature, 4), "ece_before": round(calib["before"], 4),
                             "ece_after": round(calib["after"], 4),
                             "fitted_on": "the same validation split it is measured on (optimistic 'after')",
                             "ece_on": "model's own labels" if y_own is not None else "coarse planes (summed probs)"}
    report["scopes"]["coarse"] = _scope_with_unknown(y_coarse, pred_coarse, pc, coarse_names)
    main = np.isin(y_coarse, [coarse_names.index(c) for c in D.MAIN_PLANES])
    main_names = list(D.MAIN_PLANES)
    y_main = y_coarse[main]
    pred_main = np.where(np.isin(pred_coarse[main], range(4)), pred_coarse[main], -1)
    report["scopes"]["four_planes"] = _scope_with_unknown(y_main, pred_main, pc[main][:, :4], main_names)
    if own_fine:
        fine_names = labels
        y_fine = np.array([fine_names.index(s.fine) for s in val_s])
        pred_fine = probs.argmax(1)
        report["scopes"]["fine"] = scope_metrics(y_fine, pred_fine, probs, fine_names)
        sub = ["Brain (Tt.)", "Brain (Tc.)", "Brain (Tv.)"]
        m = np.isin(y_fine, [fine_names.index(n) for n in sub])
        idx = [fine_names.index(n) for n in sub]
        y_sub = np.array([idx.index(v) for v in y_fine[m]])
        pred_sub = np.array([idx.index(v) if v in idx else -1 for v in pred_fine[m]])
        report["scopes"]["brain_subplanes"] = _scope_with_unknown(y_sub, pred_sub, probs[m][:, idx], sub)
    report["headline"] = headline(report)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = report["model"]
    plot_confusion(report["scopes"]["coarse"], out / "confusion_coarse.png", f"{title}: coarse planes")
    if "fine" in report["scopes"]:
        plot_confusion(report["scopes"]["fine"], out / "confusion_fine.png", f"{title}: fine classes")
    from calibration.temperature import reliability_diagram
    reliability_diagram(before_probs, calib_labels, out / "reliability.png",
                        title=f"{title}: T={temperature:.2f} (fit on val)", probs_after=after_probs)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "README.md").write_text(markdown_report(report))
    print(markdown_summary_line(report))
    return report


def _with_rest(pc: np.ndarray) -> np.ndarray:
    """Coarse probabilities with SonoNet's out-of-vocabulary mass kept as an extra column."""
    rest = np.clip(1.0 - pc.sum(axis=1, keepdims=True), 0.0, 1.0)
    return np.hstack([pc, rest])


def _scope_with_unknown(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """Scope metrics where a prediction outside `names` (-1) counts as wrong for every class."""
    n = len(names)
    pred_ext = np.where(pred < 0, n, pred)
    cm_full = confusion_matrix(y, pred_ext, n + 1)[:n]   # rows: true classes; last column: 'outside'
    res = scope_metrics(y, np.where(pred < 0, 0, pred), probs, names)  # placeholder for keys, fixed below
    tp = np.diag(cm_full[:, :n]).astype(float)
    support = cm_full.sum(axis=1).astype(float)
    predicted = cm_full[:, :n].sum(axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        f1 = np.where(support > 0, np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0), np.nan)
    present = ~np.isnan(recall)
    res.update({"accuracy": float((y == pred).mean()), "top1_error": float((y != pred).mean()),
                "class_acc_mean": float(recall[present].mean()), "class_acc_std": float(recall[present].std()),
                "macro_f1": float(np.nanmean(f1)), "confusion": cm_full.tolist(),
                "confusion_columns": names + ["outside"]})
    for k, name in enumerate(names):
        res["per_class"][name].update({"precision": _num(precision[k]), "recall": _num(recall[k]), "f1": _num(f1[k])})
    return res


def headline(report: dict) -> dict:
    s = report["scopes"]
    h = {"four_plane_acc": round(s["four_planes"]["accuracy"], 4),
         "coarse_acc": round(s["coarse"]["accuracy"], 4),
         "class_acc_mean": round(s["coarse"]["class_acc_mean"], 4),
         "class_acc_std": round(s["coarse"]["class_acc_std"], 4),
         "macro_f1": round(s["coarse"]["macro_f1"], 4),
         "four_plane_class_acc_mean": round(s["four_planes"]["class_acc_mean"], 4),
         "four_plane_macro_auc": s["four_planes"].get("macro_auc"),
         "brain_subplane_acc": round(s["brain_subplanes"]["accuracy"], 4) if "brain_subplanes" in s else None,
         "ece_before": report["temperature"]["ece_before"], "ece_after": report["temperature"]["ece_after"],
         "temperature": report["temperature"]["T"],
         "val_images": report["split"]["val_images"], "val_patients": report["split"]["val_patients"]}
    return h


def plot_confusion(scope: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.array(scope["confusion"])
    rows = scope["labels"]
    cols = scope.get("confusion_columns", rows)
    fig, ax = plt.subplots(figsize=(0.5 * len(cols) + 2.2, 0.45 * len(rows) + 1.8), dpi=72)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown_summary_line(report: dict) -> str:
    h = report["headline"]
    sub = f"{h['brain_subplane_acc']:.3f}" if h["brain_subplane_acc"] is not None else "n/a"
    return (f"{report['model']}: four planes {h['four_plane_acc']:.3f}, coarse {h['coarse_acc']:.3f}, "
            f"class-acc {h['class_acc_mean']:.3f} ± {h['class_acc_std']:.3f}, macro-F1 {h['macro_f1']:.3f}, "
            f"brain sub-planes {sub}, ECE {h['ece_before']:.3f} -> {h['ece_after']:.3f} (T={h['temperature']:.2f})")


def markdown_report(report: dict) -> str:
    h, sp = report["headline"], report["split"]
    lines = [f"# Evaluation: {report['model']}", "",
             f"- Model file: `{report['model_file']}` (sha256 {report['sha256'][:12]}), evaluated {report['date']}",
             f"- Data: {report['data']['description']}, `{report['data']['root']}`: {report['data']['images']} images, "
             f"{report['data']['patients']} patients",
             f"- Split: patient-level validation `{sp['source']}`: {sp['val_images']} images / {sp['val_patients']} patients "
             f"(train {sp['train_images']} / {sp['train_patients']}); validation per class: "
             + ", ".join(f"{k} {v}" for k, v in sp["val_per_class"].items()),
             f"- Path: {report['pipeline']}"]
    if report.get("subplane_model"):
        sm = report["subplane_model"]
        lines.append(f"- Brain sub-planes split by a second model, `{sm['model']}` (sha256 {sm['sha256'][:12]}), on the "
                     f"{sm['applied_to']} images this model calls brain (as `sonoplane run --subplane-model`)")
    lines += ["", "| scope | n | accuracy | class-acc mean ± std | macro-F1 | macro AUC |", "|---|---|---|---|---|---|"]
    for name, s in report["scopes"].items():
        auc = f"{s['macro_auc']:.3f}" if s.get("macro_auc") is not None else "n/a"
        lines.append(f"| {name} | {s['n']} | {s['accuracy']:.3f} | {s['class_acc_mean']:.3f} ± {s['class_acc_std']:.3f} "
                     f"| {s['macro_f1']:.3f} | {auc} |")
    t = report["temperature"]
    lines += ["", f"Calibration ({t['ece_on']}): ECE {t['ece_before']:.3f} before, {t['ece_after']:.3f} after "
              f"temperature scaling, T = {t['T']:.3f}, {t['fitted_on']}.", ""]
    for name, s in report["scopes"].items():
        lines += [f"## {name}", "", "| class | support | precision | recall | F1 | AUC |", "|---|---|---|---|---|---|"]
        for c, m in s["per_class"].items():
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {c} | {m['support']} | {fmt(m['precision'])} | {fmt(m['recall'])} | {fmt(m['f1'])} "
                         f"| {fmt(m.get('auc'))} |")
        lines.append("")
    lines += ["Thin classes: cervix and 'Other' have very few validation images; their figures are "
              "indicative only.", "",
              "![coarse confusion](confusion_coarse.png) ![reliability](reliability.png)"
              + (" ![fine confusion](confusion_fine.png)" if "fine" in report["scopes"] else ""), ""]
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a plane model (ONNX or run folder) on the validation split")
    p.add_argument("--model", help="run folder (uses its model.onnx), .onnx path or zoo name")
    p.add_argument("--table", metavar="DIR", default=None,
                   help="instead: write DIR/README.md, every DIR/*/report.json side by side (with --bench latency)")
    p.add_argument("--bench", default=None, help="with --table: tools/bench_models.py --json output")
    p.add_argument("--data", default=str(D.DEFAULT_DATA))
    p.add_argument("--split", default=None, help="validation patient ids file (default: the committed split)")
    p.add_argument("--out", help="report folder, e.g. docs/models/NAME/")
    p.add_argument("--name", default=None, help="name in the report (default: the model_id)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--subplane-model", default=None, metavar="NAME",
                   help="brain sub-planes from this second plane model on the images the model calls brain "
                        "(as `sonoplane run --subplane-model`)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from engines.errors import UserError

    from .metadata import ModelFileError
    if args.table:
        path = write_table(args.table, args.bench)
        print(path.read_text())
        return 0
    if not args.model or not args.out:
        raise UserError("--model and --out are required (or --table DIR)")
    try:
        evaluate(args.model, args.data, args.split, args.out, args.name, args.threads, args.subplane_model)
    except (FileNotFoundError, ModelFileError, D.DataError) as exc:
        raise UserError(str(exc)) from exc
    return 0


def write_table(reports_dir: str | Path, bench_json: str | Path | None = None) -> Path:
    """DIR/README.md: the side-by-side table of every DIR/*/report.json (and latency from a bench JSON)."""
    reports_dir = Path(reports_dir)
    # Plane-model reports only (the anomaly stage's report has its own layout), with their folder names.
    reports = [(p.parent.name, r) for p, r in ((p, json.loads(p.read_text()))
                                              for p in sorted(reports_dir.glob("*/report.json")))
               if "headline" in r and "split" in r]
    if not reports:
        raise FileNotFoundError(f"no */report.json under {reports_dir}")
    bench = json.loads(Path(bench_json).read_text())["inference"] if bench_json else {}
    bench = {Path(k).stem if Path(k).stem != "model" else Path(k).parent.name: v for k, v in bench.items()}
    sp = reports[0][1]["split"]
    lines = ["# Plane models side by side", "",
             f"Validation: FETAL_PLANES_DB, patient-level split `{sp['source']}`: {sp['val_images']} images / "
             f"{sp['val_patients']} patients (train {sp['train_images']} / {sp['train_patients']}). Every model runs "
             "the runtime path (auto-crop + Preprocessor + ONNX Runtime). Class accuracy = mean ± std over the six "
             "coarse planes of per-class accuracy (cervix has 1 validation image, Other 7). ECE: before -> after "
             "temperature scaling fitted on the same split. Latency: ONNX Runtime CPU, batch 1, shared 2-core machine.",
             "", "| model | four planes acc | coarse acc | class-acc mean ± std | macro-F1 | brain sub-planes | "
             "ECE before -> after (T) | p50 / p99 ms 1 thread | p50 / p99 ms 2 threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for folder, r in reports:
        h = r["headline"]
        file_name = Path(r["model_file"]).stem if Path(r["model_file"]).stem != "model" else Path(r["model_file"]).parent.name
        lat = bench.get(folder) or bench.get(file_name) or bench.get(r["model"], {})
        cell = lambda t: f"{lat[t]['p50']:.2f} / {lat[t]['p99']:.2f}" if t in lat else "n/a"  # noqa: E731
        sub = f"{h['brain_subplane_acc']:.3f}" if h["brain_subplane_acc"] is not None else "n/a"
        lines.append(f"| [{folder}]({folder}/README.md) | "
                     f"{h['four_plane_acc']:.3f} | {h['coarse_acc']:.3f} | {h['class_acc_mean']:.3f} ± "
                     f"{h['class_acc_std']:.3f} | {h['macro_f1']:.3f} | {sub} | {h['ece_before']:.3f} -> "
                     f"{h['ece_after']:.3f} ({h['temperature']:.2f}) | {cell('1')} | {cell('2')} |")
    lines.append("")
    out = reports_dir / "README.md"
    out.write_text("\n".join(lines))
    return out

