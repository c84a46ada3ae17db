"""Temperature scaling (Guo et al., ICML 2017): probs = softmax(logits / T), one scalar T.

`fit_temperature` minimises the negative log-likelihood of held-out labels over log T with a
bracketed 1-D golden-section search (the NLL is convex in 1/T, so the search finds the optimum;
no torch needed). `expected_calibration_error` uses equal-width confidence bins, and
`reliability_diagram` draws accuracy vs confidence per bin (matplotlib imported only there).

Numpy-only at import: the runtime may read a sidecar calibration file written from here
(engines/metadata.py: MODEL.onnx.calibration.json).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, t_min: float = 0.05, t_max: float = 20.0,
                    tol: float = 1e-4) -> float:
    """T > 0 minimising the NLL of `labels` under softmax(logits / T)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (N, C) and N labels, got {logits.shape} and {labels.shape}")
    return minimise_over_temperature(lambda t: nll(logits, labels, t), t_min, t_max, tol)


def minimise_over_temperature(objective, t_min: float = 0.05, t_max: float = 20.0, tol: float = 1e-4) -> float:
    """Golden-section search of a unimodal objective(T) over log T in [t_min, t_max]; used directly
    when the NLL is taken after mapping classes (e.g. SonoNet's 14 classes summed into coarse planes)."""
    lo, hi = np.log(t_min), np.log(t_max)
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = objective(np.exp(a)), objective(np.exp(b))
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = objective(np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = objective(np.exp(b))
    return float(np.exp((lo + hi) / 2))


def _bins(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; confidence 0 cannot occur (>= 1/C).
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    return conf, correct, edges, idx


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Sum over bins of (bin share) x |accuracy - mean confidence| (top-1 confidence)."""
    conf, correct, _, idx = _bins(probs, labels, n_bins)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 15,
                        title: str = "", probs_after: np.ndarray | None = None) -> Path:
    """Accuracy vs confidence per bin (bars), diagonal = perfect calibration; optionally before/after."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3.6, 3.4), dpi=80)
    series = [("before", probs, "tab:red")] + ([("after T", probs_after, "tab:blue")] if probs_after is not None else [])
    width = 1.0 / n_bins
    for k, (name, p, colour) in enumerate(series):
        conf, correct, edges, idx = _bins(p, labels, n_bins)
        accs = [correct[idx == b].mean() if (idx == b).any() else np.nan for b in range(n_bins)]
        offset = (k - (len(series) - 1) / 2) * width / len(series)
        ax.bar(edges[:-1] + width / 2 + offset, np.nan_to_num(accs), width=width / len(series), color=colour,
               alpha=0.7, label=f"{name} (ECE {expected_calibration_error(p, labels, n_bins):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_sidecar(model_path: str | Path, temperature: float, **info) -> Path:
    """MODEL.onnx.calibration.json: overrides the model's metadata temperature at load time."""
    path = Path(str(model_path) + ".calibration.json")
    path.write_text(json.dumps({"temperature": float(temperature), **info}, indent=1))
    return path
