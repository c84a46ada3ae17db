"""`sonoplane check`: is this box ready? Opens the source and the model, runs a few frames through
crop, redaction and inference, and reports health in a few lines (for installers and supervisors).

Exit status: 0 healthy; 2 configuration error (the model or the source cannot be used: one line
saying why); 3 unhealthy (the source opened, or is being waited for, but did not deliver
--frames frames within --timeout seconds).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from engines.errors import UserError

UNHEALTHY = 3


def main(args) -> int:
    from engines.crop import CropTracker
    from engines.redact import redact_text

    from ..capture import CaptureOptions, CaptureProcess
    from ..infer import PlaneClassifier
    from .run import pipeline_config

    cfg = pipeline_config(args, args.source)        # unsupported URL, missing file: exit 2
    t0 = time.monotonic()
    clf = PlaneClassifier(cfg.model, backend=cfg.backend, threads=cfg.threads)   # validated at load
    info = clf.info
    print(f"model    ok  {info.model_id} (sha256 {info.short_hash}), {info.channels}x{info.height}x{info.width} "
          f"input, {len(info.labels)} labels, loaded and validated in {time.monotonic() - t0:.1f} s")
    opts = CaptureOptions(cfg.source, fast=True, pix_fmt=cfg.pix_fmt, size=cfg.size,
                          open_deadline_s=args.timeout, reconnect=False)
    tracker = CropTracker(cfg.crop or info.crop_preset or "auto")
    infer_ms, redact_ms, planes, frames = [], [], {}, 0
    deadline = time.monotonic() + args.timeout
    first_frame_s = None
    t_open = time.monotonic()
    with CaptureProcess(opts) as cap:
        while frames < args.frames and time.monotonic() < deadline:
            cap.poll_events()
            if cap.state == "error":
                raise UserError(cap.error or "source error")
            frame = cap.next_frame(timeout_s=0.2)
            if frame is None:
                if cap.finished:
                    break
                continue
            if first_frame_s is None:
                first_frame_s = time.monotonic() - t_open
            rect = tracker.update(frame.image)
            roi = rect.apply(frame.image)
            t = time.perf_counter()
            redact_text(np.ascontiguousarray(roi))
            t1 = time.perf_counter()
            pred = clf.predict(roi)
            redact_ms.append((t1 - t) * 1e3)
            infer_ms.append((time.perf_counter() - t1) * 1e3)
            planes[pred.plane] = planes.get(pred.plane, 0) + 1
            frames += 1
        src = cap.source_info
        state, message, decode_errors = cap.state, cap.state_message, cap.decode_errors
    if frames == 0:
        print(f"source   FAIL {cfg.source}: no frame within {args.timeout:g} s (state {state}"
              f"{': ' + message if message else ''})")
        return UNHEALTHY
    print(f"source   ok  {cfg.source}: {src.get('width')}x{src.get('height')} {src.get('pix_fmt')} "
          f"{src.get('fps')} fps, first frame after {first_frame_s:.1f} s, {decode_errors} damaged packets")
    print(f"crop     ok  {rect.as_list()} of {frame.image.shape[1]}x{frame.image.shape[0]}")
    print(f"frames   {frames} classified: inference median {np.median(infer_ms):.1f} ms, "
          f"redaction median {np.median(redact_ms):.1f} ms; planes seen "
          + ", ".join(f"{k} {v}" for k, v in sorted(planes.items(), key=lambda kv: -kv[1])))
    if frames < args.frames:
        print(f"health   FAIL only {frames} of {args.frames} frames within {args.timeout:g} s")
        return UNHEALTHY
    print("health   ok")
    return 0


def register(sub) -> None:
    from .run import add_pipeline_arguments

    p = sub.add_parser("check", help="open the source and model, run a few frames, report health (exit 0/2/3)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, metavar="SRC")
    p.add_argument("--frames", type=int, default=30, help="frames to run (default 30)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the source and the frames (default 20)")
    add_pipeline_arguments(p)
    p.set_defaults(func=main)
