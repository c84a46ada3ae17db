"""Preprocessing exactly as each model's metadata says (engines/metadata.py).

ROI (BGR uint8, the cropped ultrasound region) -> float32 (1, C, H, W):
1. resize to the model input (metadata `resize`: "linear" or "area"). A large ROI is first
   halved with INTER_AREA's fast integer path until it is within 2x of the target, because a
   full-resolution INTER_AREA at an odd scale factor costs ~5 ms at 1080p on this CPU;
2. colour: channels=1 averages the colour channels (SonoNet's training recipe), channels=3
   converts BGR->RGB;
3. normalisation: "per_image_standardise" (scale * (x - mean) / std per image) or "mean_std"
   ((x / 255 - mean) / std per channel).

The ROI may also be a limited-range luma plane (the live loop's YUV path, streamer/yuv.py:
luma_range="limited"): the small resized image is mapped to the gray of the BGR it stands for,
gray = (Y - 16) * 255 / 219, before normalisation.
"""
from __future__ import annotations

import cv2
import numpy as np

from engines.metadata import ModelInfo

LUMA_BLACK, LUMA_SPAN = 16.0, 219.0       # limited ("TV") range luma: 16 is black, 235 white


def limited_luma_to_gray(x: np.ndarray) -> np.ndarray:
    """Limited-range luma (float32 array) -> the 0..255 gray of the BGR it converts to, in place.
    For gray pixels (B-mode) that gray is the mean of B, G and R that the models were trained on."""
    np.subtract(x, LUMA_BLACK, out=x)
    np.multiply(x, 255.0 / LUMA_SPAN, out=x)
    np.clip(x, 0.0, 255.0, out=x)
    return x


_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC,
                  "nearest": cv2.INTER_NEAREST}


class Preprocessor:
    def __init__(self, info: ModelInfo):
        if info.resize not in _INTERPOLATION:
            raise ValueError(f"model {info.model_id}: unknown resize '{info.resize}'")
        self.info = info
        self.size = (info.width, info.height)
        self.interpolation = _INTERPOLATION[info.resize]
        norm = info.normalisation
        self.kind = norm.get("kind")
        if self.kind == "per_image_standardise":
            self.scale = float(norm.get("scale", 1.0))
        elif self.kind == "mean_std":
            c = info.channels
            self.mean = np.asarray(norm["mean"], np.float32).reshape(c, 1, 1)
            self.inv_std = 1.0 / np.asarray(norm["std"], np.float32).reshape(c, 1, 1)
        else:
            raise ValueError(f"model {info.model_id}: unknown normalisation '{self.kind}'")

    def halvings(self, width: int, height: int) -> int:
        """How many 2x area halvings resize() applies to a width x height ROI before its last step.
        A caller may apply some of them itself (one shared halved copy per frame) and pass the
        halved image: the result is identical."""
        tw, th = self.size
        n = 0
        while width >= 4 * tw and height >= 4 * th:
            width, height, n = width // 2, height // 2, n + 1
        return n

    def resize(self, roi: np.ndarray) -> np.ndarray:
        for _ in range(self.halvings(roi.shape[1], roi.shape[0])):
            roi = cv2.resize(roi, (roi.shape[1] // 2, roi.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return cv2.resize(roi, self.size, interpolation=self.interpolation)

    def __call__(self, roi: np.ndarray, out: np.ndarray | None = None,
                 luma_range: str | None = None) -> np.ndarray:
        """(1, C, H, W) float32. out: a preallocated (1, C, H, W) float32 array to fill and return
        (the live loop reuses one input tensor instead of allocating one per frame).
        luma_range="limited": roi is a limited-range Y plane (HxW), mapped to gray after resizing."""
        if luma_range not in (None, "limited"):
            raise ValueError(f"unknown luma range {luma_range!r}")
        if luma_range is not None and roi.ndim != 2:
            raise ValueError(f"a luma plane is HxW, got shape {roi.shape}")
        if roi.ndim != 3 and roi.ndim != 2 or roi.size == 0:
            raise ValueError(f"expected an HxW or HxWxC image, got shape {roi.shape}")
        small = self.resize(roi)
        if self.info.channels == 1:
            x = small.astype(np.float32) if small.ndim == 2 else small.astype(np.float32).mean(axis=2)
            if luma_range is not None:
                limited_luma_to_gray(x)
            x = x[None]
        else:
            if small.ndim == 2:
                small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
            x = cv2.cvtColor(small[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)
            if luma_range is not None:
                limited_luma_to_gray(x)
        if self.kind == "per_image_standardise":
            std = float(x.std())
            mean, gain = float(x.mean()), (self.scale / std if std > 1e-6 else 0.0)
            if out is not None:
                np.subtract(x, mean, out=out[0])
                np.multiply(out, gain, out=out)
                return out
            x = (x - mean) * gain
        else:
            if out is not None:
                np.multiply(x, 1.0 / 255.0, out=out[0])
                np.subtract(out[0], self.mean, out=out[0])
                np.multiply(out[0], self.inv_std, out=out[0])
                return out
            x = (x * (1.0 / 255.0) - self.mean) * self.inv_std
        return np.ascontiguousarray(x[None], dtype=np.float32)
