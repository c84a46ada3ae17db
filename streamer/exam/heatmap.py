"""Class-activation heatmaps from the model's own CAM output (no second pass).

The shipped plane models output, beside the logits, a class activation map per label on their
native grid (planes_lite0: 5x6, SonoNet16: 14x18). The result message carries the map of the shown
label as uint8 (`cam`: {"label", "h", "w", "data"}), so an overlay or the exam writer can draw it
without a model.
"""
from __future__ import annotations

import cv2
import numpy as np


def small_cam(cam: np.ndarray | None, labels: tuple[str, ...], label: str | None) -> dict | None:
    """(C, h, w) CAMs -> the shown label's map as uint8 0..255 (positive evidence, max-normalised)."""
    if cam is None or label is None or label not in labels:
        return None
    m = np.asarray(cam[labels.index(label)], np.float32)
    if m.ndim != 2:
        return None
    m = np.maximum(m, 0.0)
    top = float(m.max())
    u8 = np.zeros(m.shape, np.uint8) if top <= 0 else np.round(m * (255.0 / top)).astype(np.uint8)
    return {"label": label, "h": int(u8.shape[0]), "w": int(u8.shape[1]), "data": u8.tobytes()}


def cam_array(cam: dict | None) -> np.ndarray | None:
    """The message form back to an (h, w) uint8 array; None when absent or malformed."""
    if not isinstance(cam, dict):
        return None
    try:
        h, w, data = int(cam["h"]), int(cam["w"]), cam["data"]
        if not isinstance(data, (bytes, bytearray)) or len(data) != h * w:
            return None
        return np.frombuffer(bytes(data), np.uint8).reshape(h, w)
    except (KeyError, TypeError, ValueError):
        return None


def heatmap_overlay(image_bgr: np.ndarray, cam_u8: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the CAM upsampled over it (JET colours; weak evidence left transparent)."""
    h, w = image_bgr.shape[:2]
    base = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    heat = cv2.resize(cam_u8, (w, h), interpolation=cv2.INTER_CUBIC)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    weight = (alpha * (heat.astype(np.float32) / 255.0))[:, :, None]
    return np.clip(base[:, :, :3] * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
