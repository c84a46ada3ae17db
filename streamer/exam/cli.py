"""`--exam` options shared by `sonoplane run` and `sonoplane demo`."""
from __future__ import annotations

import sys
from pathlib import Path

from engines.errors import UserError


def add_exam_arguments(p, default_dir: str | None = None, default_exam: str | None = None,
                       default_control: str | None = None) -> None:
    from .control import DEFAULT_CONTROL
    from .protocol import shipped_protocols

    g = p.add_argument_group("exam guidance (docs/exam.md)")
    g.add_argument("--exam", metavar="NAME|PATH", default=default_exam,
                   help=f"run an exam protocol: {', '.join(shipped_protocols())}, or a .toml file"
                        + (f" (default {default_exam}; 'none' for no exam)" if default_exam else ""))
    g.add_argument("--exam-dir", metavar="DIR", default=default_dir,
                   help="where exam.json, captures and report.html go" +
                        (f" (default {default_dir})" if default_dir else " (required with --exam)"))
    g.add_argument("--exam-min-probability", type=float, metavar="P",
                   help="calibrated probability of the view a frame needs to be captured (default 0.80)")
    g.add_argument("--exam-dwell", type=float, metavar="S",
                   help="seconds the view must be stably shown before a frame can be captured (default 0.10)")
    g.add_argument("--exam-confirm", type=float, metavar="S",
                   help="seconds the view must stay shown after a frame before it is kept (default 0.45)")
    control = default_control or DEFAULT_CONTROL
    g.add_argument("--exam-control", metavar="ADDR", default=control,
                   help=f"operator control endpoint, ZeroMQ REP on loopback (default {control}; 'none' to disable)")


def attach_exam(pipeline, args, require_pair: bool = True) -> None:
    """Set pipeline.exam from --exam/--exam-dir (protocol checked against the loaded model)."""
    if not args.exam or args.exam == "none":
        if args.exam_dir and require_pair:
            raise UserError("--exam-dir needs --exam NAME|PATH")
        return
    if not args.exam_dir:
        raise UserError("--exam needs --exam-dir DIR (where exam.json, captures and the report go)")
    d = Path(args.exam_dir)
    if d.exists() and not d.is_dir():
        raise UserError(f"--exam-dir {d}: exists and is not a folder")
    from .runner import ExamRunner
    from .session import CaptureConfig
    knobs = {"min_probability": args.exam_min_probability, "min_run_s": args.exam_dwell,
             "confirm_s": args.exam_confirm}
    for k, v in knobs.items():
        if v is not None and not 0 <= v <= (1 if k == "min_probability" else 10):
            raise UserError(f"--exam-{k.replace('_s', '').replace('_', '-').replace('min-run', 'dwell')}: out of range ({v})")
    config = CaptureConfig(**{k: v for k, v in knobs.items() if v is not None})
    try:
        pipeline.exam = ExamRunner(args.exam, d, pipeline.classifier.info, pipeline.model_meta,
                                   pipeline.cfg.source, control=args.exam_control, config=config, log=print,
                                   redact=pipeline.cfg.redact)
    except FileNotFoundError as exc:    # the capture text detector's model file is gone from the install
        raise UserError(f"--exam: {exc}") from exc
    ex = pipeline.exam
    print(f"sonoplane exam: {ex.protocol.name} ({len(ex.protocol.views)} views) -> {d.resolve()}/exam.json"
          + (f"; controls on {ex.control.address}" if ex.control else ""), file=sys.stderr)
