"""Latency statistics for sonoplane result messages (numpy only, so tests and tools share them).

A result message (docs/messages.md) carries `stages`: the `time.monotonic()` END time of each
stage, in order capture, preprocess, infer, smooth, publish. CLOCK_MONOTONIC is system-wide on
Linux, so a subscriber on the same host can stamp its own receive time and get
capture->subscriber. Everything here turns those stamps into per-stage durations (ms) and
summarises them; `tools/latency_report.py` prints and plots them.

Terms used in the tables:
    pXX       percentile XX (numpy's linear interpolation)
    tail      p100 - p95: how far the worst frame sits above the bulk of the slow frames
    flatness  p90 - p10: spread of the typical frame (small = steady latency)
    warm-up   first frames (and/or first seconds) dropped: ORT session warm-up, page faults, caches
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from engines.errors import UserError

STAGE_ORDER = ("capture", "preprocess", "infer", "smooth", "publish")
# Adjacent stage pairs, then the end-to-end spans. "a->b" = stages[b] - stages[a].
STAGE_SPANS = tuple(f"{a}->{b}" for a, b in zip(STAGE_ORDER, STAGE_ORDER[1:])) + ("capture->publish",)
SUBSCRIBER_SPAN = "capture->subscriber"
ALL_SPANS = STAGE_SPANS + (SUBSCRIBER_SPAN,)

# Percentiles reported; "p99.9" needs >= 1000 frames to mean more than "max".
PERCENTILES = (10, 50, 90, 95, 99, 99.9)
DEFAULT_WARMUP_FRAMES = 30


def stage_durations_ms(result: dict, received_mono: float | None = None) -> dict[str, float]:
    """Per-stage durations (ms) of one result message; adds capture->subscriber when the
    subscriber's own time.monotonic() at receipt is given. Raises ValueError when a stage
    stamp is missing or the stamps run backwards (a broken publisher, never a real latency)."""
    stages = result.get("stages") if isinstance(result, dict) else None
    if not isinstance(stages, dict):
        raise ValueError("result message has no 'stages' map")
    missing = [s for s in STAGE_ORDER if not isinstance(stages.get(s), (int, float))]
    if missing:
        raise ValueError(f"result message lacks stage stamp(s): {', '.join(missing)}")
    out: dict[str, float] = {}
    for a, b in zip(STAGE_ORDER, STAGE_ORDER[1:]):
        out[f"{a}->{b}"] = (stages[b] - stages[a]) * 1e3
    out["capture->publish"] = (stages["publish"] - stages["capture"]) * 1e3
    if received_mono is not None:
        out[SUBSCRIBER_SPAN] = (received_mono - stages["capture"]) * 1e3
    if min(out.values()) < 0:
        worst = min(out, key=out.get)
        raise ValueError(f"stage stamps run backwards ({worst} = {out[worst]:.3f} ms)")
    return out


def summarize(values: Iterable[float]) -> dict[str, float]:
    """count, mean, min, p10..p99.9, max, tail (p100 - p95), flatness (p90 - p10).
    An empty input gives {"count": 0} (callers print '-' rather than invent a figure)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    pct = np.percentile(a, PERCENTILES)
    out = {"count": int(a.size), "mean": float(a.mean()), "min": float(a.min())}
    out.update({_pname(q): float(v) for q, v in zip(PERCENTILES, pct)})
    out["max"] = float(a.max())
    out["tail"] = out["max"] - out["p95"]
    out["flatness"] = out["p90"] - out["p10"]
    return out


def _pname(q: float) -> str:
    return f"p{q:g}"


def warmup_keep_mask(capture_times: Sequence[float], frames: int = DEFAULT_WARMUP_FRAMES,
                     seconds: float = 0.0) -> np.ndarray:
    """Boolean mask keeping results after the warm-up: the first `frames` results AND every result
    captured less than `seconds` after the first one are dropped (both rules apply)."""
    t = np.asarray(capture_times, dtype=np.float64)
    keep = np.ones(t.size, dtype=bool)
    keep[: max(0, int(frames))] = False
    if seconds > 0 and t.size:
        keep &= t >= t[0] + seconds
    return keep


def model_ran(result: dict) -> bool:
    """False for frames the pipeline did not classify (blank: no ultrasound image, so no inference
    and an empty `topk`). Their latency is real but model-independent, so by default they are left
    out of the tables: ~5 ms blank frames would pull p50 down and dilute ratios between models."""
    return bool(result.get("topk"))


def drop_warmup(results: Sequence[dict], frames: int = DEFAULT_WARMUP_FRAMES, seconds: float = 0.0,
                received: Sequence[float] | None = None,
                include_blank: bool = True) -> tuple[list[dict], list[float] | None]:
    """Results (and their receive times, if any) after the warm-up, in order; without
    include_blank, also without the frames where the model did not run (see model_ran).
    The warm-up is counted on all results, before blank frames are removed."""
    mask = warmup_keep_mask([r["t_capture_mono"] for r in results], frames, seconds)
    if not include_blank:
        mask &= np.array([model_ran(r) for r in results], dtype=bool)
    kept = [r for r, k in zip(results, mask) if k]
    kept_recv = [t for t, k in zip(received, mask) if k] if received is not None else None
    return kept, kept_recv


def stage_table(results: Sequence[dict], received: Sequence[float] | None = None,
                warmup_frames: int = DEFAULT_WARMUP_FRAMES, warmup_seconds: float = 0.0,
                include_blank: bool = True) -> dict[str, dict]:
    """{span: summarize(...)} over the results left after the warm-up, spans in pipeline order."""
    if received is not None and len(received) != len(results):
        raise ValueError("one receive time per result is needed")
    kept, recv = drop_warmup(results, warmup_frames, warmup_seconds, received, include_blank)
    per = [stage_durations_ms(r, recv[i] if recv is not None else None) for i, r in enumerate(kept)]
    spans = ALL_SPANS if received is not None else STAGE_SPANS
    return {s: summarize(p[s] for p in per) for s in spans}


def span_values(results: Sequence[dict], span: str = "capture->publish",
                warmup_frames: int = DEFAULT_WARMUP_FRAMES, warmup_seconds: float = 0.0,
                include_blank: bool = True) -> list[float]:
    kept, _ = drop_warmup(results, warmup_frames, warmup_seconds, include_blank=include_blank)
    return [stage_durations_ms(r)[span] for r in kept]


def classified_fps(results: Sequence[dict]) -> float:
    """Results per second of capture time (first to last result); 0 with fewer than 2 results."""
    if len(results) < 2:
        return 0.0
    span = results[-1]["t_capture_mono"] - results[0]["t_capture_mono"]
    return (len(results) - 1) / span if span > 0 else 0.0


def read_results_jsonl(path: str | Path) -> list[dict]:
    """Result messages from a `sonoplane run --record` file, in order. UserError on a missing
    file, a line that is not JSON, or a file without results."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    results = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}:{n}: not a JSON line ({exc.msg})") from None
        if isinstance(row, dict) and row.get("kind", "result") == "result" and "stages" in row:
            results.append(row)
    if not results:
        raise UserError(f"{p}: no result messages (is it a `sonoplane run --record` file?)")
    return results


def glass_to_glass_ms(source_fps: float, processing_ms: float, display_hz: float = 60.0) -> dict[str, float]:
    """Estimate from its parts: one source frame of capture (the scanner/grabber delivers a frame
    once it is complete: 1/fps), the measured processing (capture->publish, or ->subscriber),
    rounded UP to the display's next vsync (the overlay can only show it at a refresh), plus one
    vsync of display scan-out. Camera/scanner internal delay and panel response are not included."""
    if source_fps <= 0 or display_hz <= 0:
        raise ValueError("source fps and display rate must be positive")
    frame = 1000.0 / source_fps
    vsync = 1000.0 / display_hz
    rounded = math.ceil(processing_ms / vsync - 1e-9) * vsync
    return {"capture_frame_ms": frame, "processing_ms": processing_ms, "processing_vsync_ms": rounded,
            "display_ms": vsync, "total_ms": frame + rounded + vsync}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats with 1 decimal (2 for values < 10), None as '-'."""
    def cell(v: object) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def stage_markdown(table: dict[str, dict]) -> str:
    """The per-stage table (ms) as markdown."""
    cols = ("p50", "p90", "p99", "p99.9", "max", "tail", "flatness", "mean")
    rows = [[span] + [s.get(c) for c in cols] + [s.get("count", 0)] for span, s in table.items()]
    return markdown_table(("stage (ms)",) + cols + ("n",), rows)
