#!/usr/bin/env python3
"""The seed-style baseline, so sonoplane's speed-up is a ratio measured on the same video.

What seed 000 describes, per frame, sequentially, at FULL resolution:
    cv2.fastNlMeansDenoising (h=10, 7x7 template, 21x21 search) on the whole grey frame
    -> cv2.equalizeHist on the whole frame -> resize to the network input
    -> an eager torch CNN: SonoNet16 (engines/models/sononet.py), the same network as
       sonoplane's default model, so only the pipeline around it differs.
No crop, no latest-frame policy, no ONNX Runtime. fastNlMeans costs ~0.4 s (720p) to >1 s (1080p)
per frame, so the run is CAPPED at --frames (default 20) and says so.

torch is a tools/engines-only dependency: it is imported here, never in streamer/.
Without ../shared (the authors' SonoNet16 weights) the network runs with random weights: the
timing is the same (same layers, same shapes), the predictions are meaningless and are not used.

    python tools/seed_baseline.py VIDEO [--frames 20] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.errors import UserError  # noqa: E402
from streamer.latency import markdown_table, summarize  # noqa: E402

INPUT_HW = (224, 288)     # SonoNet16's input (H, W), as in the shipped model's metadata


def _load_sononet16():
    """(model, weights description). Authors' weights when ../shared has them, else random."""
    import torch  # noqa: F401  (tools-only dependency)

    from engines.models import create_model
    from engines.models.sononet import DEFAULT_NPZ
    if DEFAULT_NPZ.is_file():
        return create_model("sononet16", pretrained=True).eval(), "authors' SonoNet16 weights"
    return create_model("sononet16").eval(), "random weights (../shared absent; timing only)"


def run_baseline(video: str | Path, frames: int = 20) -> dict:
    """Per-frame times (ms) of the seed-style pipeline on the first `frames` frames of `video`.

    per-frame latency = decoded frame -> prediction (grey, denoise, equalize, resize, CNN);
    throughput = frames / wall time including decoding, as a sequential loop would run."""
    import av
    import torch

    if frames < 1:
        raise UserError("--frames must be at least 1")
    if not Path(video).is_file():
        raise UserError(f"{video}: no such video file")
    model, weights = _load_sononet16()
    parts: dict[str, list[float]] = {k: [] for k in ("decode", "denoise", "equalize", "cnn", "per_frame")}
    size = None
    try:
        container = av.open(str(video))
    except av.FFmpegError as exc:
        raise UserError(f"{video}: cannot open ({exc})") from None
    with container, torch.inference_mode():
        # Warm the CNN once (first-call allocations) so frame 1 is not an outlier of torch's making.
        model(torch.zeros(1, 1, *INPUT_HW))
        t_loop = time.perf_counter()
        t_dec = t_loop
        for i, f in enumerate(container.decode(video=0)):
            if i >= frames:
                break
            bgr = f.to_ndarray(format="bgr24")
            t0 = time.perf_counter()
            parts["decode"].append((t0 - t_dec) * 1e3)
            size = f"{bgr.shape[1]}x{bgr.shape[0]}"
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            den = cv2.fastNlMeansDenoising(gray, None, h=10, templateWindowSize=7, searchWindowSize=21)
            t1 = time.perf_counter()
            eq = cv2.equalizeHist(den)
            t2 = time.perf_counter()
            x = cv2.resize(eq, INPUT_HW[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
            x = (x - x.mean()) / (x.std() + 1e-6)
            logits, _cam = model(torch.from_numpy(x)[None, None])
            int(logits.argmax())                    # the prediction is taken, as a real loop would
            t3 = time.perf_counter()
            parts["denoise"].append((t1 - t0) * 1e3)
            parts["equalize"].append((t2 - t1) * 1e3)
            parts["cnn"].append((t3 - t2) * 1e3)
            parts["per_frame"].append((t3 - t0) * 1e3)
            t_dec = time.perf_counter()
        wall = time.perf_counter() - t_loop
    n = len(parts["per_frame"])
    if n == 0:
        raise UserError(f"{video}: no video frames decoded")
    return {"video": str(video), "frames": n, "frames_cap": frames, "size": size, "weights": weights,
            "torch_threads": torch.get_num_threads(),
            "per_frame_ms": summarize(parts["per_frame"]),
            "parts_ms_p50": {k: summarize(v)["p50"] for k, v in parts.items() if k != "per_frame"},
            "wall_s": wall, "fps": n / wall}


def format_baseline(b: dict) -> str:
    pf = b["per_frame_ms"]
    parts = ", ".join(f"{k} {v:.0f}" for k, v in b["parts_ms_p50"].items())
    return (f"seed-style baseline on {b['video']} ({b['size']}), first {b['frames']} frames only (capped: "
            f"fastNlMeans at full resolution is slow), {b['weights']}, torch threads {b['torch_threads']}\n"
            + markdown_table(("per-frame ms", "p50", "p90", "max", "mean", "throughput fps"),
                             [["decoded -> prediction", pf["p50"], pf["p90"], pf["max"], pf["mean"], b["fps"]]])
            + f"\nparts p50 (ms): {parts}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=20, help="cap on frames processed (default 20)")
    ap.add_argument("--json", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    try:
        r = run_baseline(args.video, args.frames)
    except UserError as exc:
        print(f"seed_baseline: error: {exc}", file=sys.stderr)
        return 2
    print(format_baseline(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
