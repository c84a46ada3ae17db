"""Metrics for labelled-video benches and latency reports (numpy only; used by tools/)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def percentiles(values, drop_first: int = 0) -> dict[str, float]:
    """p50/p90/p99/p99.9/max, tail (p100 - p95) and flatness (p90 - p10), in the input's unit."""
    a = np.asarray(values, np.float64)[drop_first:]
    if a.size == 0:
        return {"count": 0}
    p = lambda q: float(np.percentile(a, q))
    return {"count": int(a.size), "mean": float(a.mean()), "p10": p(10), "p50": p(50), "p90": p(90),
            "p99": p(99), "p99.9": p(99.9), "max": float(a.max()), "tail": float(a.max()) - p(95),
            "flatness": p(90) - p(10)}


def stage_durations_ms(result: dict, received_mono: float | None = None) -> dict[str, float]:
    """Per-stage durations of one result message (monotonic stage end-times -> ms)."""
    st = result["stages"]
    order = ["capture", "preprocess", "infer", "smooth", "publish"]
    out = {f"{a}->{b}": (st[b] - st[a]) * 1e3 for a, b in zip(order, order[1:])}
    out["capture->publish"] = (st["publish"] - st["capture"]) * 1e3
    if received_mono is not None:
        out["capture->subscriber"] = (received_mono - st["capture"]) * 1e3
    return out


def macro_f1(truth: list[str], pred: list[str]) -> float:
    classes = sorted(set(truth))
    f1s = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        fp = sum(t != c and p == c for t, p in zip(truth, pred))
        fn = sum(t == c and p != c for t, p in zip(truth, pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


@dataclass
class Segment:
    plane: str
    start_t: float
    end_t: float


def stable_segments(times: list[float], kinds: list[str], planes: list[str]) -> list[Segment]:
    """Runs of consecutive `stable` ground-truth frames with one plane."""
    segs: list[Segment] = []
    for t, k, p in zip(times, kinds, planes):
        if k == "stable" and p:
            if segs and segs[-1].plane == p and segs[-1].open:
                segs[-1].end_t = t
                continue
            s = Segment(p, t, t)
            s.open = True
            segs.append(s)
        elif segs:
            segs[-1].open = False
    return segs


def flicker_per_min(seg_results: list[list[str]], seg_minutes: list[float]) -> float:
    """Changes of the smoothed label inside stable segments, per minute of stable video."""
    changes = sum(sum(a != b for a, b in zip(r, r[1:])) for r in seg_results)
    minutes = sum(seg_minutes)
    return changes / minutes if minutes > 0 else 0.0


def time_to_stable(seg: Segment, times: list[float], shown: list[str], hold_s: float = 0.5) -> float | None:
    """From the segment's first stable frame to the first frame whose smoothed label is right and
    stays right for hold_s (within the segment). None if it never settles (callers count the
    segment's length and say so)."""
    idx = [i for i, t in enumerate(times) if seg.start_t <= t <= seg.end_t]
    for j, i in enumerate(idx):
        if shown[i] != seg.plane:
            continue
        window = [k for k in idx[j:] if times[k] <= times[i] + hold_s]
        if times[idx[-1]] < times[i] + hold_s:
            return None                      # not enough segment left to prove it stays
        if all(shown[k] == seg.plane for k in window):
            return times[i] - seg.start_t
    return None
