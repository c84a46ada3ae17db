"""A learned text detector, the second line of redaction for what is STORED (exam captures).

engines.redact's detector (glyph strokes, words, lines) runs on every published frame in ~2.5 ms; on random
patient text drawn over the image it still lets some lines through (docs/redaction.md: bold grey text over
bright tissue, small text whose letters touch, line ends merged into tissue). A stored capture outlives the
exam, so before one is written this detector looks again: PP-OCRv4's DB text detector (PaddleOCR, Apache-2.0;
engines/redact_models/README.md), ~0.3-0.4 s per capture on one core, off the live loop (the exam writer's
thread). Its boxes are blanked on top of engines.redact's.

Pipeline: the crop scaled so its long side is LONG_SIDE (a multiple of 32, the network's stride), BGR
normalised to [-1, 1] -> a per-pixel text probability map; pixels > PIXEL_THRESHOLD, 8-connected regions
whose mean probability is >= BOX_THRESHOLD; each region's box grown by DB's unclip distance (area x UNCLIP /
perimeter: the network is trained on shrunk text regions) and a halo, then scaled back to the image.
On ultrasound the network also fires on tissue, in two shapes that a line of overlay text never has, so a
region must be:
- at least MIN_ASPECT times wider than tall (rows of bright, regular structures such as a fetal spine's
  vertebrae come out squarish);
- at most MAX_LINE_HEIGHT of the image high (speckled tissue can come out as regions a quarter of the
  image high; scanner text is a few percent of the frame: tools/stress_redaction.py draws 1.5-3.5 %).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .redact import TextBox, blanked

MODEL = Path(__file__).resolve().parent / "redact_models" / "ppocrv4_det.onnx"
LONG_SIDE = 960          # text with a cap height of ~1.5 % of the frame is ~10 px here: small text needs this
PIXEL_THRESHOLD = 0.3    # DB's binarisation threshold (PaddleOCR's default)
BOX_THRESHOLD = 0.5      # mean probability of a region (PaddleOCR's default)
UNCLIP = 1.6             # PaddleOCR's unclip ratio
MIN_ASPECT = 2.0         # region width / height: text lines are wide; anatomy the network mistakes is not
MAX_LINE_HEIGHT = 0.06   # region height / image height: taller is tissue, not a line of text
HALO = 2                 # network pixels added around each box (antialiased edges of the letters)


class LearnedTextDetector:
    """Text boxes of a BGR image, in its own pixel coordinates. One ONNX Runtime session, built on first use
    (the runtime only pays for it when a capture is stored)."""

    def __init__(self, model: str | Path = MODEL, threads: int = 1):
        self.model = Path(model)
        if not self.model.is_file():
            raise FileNotFoundError(f"text detector model not found: {self.model}")
        self.threads = threads
        self._session = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            self._session = ort.InferenceSession(str(self.model), opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        return self._session.run(None, {self._input: x})[0][0, 0]

    def probability_map(self, bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(text probability per network pixel, x scale, y scale from the map back to the image)."""
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        h, w = bgr.shape[:2]
        s = LONG_SIDE / max(h, w)
        nw, nh = (max(32, int(round(d * s / 32)) * 32) for d in (w, h))
        x = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = x.astype(np.float32) * (2.0 / 255.0) - 1.0
        prob = self._run(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        return prob, w / nw, h / nh

    def boxes(self, bgr: np.ndarray) -> list[TextBox]:
        prob, fx, fy = self.probability_map(bgr)
        h, w = bgr.shape[:2]
        n, lab, stats, _ = cv2.connectedComponentsWithStats((prob > PIXEL_THRESHOLD).astype(np.uint8), connectivity=8)
        if n <= 1:
            return []
        mean_prob = np.bincount(lab.ravel(), weights=prob.ravel(), minlength=n) / np.maximum(stats[:, 4], 1)
        out = []
        for i in range(1, n):
            x0, y0, bw, bh, area = (int(v) for v in stats[i])
            if (min(bw, bh) < 2 or bw < MIN_ASPECT * bh or bh > MAX_LINE_HEIGHT * prob.shape[0]
                    or mean_prob[i] < BOX_THRESHOLD):
                continue
            grow = area * UNCLIP / (2 * (bw + bh)) + HALO
            out.append(TextBox(max(0, int((x0 - grow) * fx)), max(0, int((y0 - grow) * fy)),
                               min(w, int(np.ceil((x0 + bw + grow) * fx))), min(h, int(np.ceil((y0 + bh + grow) * fy)))))
        return sorted(out)

    def redact(self, image: np.ndarray) -> tuple[np.ndarray, list[TextBox]]:
        """A copy of `image` with this detector's boxes blanked (black), and the boxes; `image` itself when
        there are none."""
        found = self.boxes(image)
        return blanked(image, found), found
