"""`sonoplane overlay`: subscribe to results and show them (window, annotated MP4 or web page)."""
from __future__ import annotations

import os
import signal
import sys
import threading

from engines.errors import UserError


def main(args) -> int:
    if args.curve_server_key:
        from ..overlay import subscriber
        subscriber.CURVE_SERVER_KEY = args.curve_server_key
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    modes = [m for m in (args.window, args.record, args.web) if m]
    if len(modes) > 1:
        raise UserError("choose one of --window, --record, --web")
    try:
        if args.record:
            from ..overlay.recorder import record_overlay
            n = record_overlay(args.connect, args.record, stop, fps=args.fps, stale_after_s=args.stale_after,
                               stream=args.stream, duration_s=args.duration)
            print(f"wrote {n} frames to {args.record}")
        elif args.web:
            from ..overlay.web import serve_web
            if args.duration:
                threading.Timer(args.duration, stop.set).start()
            serve_web(args.connect, args.web, stop, stale_after_s=args.stale_after, stream=args.stream,
                      on_ready=lambda url: print(f"overlay page: {url}", flush=True), token=args.token,
                      insecure=args.insecure, control=args.control)
        else:
            from ..overlay.window import show_window
            if not args.window and not os.environ.get("DISPLAY"):
                raise UserError("no screen here: use --record OUT.mp4 or --web 127.0.0.1:8090")
            show_window(args.connect, stop, stale_after_s=args.stale_after, stream=args.stream)
    except KeyboardInterrupt:
        stop.set()
    return 0


def register(sub) -> None:
    p = sub.add_parser("overlay", help="show published results: OpenCV window, annotated MP4, or web page")
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="the publisher's address")
    p.add_argument("--stream", default="", help="only this stream id (default: any)")
    p.add_argument("--window", action="store_true", help="OpenCV window (default where there is a screen)")
    p.add_argument("--record", metavar="OUT.mp4", help="write the annotated overlay as H.264 MP4")
    p.add_argument("--web", metavar="HOST:PORT", help="serve the overlay page, e.g. 127.0.0.1:8090")
    p.add_argument("--token", help="--web: require ?token=TOKEN on every request (needed beyond loopback)")
    p.add_argument("--insecure", action="store_true", help="--web: allow a non-loopback bind without --token")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the publisher's CURVE public key file (a publisher bound beyond loopback)")
    p.add_argument("--control", metavar="ADDR",
                   help="--web: the exam control endpoint (default: the one the exam topic announces)")
    p.add_argument("--stale-after", type=float, default=0.5, help="seconds after which a result is shown as STALE")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--fps", type=float, default=30, help="--record frame rate")
    p.set_defaults(func=main)
