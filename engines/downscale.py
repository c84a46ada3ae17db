"""Cheap downscaling by area halvings.

cv2.INTER_AREA at an exact factor of 2 takes OpenCV's fast integer path (each output pixel the
mean of a 2x2 block, SIMD): ~0.3 ms for a 1080p crop on this CPU, while INTER_AREA at an odd
factor (1920 -> 640, 1400 -> 160) costs several ms. So large images are halved first and only
the last, small step uses an arbitrary factor.

Odd sizes are the trap: a 1401x901 crop halves ~25x slower than a 1400x900 one.

The runtime computes one halved copy of the crop per frame and hands it to every consumer that
needs fewer pixels than the frame has (blank/frozen detection, the model's preprocessing, the
frames topic), instead of each resizing the full-size crop again.
"""
from __future__ import annotations

import cv2
import numpy as np


def halve(image: np.ndarray) -> np.ndarray:
    """Half width and height (rounded down). Even sizes: each pixel the mean of a 2x2 block, on
    OpenCV's fast path. Odd sizes take INTER_AREA's general path (fractional weights), ~25x slower
    at 1080p: the runtime keeps crop sizes a multiple of 4 (streamer/croptrack.py) to stay off it.
    Kept exactly so because engines.preprocess (and the training caches) halve this way."""
    h, w = image.shape[:2]
    return cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def halvings_to(width: int, height: int, min_width: int, min_height: int = 1) -> int:
    """How many halvings keep an image at least min_width x min_height."""
    n = 0
    while width // 2 >= min_width and height // 2 >= min_height:
        width, height, n = width // 2, height // 2, n + 1
    return n


def halve_times(image: np.ndarray, n: int) -> np.ndarray:
    """`image` halved n times (n = 0: the image itself, not a copy)."""
    for _ in range(n):
        image = halve(image)
    return image


def downscale_to_width(image: np.ndarray, width: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """At most `width` wide, aspect kept: halvings first, then one small resize. Never upscales;
    returns the image itself when it is already narrow enough."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    image = halve_times(image, halvings_to(w, h, width))
    h2, w2 = image.shape[:2]
    if w2 == width:
        return image
    return cv2.resize(image, (width, max(1, int(round(h * width / w)))), interpolation=interpolation)
