"""Bounded run statistics: a run may last all day, so nothing grows with the number of frames.

`LatencyHistogram` keeps counts in fixed log-spaced bins (0.01 ms .. 100 s, 0.8 % wide): any
quantile is read back to within one bin; the exact maximum is kept beside it. 16 KB, whatever
the run length (the per-frame list it replaces grew ~1 KB/s: ~86 MB a day).
"""
from __future__ import annotations

import numpy as np

LO_MS, HI_MS, BINS = 0.01, 1e5, 2000


class LatencyHistogram:
    def __init__(self):
        self.edges = np.geomspace(LO_MS, HI_MS, BINS + 1)
        self._log_lo = np.log(LO_MS)
        self._per_log = BINS / (np.log(HI_MS) - np.log(LO_MS))
        self.counts = np.zeros(BINS + 2, np.int64)     # [below LO, bins..., above HI]
        self.n = 0
        self.max = float("-inf")
        self.min = float("inf")

    def append(self, ms: float) -> None:
        ms = float(ms)
        if ms < LO_MS:
            i = 0
        elif ms >= HI_MS:
            i = BINS + 1
        else:
            i = 1 + min(BINS - 1, int((np.log(ms) - self._log_lo) * self._per_log))
        self.counts[i] += 1
        self.n += 1
        self.max = max(self.max, ms)
        self.min = min(self.min, ms)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), as the geometric middle of its bin, clamped to [min, max]."""
        if not self.n:
            return float("nan")
        rank = q * (self.n - 1)
        i = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if i == 0:
            value = LO_MS
        elif i > BINS:
            value = HI_MS
        else:
            value = float(np.sqrt(self.edges[i - 1] * self.edges[i]))
        return min(max(value, self.min), self.max)
