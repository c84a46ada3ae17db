"""`sonoplane demo`: the bundled clip through the whole pipeline with an exam: annotated video and exam report out."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLE_CLIP = ASSETS / "sample_scan.mp4"


def main(args) -> int:
    from ..overlay.recorder import record_overlay
    from ..pipeline import Pipeline
    from .run import finish, pipeline_config

    from ..exam.cli import attach_exam
    cfg = pipeline_config(args, str(args.source))
    pipeline = Pipeline(cfg, log=print)
    attach_exam(pipeline, args, require_pair=False)
    # The overlay subscribes to the pipeline's real PUB socket, as a second screen would.
    from ..publish import Publisher
    stop = threading.Event()
    out = Path(args.out)
    print(f"sonoplane demo: {cfg.source} ({'fast' if cfg.fast else 'native rate'}), "
          f"model {pipeline.classifier.info.model_id}, overlay -> {out}", file=sys.stderr)
    pub = Publisher(cfg.publish, cfg.stream_id, cfg.send_frames, cfg.record)
    pipeline.publisher = pub
    recorder = threading.Thread(target=record_overlay, name="overlay-recorder",
                                args=(pub.address, out, stop), kwargs={"fps": args.fps}, daemon=True)
    recorder.start()
    time.sleep(0.3)   # let the subscriber connect before the first result (ZeroMQ slow joiner)
    try:
        summary = pipeline.run()
    finally:
        time.sleep(0.3)
        stop.set()
        recorder.join(timeout=30)
    code = finish(summary, args.quiet)
    print(f"annotated video: {out.resolve()}")
    if pipeline.exam_report is not None:
        print(f"exam report: {pipeline.exam_report.resolve()}  (checklist: {pipeline.exam.root.resolve()}/exam.json)")
    return code


def register(sub) -> None:
    from .run import add_pipeline_arguments

    p = sub.add_parser("demo", help="the bundled sample clip through the whole pipeline with an exam; writes an annotated video and an exam report")
    p.add_argument("--source", default=str(SAMPLE_CLIP), help=f"video (default: the bundled {SAMPLE_CLIP.name})")
    p.add_argument("--out", default="sonoplane_demo.mp4", help="annotated video to write")
    p.add_argument("--fps", type=float, default=30, help="overlay video frame rate")
    add_pipeline_arguments(p)
    from ..exam.cli import add_exam_arguments
    add_exam_arguments(p, default_dir="sonoplane_demo_exam", default_exam="fetal-planes-4",
                       default_control="tcp://127.0.0.1:0")
    p.set_defaults(func=main, publish="tcp://127.0.0.1:0")
