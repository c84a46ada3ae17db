"""Inference stage: preprocessed ROI -> calibrated class probabilities through a backend."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.backends import create_backend
from engines.metadata import ModelFileError, ModelInfo
from engines.zoo import resolve

from engines.crop import CropRect, CropTracker
from engines.errors import UserError
from engines.preprocess import Preprocessor


def softmax_with_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Prediction:
    probs: np.ndarray                 # (C,) calibrated probabilities over the model's labels
    labels: tuple[str, ...]
    coarse_map: dict[str, str]
    cam: np.ndarray | None = None     # (C, h, w) class activation maps, when the model has them
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    open_set: float | None = None     # open-set distance (engines/open_set.py), when the model has it

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def plane(self) -> str:
        return self.coarse_map.get(self.label, "other")

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))

    def topk(self, k: int = 3) -> list[tuple[str, float, str]]:
        order = np.argsort(-self.probs)[:k]
        return [(self.labels[i], float(self.probs[i]), self.coarse_map.get(self.labels[i], "other"))
                for i in order]

    def plane_probs(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, p in zip(self.labels, self.probs):
            plane = self.coarse_map.get(label, "other")
            out[plane] = out.get(plane, 0.0) + float(p)
        return out


def open_model(model: str | Path | None, backend: str, threads: int, default: str | None = None):
    """Resolve a model name/path and create its backend; user mistakes become UserError."""
    try:
        path = resolve(model) if default is None else resolve(model, default=default)
        return create_backend(backend, path, intra_op_threads=threads)
    except (FileNotFoundError, ModelFileError) as exc:
        raise UserError(str(exc)) from None
    except ImportError as exc:
        raise UserError(f"backend '{backend}' is not available here: {exc}") from None


class PlaneClassifier:
    """Preprocess + infer + calibrated softmax for one model."""

    def __init__(self, model: str | Path | None = None, backend: str = "onnxruntime", threads: int = 1):
        self.backend = open_model(model, backend, threads)
        self.info: ModelInfo = self.backend.info
        self.preprocess = Preprocessor(self.info)

    def predict(self, roi_bgr: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        x = self.preprocess(roi_bgr)
        t1 = time.perf_counter()
        out = self.backend.infer(x)
        t2 = time.perf_counter()
        probs = softmax_with_temperature(out.logits[0], self.info.temperature)
        return Prediction(probs=probs, labels=self.info.labels, coarse_map=self.info.coarse_map,
                          cam=None if out.cam is None else out.cam[0],
                          open_set=None if out.open_set is None else float(out.open_set[0]),
                          timings={"preprocess": t1 - t0, "infer": t2 - t1})

    def classify_frame(self, frame_bgr: np.ndarray, crop: str | None = None) -> tuple[Prediction, CropRect]:
        """A full scanner frame (UI included): crop with the model's preset or auto-detection."""
        tracker = CropTracker(crop or self.info.crop_preset or "auto")
        rect = tracker.update(frame_bgr)
        return self.predict(rect.apply(frame_bgr)), rect
