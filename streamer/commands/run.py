"""`sonoplane run`: a video source through the whole pipeline, results published over ZeroMQ."""
from __future__ import annotations

import signal
import sys

from engines.errors import UserError


def add_pipeline_arguments(p) -> None:
    p.add_argument("--fast", action="store_true",
                   help="process every frame as fast as possible (files); default: native rate, newest frame wins")
    p.add_argument("--model", help="plane model: shipped name (see `sonoplane models`) or .onnx path")
    p.add_argument("--anomaly-model", default="default",
                   help="brain anomaly model: name, path, or 'none' (default: the shipped one, if any)")
    p.add_argument("--subplane-model", default=None, metavar="NAME",
                   help="a second plane model that splits brain into its sub-planes while the stable plane is "
                        "brain (e.g. planes_lite0 beside a plane model that lost them); the plane model keeps "
                        "the plane, 'other' and open-set (docs/models/README.md)")
    p.add_argument("--subplane-every", type=float, default=None, metavar="S",
                   help="with --subplane-model: run it once per S seconds (media time for files) on a worker "
                        "thread and hold its brain split in between, instead of on every brain frame "
                        "(default 0: every brain frame; docs/latency.md, Session 6)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "torch"))
    p.add_argument("--threads", type=int, default=1,
                   help="inference threads (default 1: capture needs the other core of a 2-core box)")
    p.add_argument("--cpu-affinity", default="off", metavar="SPEC",
                   help="Linux: pin the parts to CPUs, e.g. capture=0,loop=1,workers=0 (roles capture, loop, "
                        "model, workers), 'auto' (capture=0,loop=1,model=0,workers=0) or 'off' (default; streamer/affinity.py)")
    p.add_argument("--realtime-priority", default="off", metavar="SPEC",
                   help="Linux: SCHED_FIFO for the loop thread ('10'), or per role loop=N,model=N,capture=N "
                        "(model: the plane model's extra intra-op threads, needs --threads 2+; capture: the "
                        "capture process); needs root / CAP_SYS_NICE / ulimit -r; default off (streamer/realtime.py)")
    p.add_argument("--decode-threads", default="size", metavar="TYPE[:N]",
                   help="PyAV decoder threading: size (default: one thread up to 1080p, FFmpeg's frame threads "
                        "above), auto (FFmpeg's choice), frame, slice or none, optionally :N threads")
    p.add_argument("--catch-up-ms", default="auto", metavar="MS",
                   help="native rate: when the loop is free and an older frame is still waiting behind the newest "
                        "(a decoder burst before a keyframe), process it first if it can still be published within "
                        "MS of its capture; auto (default): one frame period of the source; 0: newest frame only "
                        "(streamer/capture.py, docs/latency.md Session 8)")
    p.add_argument("--skip-loop-filter", default="off", metavar="WHICH",
                   help="H.264/HEVC: decode without the deblocking filter on noref, bidir, nokey or all "
                        "frames: less decode CPU, slightly different pixels (default off; docs/latency.md, Session 7)")
    p.add_argument("--opencv-threads", type=int, default=1, metavar="N",
                   help="OpenCV threads in this process (default 1: each call on its caller's thread; "
                        "0: OpenCV's default, one per core; the pixels are the same)")
    p.add_argument("--crop", help="auto | none | a preset name (default: the model's preset, else auto)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555", help="ZeroMQ PUB address to bind")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="--publish beyond loopback: encrypt with ZeroMQ CURVE using this server key pair "
                        "(python -m streamer.netsec keys DIR); subscribers need its public key")
    p.add_argument("--curve-clients", metavar="DIR",
                   help="with --curve-secret: only subscribers whose public key files are in DIR")
    p.add_argument("--insecure", action="store_true",
                   help="allow --publish beyond loopback without CURVE (patient images in the clear)")
    p.add_argument("--stream-id", default="0", help="stream id in topics and messages")
    p.add_argument("--record", metavar="FILE.jsonl", help="write every published result as one JSON line")
    p.add_argument("--no-frames", action="store_true", help="do not publish the frames topic")
    p.add_argument("--frames-fps", type=float, default=30.0,
                   help="frames topic: at most this many JPEGs per second, encoded off the hot path "
                        "(default 30; 0: every frame)")
    p.add_argument("--max-frames", type=int, help="stop after this many captured frames")
    p.add_argument("--pix-fmt", help="V4L2 input pixel format, e.g. mjpeg, yuyv422")
    p.add_argument("--size", help="V4L2/camera capture size, e.g. 1920x1080")
    p.add_argument("--no-reconnect", action="store_true", help="live sources: exit instead of reconnecting")
    p.add_argument("--open-timeout", type=float, metavar="S",
                   help="live sources: give up (exit 2) when the source has not opened after S seconds "
                        "(default: wait forever, status `connecting` every second)")
    p.add_argument("--redact", choices=("on", "off"), default="on",
                   help="blank burned-in text (patient name, dates, UI) in every image published "
                        "(default on; off for research use only)")
    p.add_argument("--no-open-set", action="store_true",
                   help="do not reject non-standard views (the model's open-set distance; docs/smoothing.md)")
    p.add_argument("--quiet", action="store_true", help="no summary")


def pipeline_config(args, source: str):
    from ..pipeline import PipelineConfig
    from ..sources import classify_spec

    kind = classify_spec(source)         # unsupported URL -> one-line error before anything starts
    if kind == "file":
        from pathlib import Path
        path = Path(source[7:] if source.startswith("file://") else source)
        if path.is_dir():
            raise UserError(f"{path} is a directory, not a video file")
        if not path.is_file():
            raise UserError(f"video file not found: {path}")
    if args.frames_fps < 0:
        raise UserError("--frames-fps must be 0 (every frame) or more")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    opencv_threads = getattr(args, "opencv_threads", 1)
    if opencv_threads < 0:
        raise UserError("--opencv-threads must be 0 (OpenCV's default) or more")
    subplane_every = getattr(args, "subplane_every", None)
    if subplane_every is not None and (subplane_every < 0 or subplane_every != subplane_every):
        raise UserError("--subplane-every must be 0 (every brain frame) or more seconds")
    if subplane_every and args.subplane_model in (None, "none"):
        raise UserError("--subplane-every needs --subplane-model")
    from ..affinity import parse_affinity
    from ..sources import parse_decode_threads, parse_skip_loop_filter
    cpu_affinity = getattr(args, "cpu_affinity", None)
    parse_affinity(cpu_affinity)                         # bad input: one line, before anything starts
    decode_threads = getattr(args, "decode_threads", None)
    parse_decode_threads(decode_threads)
    from ..realtime import check_permission, parse_realtime
    realtime = getattr(args, "realtime_priority", None)
    rt = parse_realtime(realtime)
    if rt is not None and rt.model and args.threads < 2:
        raise UserError("--realtime-priority model=N needs --threads 2 or more (the model's extra threads)")
    check_permission(rt)
    skip_loop_filter = parse_skip_loop_filter(getattr(args, "skip_loop_filter", None))
    from ..capture import parse_catch_up
    catch_up_ms = parse_catch_up(getattr(args, "catch_up_ms", "auto"))
    return PipelineConfig(source=source, fast=args.fast, model=args.model, anomaly_model=args.anomaly_model,
                          subplane_model=args.subplane_model, subplane_every_s=subplane_every or 0.0,
                          cpu_affinity=cpu_affinity, decode_threads=decode_threads, realtime=realtime,
                          skip_loop_filter=skip_loop_filter, opencv_threads=opencv_threads,
                          catch_up_ms=catch_up_ms,
                          backend=args.backend, threads=args.threads, publish=args.publish,
                          stream_id=args.stream_id, record=args.record, crop=args.crop,
                          send_frames=not args.no_frames, frames_fps=args.frames_fps or None,
                          max_frames=args.max_frames,
                          pix_fmt=args.pix_fmt, size=args.size, reconnect=not args.no_reconnect,
                          redact=args.redact == "on", open_set=not getattr(args, "no_open_set", False),
                          open_deadline_s=args.open_timeout, curve_secret=args.curve_secret,
                          curve_clients=args.curve_clients, insecure=args.insecure)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_stop_signals(*pipelines) -> None:
    """SIGINT (Ctrl-C), SIGTERM (systemd, docker stop) and SIGHUP (terminal closed) all end the
    run the same clean way: the loop stops, --record is flushed, a final status is published, the
    socket is closed and the capture process joined. Exit status 128 + the signal number."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: [p.request_stop(signum) for p in pipelines])


def finish(summary, quiet: bool) -> int:
    if not quiet and summary.classified:
        print(summary.format())
    if summary.stopped_by:
        print(f"sonoplane: stopped by {summary.stopped_by}", file=sys.stderr)
        return 128 + int(signal.Signals[summary.stopped_by])
    if summary.error:
        raise UserError(summary.error)
    return 0


def main(args) -> int:
    from ..exam.cli import attach_exam
    from ..pipeline import Pipeline

    sources = args.source
    from ..affinity import is_off
    if len(sources) > 1 and not is_off(getattr(args, "cpu_affinity", None)):
        raise UserError("--cpu-affinity is for one --source (run one process per source to pin each)")
    from ..realtime import is_off as realtime_off
    if len(sources) > 1 and not realtime_off(getattr(args, "realtime_priority", None)):
        raise UserError("--realtime-priority is for one --source (run one process per source)")
    if len(sources) > 1:             # several scanners: one model session, cross-stream batching
        from ..multistream import run_many
        return run_many(args, sources)
    cfg = pipeline_config(args, sources[0])
    pipeline = Pipeline(cfg, log=print)
    install_stop_signals(pipeline)
    attach_exam(pipeline, args)
    pipeline.publisher = pipeline.open_publisher()      # bound now: the message names the real port
    if not args.quiet:
        print(f"sonoplane: {cfg.source} -> {pipeline.publisher.address} (model {pipeline.classifier.info.model_id}, "
              f"{'fast' if cfg.fast else 'native rate'})", file=sys.stderr)
    code = finish(pipeline.run(), args.quiet)
    if pipeline.exam_report is not None:
        print(f"exam report: {pipeline.exam_report.resolve()}")
    return code


def register(sub) -> None:
    p = sub.add_parser("run", help="classify a video source live and publish results over ZeroMQ",
                       description="SRC: a video file, udp:// rtsp:// srt:// tcp:// http:// URL, "
                                   "/dev/videoN (V4L2), or a camera index.")
    p.add_argument("--source", required=True, metavar="SRC", action="append",
                   help="repeat for several sources: one model session with cross-stream batching, "
                        "stream ids 0..N-1 (or --stream-id a,b,...) on one publish address")
    add_pipeline_arguments(p)
    from ..exam.cli import add_exam_arguments
    add_exam_arguments(p)
    p.set_defaults(func=main)
