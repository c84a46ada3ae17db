"""The live pipeline: capture -> crop -> preprocess -> infer -> image state -> smooth -> publish.

One call per stage, each stamped with time.monotonic() at its end (the `stages` of a result).
Capture runs in its own process (streamer.capture); everything else runs here, in order, on the
newest frame. YUV 4:2:0 video arrives as planes (the luma path, streamer/yuv.py): crop tracking,
blank/frozen detection and preprocessing run on the Y plane, and only the crops that leave the
process (frames topic, exam captures) are converted to colour, on the frames worker.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.planes import NO_IMAGE, UNCERTAIN
from engines.zoo import DEFAULT_ANOMALY_MODEL

from .capture import CaptureOptions, CaptureProcess
from engines.downscale import halve_times
from .affinity import Affinity, parse_affinity, pin_process, pin_thread, process_threads
from .croptrack import BackgroundCropTracker
from .cvthreads import DEFAULT_OPENCV_THREADS, set_opencv_threads
from .realtime import check_permission, parse_realtime, realtime_thread, set_fifo
from engines.errors import SourceError, UserError
from .exam.heatmap import small_cam
from .frames_topic import worker_nice
from .image_state import ImageStateDetector
from .infer import PlaneClassifier, open_model, softmax_with_temperature
from engines.preprocess import Preprocessor
from .publish import DEFAULT_ADDRESS, FRAME_MAX_WIDTH, Publisher
from .runstats import LatencyHistogram
from .smoothing import LabelSmoother, OpenSetGate, SmoothingConfig, smoothing_clock
from .subplanes import SubplaneStage
from .topic_image import redacted_display

STATUS_EVERY_S = 1.0
STALL_AFTER_S = 1.0     # a live source with no frame for this long is reported `stalled`
TIMELINE_KEEP = 1000


@dataclass
class PipelineConfig:
    source: str
    fast: bool = False
    model: str | None = None
    anomaly_model: str | None = "default"    # "default" (shipped, if any), "none", name or path
    subplane_model: str | None = None        # a second plane model for brain sub-planes (streamer/subplanes.py)
    subplane_every_s: float = 0.0            # run it once per this much clock time (0: every brain frame)
    cpu_affinity: str | None = None          # pin capture / loop / model / workers (streamer/affinity.py)
    realtime: str | None = None              # SCHED_FIFO for loop / model / capture (streamer/realtime.py)
    decode_threads: str | None = None        # PyAV decoder threading TYPE[:N] (streamer/sources.py)
    skip_loop_filter: str | None = None      # opt-in, pixel-changing: decode without deblocking
    catch_up_ms: float | None = None         # an older waiting frame's budget (None: one frame period; 0: off)
    opencv_threads: int = DEFAULT_OPENCV_THREADS   # OpenCV's pool in this process (streamer/cvthreads.py)
    backend: str = "onnxruntime"
    threads: int = 1
    publish: str = DEFAULT_ADDRESS
    stream_id: str = "0"
    record: str | None = None
    crop: str | None = None                  # None: the model's preset, else auto
    send_frames: bool = True
    frames_fps: float | None = 30.0          # frames topic rate limit (None/0: every frame)
    max_frames: int | None = None
    pix_fmt: str | None = None
    size: str | None = None
    reconnect: bool = True
    open_timeout_s: float = 5.0
    open_deadline_s: float | None = None     # live: give up when not open after this long (--open-timeout)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    redact: bool = True                      # blank burned-in text in every image that leaves the process
    curve_secret: str | None = None          # --publish beyond loopback: CURVE key pair file (netsec)
    curve_clients: str | None = None         # ... and the allowed client public keys
    insecure: bool = False                   # --publish beyond loopback without CURVE
    open_set: bool = True                    # reject non-standard views when the model has open-set

    def security(self) -> dict:
        return {"curve_secret": self.curve_secret, "curve_clients": self.curve_clients,
                "insecure": self.insecure}


@dataclass
class RunSummary:
    source: str
    model: str
    frames_seen: int = 0         # frames the capture delivered (classified + skipped)
    classified: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    # Bounded (a run may last all day): a fixed-bin histogram and the last TIMELINE_KEEP segments.
    latency_ms: LatencyHistogram = field(default_factory=LatencyHistogram)   # capture -> publish
    timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_KEEP))   # (t_s, plane, label)
    segments: int = 0            # timeline segments in all (the deque keeps the last ones)
    decode_errors: int = 0       # damaged packets skipped by the capture
    restarts: int = 0            # capture processes restarted after dying
    end_state: str = ""
    error: str | None = None
    stopped_by: str | None = None   # signal name when a signal ended the run

    def percentiles(self) -> dict[str, float]:
        if not self.latency_ms:
            return {}
        h = self.latency_ms
        return {"p50": h.quantile(0.5), "p99": h.quantile(0.99), "max": h.max}

    def format(self) -> str:
        pct = self.percentiles()
        fps = self.classified / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"source        {self.source}",
            f"model         {self.model}",
            f"frames        {self.frames_seen} delivered, {self.classified} classified, {self.skipped} skipped"
            + (f", {self.decode_errors} damaged packets skipped" if self.decode_errors else "")
            + (f", {self.restarts} capture restarts" if self.restarts else ""),
            f"throughput    {fps:.1f} classified frames/s over {self.wall_s:.1f} s; "
            f"CPU {self.cpu_s / self.wall_s if self.wall_s else 0:.2f} cores (this process + capture)",
        ]
        if pct:
            lines.append(f"latency       capture->publish p50 {pct['p50']:.1f} ms, p99 {pct['p99']:.1f} ms, "
                         f"max {pct['max']:.1f} ms")
        dropped = self.segments - len(self.timeline)
        lines.append("timeline      (smoothed label segments" + (f"; the last {len(self.timeline)} of {self.segments})"
                                                                  if dropped > 0 else ")"))
        for t, plane, label in self.timeline:
            lines.append(f"  {t:7.2f} s  {plane:<10} {label or ''}")
        if self.error:
            lines.append(f"ended with error: {self.error}")
        return "\n".join(lines)


class AnomalyStage:
    """Brain normal / abnormal / uncertain on frames whose stable plane is brain."""

    def __init__(self, model: str, backend: str, threads: int):
        self.backend = open_model(model, backend, threads, default=model)
        self.info = self.backend.info
        if self.info.task != "anomaly":
            raise UserError(f"{model}: not an anomaly model (task {self.info.task!r})")
        self.preprocess = Preprocessor(self.info)
        self.abnormal = self.info.labels.index("abnormal")
        self.band = self.info.uncertain_band or (0.5, 0.5)

    def __call__(self, roi: np.ndarray, luma_range: str | None = None) -> dict:
        logits = self.backend.infer(self.preprocess(roi, luma_range=luma_range)).logits[0]
        p = float(softmax_with_temperature(logits, self.info.temperature)[self.abnormal])
        lo, hi = self.band
        state = "abnormal" if p >= hi else "normal" if p < lo else "uncertain"
        if lo == hi:
            state = "abnormal" if p >= hi else "normal"
        return {"state": state, "p_abnormal": round(p, 4), "model": self.info.model_id}


def _resolve_anomaly(cfg: PipelineConfig) -> str | None:
    if cfg.anomaly_model in (None, "none"):
        return None
    if cfg.anomaly_model == "default":
        return DEFAULT_ANOMALY_MODEL
    return cfg.anomaly_model


def _cpu_seconds() -> float:
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log=print, classifier: PlaneClassifier | None = None):
        self.cfg = cfg
        self.log = log
        # --realtime-priority: SCHED_FIFO for the loop during run(), the plane model's extra intra-op
        # threads (found as the threads its session adds) and the capture process.
        self.realtime = parse_realtime(cfg.realtime)
        check_permission(self.realtime)          # refused: one line, before anything starts
        # --cpu-affinity: this process's threads go to the loop's CPUs before the models load (their
        # intra-op threads inherit the mask); ONNX Runtime's extra threads may then move to `model`.
        # `auto` puts the workers beside a real-time loop (streamer/affinity.py: the GIL).
        self.affinity = parse_affinity(cfg.cpu_affinity,
                                       realtime_loop=bool(self.realtime and self.realtime.loop))
        aff = self.affinity or Affinity()
        pin_process(aff.loop)
        set_opencv_threads(cfg.opencv_threads)
        rt_model = self.realtime.model if self.realtime else None
        if rt_model and cfg.backend == "onnxruntime":
            import onnxruntime  # noqa: F401  (its import starts a thread of its own, not the model's pool)
        threads_before = process_threads() if aff.model or rt_model else set()
        # Several streams may share one classifier (streamer/multistream.py: one model session).
        self.classifier = classifier or PlaneClassifier(cfg.model, backend=cfg.backend, threads=cfg.threads)
        if rt_model:
            for tid in process_threads() - threads_before:   # the plane model's intra-op pool
                set_fifo(rt_model, tid)
        info = self.classifier.info
        if info.task != "plane":
            raise UserError(f"{info.path}: not a plane model (task {info.task!r})")
        anomaly = _resolve_anomaly(cfg)
        self.anomaly = AnomalyStage(anomaly, cfg.backend, cfg.threads) if anomaly else None
        self.subplanes = (SubplaneStage(cfg.subplane_model, info, cfg.backend, cfg.threads,
                                        every_s=cfg.subplane_every_s, cpus=aff.worker_cpus)
                          if cfg.subplane_model not in (None, "none") else None)
        if aff.model:
            for tid in process_threads() - threads_before:   # the sessions' intra-op pools
                pin_thread(aff.model, tid)
        self._stable_plane: str | None = None    # the last frame's smoothed plane (sub-plane stage)
        # Periodic crop re-detection runs on a worker thread, off the per-frame path.
        self.crop = BackgroundCropTracker(cfg.crop or info.crop_preset or "auto", cpus=aff.worker_cpus)
        # One input tensor, filled in place each frame.
        self._input = np.empty((1, info.channels, info.height, info.width), np.float32)
        self.image_state = ImageStateDetector()
        self.smoother = LabelSmoother(info.labels, info.coarse_map, cfg.smoothing)
        from .sources import classify_spec
        self.source_is_file = classify_spec(cfg.source) == "file"   # media clock (pts) for files
        self.open_set = open_set_gate(info, self.classifier.backend) if cfg.open_set else None
        self.model_meta = {"id": info.model_id, "sha256": info.short_hash, "backend": cfg.backend}
        if self.subplanes is not None:
            self.model_meta["subplane_model"] = self.subplanes.model_id
        self.publisher: Publisher | None = None
        self.exam = None            # streamer.exam.runner.ExamRunner, set by `run --exam`
        self.exam_report: Path | None = None
        self._outgoing: tuple[int, np.ndarray] | None = None
        self.stop = threading.Event()   # set from another thread to end run() (multistream)
        self.stop_signal: int | None = None     # set by request_stop (SIGINT/SIGTERM/SIGHUP handler)

    def open_publisher(self, record: str | None = None) -> Publisher:
        """record: the results file, when not cfg.record (MultiStream gives each stream its own)."""
        cfg = self.cfg
        return Publisher(cfg.publish, cfg.stream_id, cfg.send_frames, record or cfg.record,
                         frames_fps=cfg.frames_fps, frames_worker=True, security=cfg.security(),
                         frames_nice=worker_nice(cfg.fast))

    def request_stop(self, signum: int) -> None:
        """End the run cleanly at the next loop turn (safe to call from a signal handler)."""
        if self.stop_signal is None:
            self.stop_signal = signum

    def run(self) -> RunSummary:
        cfg = self.cfg
        summary = RunSummary(source=cfg.source, model=f"{self.classifier.info.model_id} ({cfg.backend})")
        if self.publisher is None:
            self.publisher = self.open_publisher()
        if self.publisher.frames is not None and self.exam is None:
            self.publisher.frames.prepare = self.frames_topic_image   # colour + redaction on the worker
        if self.publisher.frames is not None and self.affinity is not None:
            self.publisher.frames.pin(self.affinity.worker_cpus)
        if self.exam is not None:
            self.exam.attach(self.publisher)   # sees exactly the results and images that go out
        opts = CaptureOptions(cfg.source, fast=cfg.fast, pix_fmt=cfg.pix_fmt, size=cfg.size,
                              open_timeout_s=cfg.open_timeout_s, reconnect=cfg.reconnect,
                              max_frames=cfg.max_frames, open_deadline_s=cfg.open_deadline_s,
                              decode_threads=cfg.decode_threads, skip_loop_filter=cfg.skip_loop_filter,
                              catch_up_ms=cfg.catch_up_ms,
                              cpus=self.affinity.capture if self.affinity else None,
                              realtime_priority=self.realtime.capture if self.realtime else None)
        t_start, cpu_start = time.monotonic(), _cpu_seconds()
        recent: list[float] = []
        last_status = last_frame = time.monotonic()
        cap = None
        try:
            with CaptureProcess(opts) as cap, \
                    realtime_thread(self.realtime.loop if self.realtime else None) as loop_rt:
                if self.realtime and self.realtime.loop and not loop_rt:
                    self.log("--realtime-priority: the kernel refused real-time scheduling for the loop; "
                             "it runs normal", file=sys.stderr)
                while not self.stop.is_set() and self.stop_signal is None:
                    for state, message in cap.poll_events():
                        self._status(cap, state, message, summary)
                    frame = cap.next_frame(timeout_s=0.1)
                    now = time.monotonic()
                    if frame is not None:
                        last_frame = now
                        self._process(frame, cap, summary, recent)
                    elif cap.finished:
                        break
                    if now - last_status >= STATUS_EVERY_S:   # a heartbeat every second, whatever the state
                        stalled = cap.state == "live" and now - last_frame > STALL_AFTER_S
                        self._status(cap, "stalled" if stalled else cap.state,
                                     f"no frame for {now - last_frame:.1f} s" if stalled else cap.state_message,
                                     summary, heartbeat=True)
                        last_status = now
                summary.end_state = cap.state
                if cap.state == "error":
                    summary.error = cap.error
                summary.decode_errors, summary.restarts = cap.decode_errors, cap.restarts
        finally:
            if self.stop_signal is not None:
                summary.stopped_by = signal.Signals(self.stop_signal).name
            if cap is not None:   # the last word, marked final: subscribers know the run is over
                final_state = cap.state if cap.finished else "ended"
                message = (f"stopped by {summary.stopped_by}" if summary.stopped_by
                           else cap.state_message or final_state)
                self._status(cap, final_state, message, summary, final=True)
            summary.wall_s = time.monotonic() - t_start
            summary.cpu_s = _cpu_seconds() - cpu_start
            if self.exam is not None:
                self.exam_report = self.exam.finish()
                self.exam.publish_final()
            self.publisher.close()
            self.crop.close()
            if self.subplanes is not None:
                self.subplanes.close()
        return summary

    def _status(self, cap: CaptureProcess, state: str, message: str, summary: RunSummary,
                final: bool = False, heartbeat: bool = False) -> None:
        self.publisher.status({"state": state, "message": message, "source": self._source(cap),
                               "t_mono": time.monotonic(), "t_wall": time.time(),
                               "frames": summary.frames_seen, "skipped_total": cap.skipped_total,
                               "decode_errors": cap.decode_errors, "restarts": cap.restarts,
                               "final": final})
        if state in ("reconnecting", "connecting") and message and not heartbeat:
            self.log(f"source {state}: {message}", file=sys.stderr)

    def _source(self, cap: CaptureProcess, image: np.ndarray | None = None) -> dict:
        src = {"state": cap.state, **{k: cap.source_info.get(k) for k in
                                      ("url", "width", "height", "fps", "pix_fmt")}}
        if image is not None:   # the frame's own size: right from the first frame after a change
            src["height"], src["width"] = image.shape[:2]
        return src

    def _process(self, frame, cap: CaptureProcess, summary: RunSummary, recent: list[float]) -> None:
        t_cap = frame.t_capture_mono
        t_media = smoothing_clock(self.source_is_file, frame.pts_s, t_cap)
        image = frame.luma          # the Y plane of YUV video, else the BGR frame
        rect = self.crop.update(image, frame.detect_image if frame.is_yuv else None,
                                t_media if self.source_is_file and frame.pts_s is not None else None)
        roi = rect.apply(image)
        # The model's own area halvings, done once: blank/frozen detection and preprocessing both
        # start from this copy (identical model input: engines/preprocess.py halvings()).
        pre = self.classifier.preprocess
        halvings = pre.halvings(roi.shape[1], roi.shape[0])
        half = halve_times(roi, halvings)
        img_state = self.image_state.update(half, t_media, luma_range=frame.luma_range)
        pred = cam = None
        if not img_state.blank:            # no ultrasound image: nothing to classify
            x = pre(half, out=self._input, luma_range=frame.luma_range)
            t_pre = time.monotonic()
            out = self.classifier.backend.infer(x)
            cam = out.cam[0] if out.cam is not None else None
            probs = softmax_with_temperature(out.logits[0], self.classifier.info.temperature)
            if self.subplanes is not None and self.subplanes.every_s > 0:   # on a cadence, off this path
                probs = self.subplanes.step(probs, self._stable_plane == "brain", roi, half, halvings,
                                            frame.luma_range, t_media, wait=self.source_is_file)
            elif self.subplanes is not None and self._stable_plane == "brain":
                probs = self.subplanes.refine(probs, roi, half, halvings, frame.luma_range)
            t_inf = time.monotonic()
        else:
            probs, t_pre, out = None, time.monotonic(), None
            t_inf = t_pre
        open_set, reject = self._open_set(out, probs)
        state = self.smoother.update(probs, t_media, blank=img_state.blank, frozen=img_state.frozen,
                                     reject=reject)
        self._stable_plane = None if state.frozen else state.plane
        anomaly = None
        if self.anomaly is not None and state.plane == "brain" and not state.frozen:
            anomaly = self.anomaly(roi, frame.luma_range)
        t_smooth = time.monotonic()

        info = self.classifier.info
        topk = []
        if probs is not None:
            order = np.argsort(-probs)[:3]
            topk = [[info.labels[i], round(float(probs[i]), 4), info.coarse(info.labels[i])] for i in order]
        recent.append(t_cap)
        while recent and recent[0] < t_cap - 1.0:
            recent.pop(0)
        summary.frames_seen += 1 + frame.skipped_since_last
        summary.skipped = cap.skipped_total
        summary.classified += 1
        t_pub = time.monotonic()
        payload = {
            "frame": frame.index, "t_capture_mono": t_cap, "t_capture_wall": frame.t_capture_wall,
            "stages": {"capture": t_cap, "preprocess": t_pre, "infer": t_inf, "smooth": t_smooth,
                       "publish": t_pub},
            "model": self.model_meta, "topk": topk, "plane": state.plane, "label": state.label,
            "confidence": round(state.confidence, 4),
            "flags": {"uncertain": state.uncertain, "none": state.none, "frozen": state.frozen,
                      "stale": cap.state != "live", "open_set_reject": reject},
            "open_set": open_set,
            "anomaly": anomaly, "skipped_total": cap.skipped_total,
            "skipped_since_last": frame.skipped_since_last, "source": self._source(cap, image),
            "crop": rect.as_list(), "fps": float(len(recent)),
            "cam": small_cam(cam, info.labels, state.label),
            "t_media": t_media,
        }
        self.publisher.result(payload)
        if self.exam is None and self.publisher.frames is not None:
            # Colour conversion, redaction, resize and JPEG on the frames worker
            # (publisher.frames.prepare = frames_topic_image), off this path; the frame is ours
            # (a copy from the capture slot), so the worker may read it later.
            self.publisher.frame((frame, rect), frame.index, t_cap, rect.as_list())
        elif self.publisher.send_frames or self.exam is not None:   # redact only what is sent or saved
            self.publisher.frame(self.outgoing_image(frame.colour(rect), frame.index), frame.index, t_cap,
                                 rect.as_list())
        summary.latency_ms.append((t_pub - t_cap) * 1e3)
        if state.changed or not summary.timeline:
            summary.segments += 1
            t_rel = frame.pts_s if frame.pts_s is not None else t_cap
            summary.timeline.append((round(t_rel, 2), state.plane, state.label))

    def _open_set(self, out, probs) -> tuple[float | None, bool]:
        """(distance rounded for the message, reject?) of one frame; (None, False) without open-set."""
        if self.open_set is None:
            return None, False
        if out is None or out.open_set is None:      # blank frame: start afresh when the image returns
            self.open_set.reset()
            return None, False
        score = float(out.open_set[0])
        return round(score, 2), self.open_set.update(score, self.smoother.top_plane_probability(probs))

    def frames_topic_image(self, job) -> tuple[np.ndarray, int]:
        """On the frames worker: (the colour, redacted image of a classified frame's crop at display
        size, the crop's width in source pixels). `job` is the (CapturedFrame, CropRect) the loop handed over."""
        frame, rect = job
        # Made at display size (detection on a small copy of the planes; streamer/topic_image.py).
        return redacted_display(frame, rect, FRAME_MAX_WIDTH, redact=self.cfg.redact), rect.width

    def outgoing_image(self, roi: np.ndarray, frame_index: int | None = None, owned: bool = False) -> np.ndarray:
        """The image that may leave the process for this frame: the crop (no header band) with
        burned-in text blanked (`engines.redact`), unless --redact off. The classifier keeps the
        unredacted crop. Every outlet (frames topic, overlays, exam captures) takes this one;
        the result for the current frame is kept so a second caller does not redact twice.
        owned: roi is the caller's own fresh image (not a view of the frame): blanked in place."""
        if not self.cfg.redact:
            return roi
        if self._outgoing is not None and frame_index is not None and self._outgoing[0] == frame_index:
            return self._outgoing[1]
        from engines.redact import redact_text
        image, _ = redact_text(roi, in_place=owned)
        if frame_index is not None:
            self._outgoing = (frame_index, image)
        return image


def open_set_gate(info, backend) -> OpenSetGate | None:
    """The open-set gate of a model fitted by `python -m engines open-set` (ONNX Runtime only)."""
    cfg = info.open_set
    if cfg is None or getattr(backend, "open_set_output", None) is None:
        return None
    return OpenSetGate(cfg["threshold"], cfg.get("release", 0.6), cfg.get("near"), cfg.get("confident"))


def run_pipeline(cfg: PipelineConfig, log=print) -> RunSummary:
    return Pipeline(cfg, log=log).run()
