"""Training augmentation on uint8 gray crops (numpy + OpenCV; no torch).

One affine warp per image does crop/translate, scale, aspect jitter and rotation together (cheap
on 2 CPU cores), then flip, gamma/gain (scanner gain and dynamic-range settings), multiplicative
speckle and a little blur. The input is a runtime crop cached slightly larger than the model
input (engines.data.cache_rois), so crops/translations stay inside real image content.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 15.0          # uniform in +-rotate_deg
    scale: tuple[float, float] = (0.85, 1.1)    # zoom of the crop (1 = the whole cached crop)
    aspect: tuple[float, float] = (0.8, 1.25)   # width/height stretch: the stretched-640 copies' aspect is only approximately restored
    translate: float = 0.08           # max shift as a share of the size
    flip_p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.4)
    gain: tuple[float, float] = (0.8, 1.2)
    speckle_p: float = 0.5
    speckle_sigma: float = 0.15
    blur_p: float = 0.2


def augment_image(img: np.ndarray, out_size: tuple[int, int], rng: np.random.Generator,
                  cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """uint8 (H, W) -> augmented uint8 (out_h, out_w)."""
    ow, oh = out_size
    h, w = img.shape
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
    zoom = rng.uniform(*cfg.scale)
    stretch = np.exp(rng.uniform(np.log(cfg.aspect[0]), np.log(cfg.aspect[1])))
    # Output pixel scale: map the whole source onto the output, times zoom, with aspect jitter.
    sx = ow / w * zoom * np.sqrt(stretch)
    sy = oh / h * zoom / np.sqrt(stretch)
    t = np.deg2rad(angle)
    c, s = np.cos(t), np.sin(t)
    # Source centre (shifted) -> output centre; rotation, then anisotropic scale.
    src_c = np.array([w / 2 + rng.uniform(-cfg.translate, cfg.translate) * w,
                      h / 2 + rng.uniform(-cfg.translate, cfg.translate) * h])
    a = np.array([[sx * c, -sx * s], [sy * s, sy * c]])
    b = np.array([ow / 2, oh / 2]) - a @ src_c
    m = np.hstack([a, b[:, None]]).astype(np.float64)
    out = cv2.warpAffine(img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if rng.random() < cfg.flip_p:
        out = out[:, ::-1]
    x = out.astype(np.float32) * (1.0 / 255.0)
    x = np.power(x, rng.uniform(*cfg.gamma)) * rng.uniform(*cfg.gain)
    if rng.random() < cfg.speckle_p:
        noise = rng.normal(1.0, rng.uniform(0, cfg.speckle_sigma), x.shape).astype(np.float32)
        x = x * cv2.GaussianBlur(noise, (3, 3), 0)
    if rng.random() < cfg.blur_p:
        x = cv2.GaussianBlur(x, (3, 3), rng.uniform(0.3, 1.0))
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


# A partial view: zoomed in 1.3-2.2x on an off-centre part of the image, as the probe passes between
# standard views. Used for the thin non-standard classes (Other, cervix) only, whose label holds for
# any part of the picture; a part of a femur image is not a standard femur plane.
PARTIAL_VIEW = AugmentConfig(rotate_deg=25.0, scale=(1.3, 2.2), translate=0.3)
# The extra views a teacher labels (engines.distill): from a little to a lot zoomed in, off-centre, rotated.
# Never the plain full view: that one has its hard label, and SonoNet16 (another scanner) is weaker on it.
TEACHER_VIEW = AugmentConfig(rotate_deg=25.0, scale=(1.15, 2.4), translate=0.3)


def augment_batch(images: np.ndarray, out_size: tuple[int, int], rng: np.random.Generator,
                  cfg: AugmentConfig = AugmentConfig(), partial: np.ndarray | None = None,
                  partial_p: float = 0.0) -> np.ndarray:
    """partial: bool per image, whether it may be shown as a partial view (probability partial_p)."""
    def pick(i: int) -> AugmentConfig:
        if partial is not None and partial[i] and rng.random() < partial_p:
            return PARTIAL_VIEW
        return cfg
    return np.stack([augment_image(im, out_size, rng, pick(i)) for i, im in enumerate(images)])
