"""Knowledge distillation from an exported ONNX plane model (`python -m engines train --teacher-onnx`).

The teacher sees each augmented training image at its own input size; the student gets the same
image resized to its (smaller) input with INTER_AREA, as the runtime resizes a crop. Both are
standardised per image, as the runtime does. The teacher runs through ONNX Runtime (no torch
model of it is needed), so any shipped model can teach.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import data as D


class OnnxTeacher:
    """Logits of an ONNX plane model (input `image` 1 x H x W gray, output `logits`) on uint8 crops."""

    def __init__(self, path: str | Path, threads: int = 1):
        from .backends.onnxruntime_backend import cpu_session
        self.path = str(path)
        # A plain session, not OnnxRuntimeBackend: any ONNX file with an `image` -> `logits` graph may
        # teach, with or without sonoplane metadata.
        self.session = cpu_session(self.path, threads)
        shape = self.session.get_inputs()[0].shape          # [batch, 1, H, W]
        self.input_name = self.session.get_inputs()[0].name
        self.size = (int(shape[3]), int(shape[2]))            # (w, h)
        self.num_classes = int(self.session.get_outputs()[0].shape[1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, h, w) at the teacher's input size -> float32 (N, classes)."""
        x = D.per_image_standardise(images)
        return self.session.run(["logits"], {self.input_name: x})[0].astype(np.float32)


def resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, h, w) -> uint8 (N, size[1], size[0]) with INTER_AREA (the runtime's resize of a crop)."""
    w, h = size
    if images.shape[1:] == (h, w):
        return images
    return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])


def kd_loss(student_logits, teacher_logits, temperature: float):
    """Hinton et al.'s soft-target term: T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean.

    The T^2 keeps its gradient on the scale of the hard-label loss whatever T is.
    """
    import torch.nn.functional as F
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_teacher = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (t * t)
