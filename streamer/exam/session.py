"""The exam state machine, fed by each published result and the image that went out with it.

Per view: `pending` -> `captured` (first committed capture) -> `rejected` (the operator rejected its
captures; the view captures again) or `manual` (the operator marked it done by hand).

Capture rule (docs/exam.md): a frame is a candidate for a view only when
- the result is current: not `uncertain`, `none`, `frozen` or `stale`, and the source is live;
- the SMOOTHED plane/label shows the view, and has shown it for at least `min_run_s` (a stable run);
- the RAW top-1 of this frame names the view too, with calibrated probability >= `min_probability`.
A candidate is committed only once the view is still stably shown `confirm_s` after it, with the
raw top-1 naming the view on at least `confirm_agree` of the frames in between (frames at the edge
of a run, where sweeps between planes are misread, and the first frames of a scanner freeze, never
win); a better frame found meanwhile waits as the challenger and gets its own window. A commit fills a free slot of the view's `keep`, replaces this run's own capture, or replaces
the worst kept one, each only when its score is higher by `replace_margin` ("clearly better").
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .heatmap import cam_array
from .protocol import Protocol, View
from .quality import STILL_DIFF_MAX, Quality, QualityProbe

EXAM_VERSION = 1
STATUSES = ("pending", "captured", "rejected", "manual")


@dataclass(frozen=True)
class CaptureConfig:
    min_probability: float = 0.80
    # Tuned on the 720p30 validation sweep (--fast, docs/exam.md): 0.10 vs 0.30 s kept precision at 1.0
    # and cut the median time to capture from 0.88 to 0.68 s; the confirm window keeps frames deep in a run.
    min_run_s: float = 0.10
    # Longer than the frozen detector's 0.4 s (streamer.image_state): a frame at the start of a scanner
    # freeze looks live until then, and must not be kept; the freeze flag ends the run first.
    confirm_s: float = 0.45
    confirm_agree: float = 0.80    # share of the confirm window's frames whose raw top-1 names the view
    replace_margin: float = 0.03


@dataclass
class Capture:
    frame: int
    t_s: float
    quality: Quality
    confidence: float              # smoothed confidence of the plane when captured
    label: str | None
    run: int                       # which stable run of the view it came from
    image: str | None = None       # paths relative to the exam folder
    heatmap: str | None = None
    sidecar: str | None = None
    manual: bool = False
    crop: list | None = None       # where the image lies in the source frame (source pixels)

    @property
    def score(self) -> float:
        return self.quality.score

    def to_json(self) -> dict:
        return {"frame": self.frame, "t_s": round(self.t_s, 3), "score": round(self.score, 4),
                "score_parts": self.quality.parts(), "confidence": round(self.confidence, 4),
                "label": self.label, "image": self.image, "heatmap": self.heatmap, "sidecar": self.sidecar,
                "manual": self.manual}


@dataclass
class _Candidate:
    capture: Capture
    t_mono: float
    image: np.ndarray
    cam: np.ndarray | None
    seen: int = 0                  # frames since the candidate (confirm window)...
    agreed: int = 0                # ...whose raw top-1 named the view
    changes: list = field(default_factory=list)   # image change of each frame after it (grey levels)


@dataclass
class ViewState:
    view: View
    status: str = "pending"
    captures: list = field(default_factory=list)     # kept captures, best first
    run_start: float | None = None
    run_id: int = 0
    candidate: _Candidate | None = None              # best frame so far, in its confirm window
    challenger: _Candidate | None = None             # a better frame found during that window
    first_seen_s: float | None = None
    first_captured_s: float | None = None
    manual_grab: float | None = None                 # operator asked to keep the next frame (time asked)

    def to_json(self) -> dict:
        v = self.view
        return {"id": v.id, "title": v.title, "plane": v.plane, "labels": list(v.labels), "keep": v.keep,
                "status": self.status, "best": self.captures[0].to_json() if self.captures else None,
                "captures": [c.to_json() for c in self.captures],
                "first_seen_s": _r(self.first_seen_s), "first_captured_s": _r(self.first_captured_s)}


def _r(x):
    return None if x is None else round(x, 3)


class ControlError(ValueError):
    """A control request that cannot be applied (unknown view, nothing to reject...)."""


def view_probability(view: View, topk: list) -> float:
    """Calibrated probability of the view in this frame, from the raw top-k [label, p, plane]."""
    return float(sum(p for label, p, plane in topk if view.matches(plane, label)))


class ExamSession:
    def __init__(self, protocol: Protocol, root: str | Path, model: dict, source: str,
                 writer=None, config: CaptureConfig = CaptureConfig(), control_address: str | None = None,
                 clock=time.monotonic, wall_clock=time.time):
        self.protocol = protocol
        self.root = Path(root).resolve()
        self.model = dict(model)
        self.source = source
        self.writer = writer
        self.config = config
        self.control_address = control_address
        self.clock, self.wall_clock = clock, wall_clock
        self.lock = threading.RLock()
        self.version = 0            # bumped on every change of the published state
        self.reports = 0
        self._start()

    # ---- lifecycle ----
    def _start(self) -> None:
        self.views = [ViewState(v) for v in self.protocol.views]
        self.t0 = self.clock()
        self.t0_media: float | None = None   # exam times run on the results' media clock (t_media)
        self.last_ts = 0.0
        self.started = self.wall_clock()
        self.ended: float | None = None
        self.report: str | None = None
        self.timeline: list = []        # [t_s, plane, label] at each change of the shown plane/label
        self.probe = QualityProbe()
        self.frames_seen = 0
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        if self.writer is not None:
            self.writer.exam_json(self.snapshot())

    def t_rel(self, t: float) -> float:
        """Exam seconds on the media clock: video time for files (also with --fast), capture time live."""
        if self.t0_media is None or t - self.t0_media < self.last_ts - 1.0:   # first frame, or time went back
            self.t0_media = t - self.last_ts
        self.last_ts = max(self.last_ts, t - self.t0_media)
        return max(0.0, t - self.t0_media)

    # ---- fed by the pipeline (publisher tap), one call per published result ----
    def observe(self, result: dict, image: np.ndarray | None) -> None:
        with self.lock:
            if self.ended is not None:
                return
            self.frames_seen += 1
            t = float(result.get("t_media", result.get("t_capture_mono", self.clock())))
            ts = self.t_rel(t)
            plane, label = result.get("plane"), result.get("label")
            if not self.timeline or self.timeline[-1][1:] != [plane, label]:
                self.timeline.append([round(ts, 3), plane, label])
            flags = result.get("flags") or {}
            live = (result.get("source") or {}).get("state", "live") == "live"
            current = live and not any(flags.get(k) for k in ("uncertain", "none", "frozen", "stale")) \
                and plane not in ("uncertain", "none") and image is not None
            sharp = steady = None
            if image is not None and not flags.get("none"):
                sharp, steady = self.probe.measure(image, int(result.get("frame", 0)))
            topk = result.get("topk") or []
            raw_plane, raw_label = (topk[0][2], topk[0][0]) if topk else (None, None)
            changed = False
            for vs in self.views:
                if vs.manual_grab is not None and image is not None and sharp is not None:
                    changed |= self._grab_manual(vs, result, image, ts, sharp, steady)
                shown = current and vs.view.matches(plane, label)
                if not shown:
                    vs.run_start, vs.candidate, vs.challenger = None, None, None   # uncommitted candidates die with the run
                    continue
                if vs.run_start is None:
                    vs.run_start, vs.run_id = t, vs.run_id + 1
                    if vs.first_seen_s is None:
                        vs.first_seen_s = ts
                        changed = True
                cfg = self.config
                if (vs.status != "manual" and t - vs.run_start >= cfg.min_run_s - 1e-9
                        and vs.view.matches(raw_plane, raw_label) and sharp is not None):
                    p = view_probability(vs.view, topk)
                    best = vs.challenger or vs.candidate
                    if p >= cfg.min_probability:
                        q = Quality(p, sharp, steady)
                        if best is None or q.score > best.capture.score:
                            cap = Capture(int(result["frame"]), ts, q, float(result.get("confidence") or 0.0),
                                          label, vs.run_id, crop=result.get("crop"))
                            new = _Candidate(cap, t, image.copy(), cam_array(result.get("cam")))
                            # The frame in confirmation keeps its window; a better one waits as challenger.
                            if vs.candidate is None:
                                vs.candidate = new
                            else:
                                vs.challenger = new
                for cand in (vs.candidate, vs.challenger):
                    if cand is not None and t > cand.t_mono:
                        cand.seen += 1
                        cand.agreed += vs.view.matches(raw_plane, raw_label)
                        cand.changes.append(self.probe.last_diff)
                cand = vs.candidate
                if cand is not None and t - cand.t_mono >= cfg.confirm_s - 1e-9:
                    # A window in which the image mostly did not change is a freeze the frozen detector has
                    # not flagged yet (it needs 0.4 s of frames; at a low classified rate, longer). The median,
                    # because an H.264 key frame inside a freeze changes one frame by ~1 grey level.
                    moving = bool(cand.changes) and float(np.median(cand.changes)) > STILL_DIFF_MAX
                    if moving and cand.agreed >= cfg.confirm_agree * cand.seen:
                        changed |= self._commit(vs, cand, ts)
                    vs.candidate, vs.challenger = vs.challenger, None
            if changed:
                self._changed()

    def _commit(self, vs: ViewState, cand: _Candidate, now_s: float) -> bool:
        cap, margin = cand.capture, self.config.replace_margin
        same_run = next((c for c in vs.captures if c.run == cap.run and not c.manual), None)
        if same_run is not None:
            if cap.score <= same_run.score + margin:
                return False
            drop = same_run
        elif len(vs.captures) < vs.view.keep:
            drop = None
        else:
            worst = min((c for c in vs.captures if not c.manual), key=lambda c: c.score, default=None)
            if worst is None or cap.score <= worst.score + margin:
                return False
            drop = worst
        if drop is not None:
            vs.captures.remove(drop)
            self._delete_files(drop)
        self._save(vs, cap, cand.image, cand.cam, result_model=self.model)
        vs.captures.append(cap)
        vs.captures.sort(key=lambda c: (not c.manual, -c.score))
        if vs.status in ("pending", "rejected"):
            vs.status = "captured"
        if vs.first_captured_s is None:     # when the capture was made (confirmed), not the frame's time
            vs.first_captured_s = now_s
        return True

    def _grab_manual(self, vs: ViewState, result: dict, image, ts: float, sharp: float, steady: float) -> bool:
        asked, vs.manual_grab = vs.manual_grab, None
        if self.clock() - asked > 1.0:       # no fresh frame came in time: the mark stands without an image
            return False
        p = view_probability(vs.view, result.get("topk") or [])
        cap = Capture(int(result.get("frame", 0)), ts, Quality(p, sharp, steady),
                      float(result.get("confidence") or 0.0), result.get("label"), -1, manual=True,
                      crop=result.get("crop"))
        self._save(vs, cap, image.copy(), cam_array(result.get("cam")), result_model=self.model)
        vs.captures.insert(0, cap)
        while len(vs.captures) > max(vs.view.keep, 1):
            self._delete_files(vs.captures.pop())
        return True

    def _save(self, vs: ViewState, cap: Capture, image: np.ndarray, cam: np.ndarray | None, result_model) -> None:
        stem = f"captures/{vs.view.id}/f{cap.frame:07d}{'_manual' if cap.manual else ''}"
        cap.image, cap.sidecar = f"{stem}.png", f"{stem}.json"
        cap.heatmap = f"{stem}_heatmap.png" if cam is not None else None
        if self.writer is not None:
            sidecar = {"v": EXAM_VERSION, "view": vs.view.id, **cap.to_json(), "crop": cap.crop,
                       "image_size": [int(image.shape[1]), int(image.shape[0])], "model": result_model,
                       "source": self.source, "protocol": self.protocol.name,
                       "captured_wall": self.wall_clock()}
            self.writer.save_capture(cap.image, cap.heatmap, cap.sidecar, image, cam, sidecar)

    def _delete_files(self, cap: Capture) -> None:
        if self.writer is not None:
            self.writer.delete(cap.image, cap.heatmap, cap.sidecar)

    # ---- operator controls (control endpoint thread) ----
    def _view(self, view_id) -> ViewState:
        if not isinstance(view_id, str):
            raise ControlError("'view' must be a view id string")
        vs = next((v for v in self.views if v.view.id == view_id), None)
        if vs is None:
            raise ControlError(f"unknown view {view_id!r} (views: {', '.join(v.view.id for v in self.views)})")
        return vs

    def reject(self, view_id: str, capture: int = 0) -> None:
        with self.lock:
            self._require_running()
            vs = self._view(view_id)
            if not isinstance(capture, int) or isinstance(capture, bool):
                raise ControlError("'capture' must be an integer index")
            if vs.status == "manual" and not vs.captures:
                vs.status = "rejected"
                self._changed()
                return
            if not 0 <= capture < len(vs.captures):
                raise ControlError(f"view {view_id!r} has no capture {capture} ({len(vs.captures)} kept)")
            self._delete_files(vs.captures.pop(capture))
            vs.candidate = vs.challenger = None
            if vs.status == "manual" or not vs.captures:
                vs.status = "captured" if vs.captures else "rejected"
            self._changed()

    def mark_manual(self, view_id: str) -> None:
        with self.lock:
            self._require_running()
            vs = self._view(view_id)
            vs.status = "manual"
            vs.candidate = vs.challenger = None
            vs.manual_grab = self.clock()
            self._changed()

    def _require_running(self) -> None:
        if self.ended is not None:
            raise ControlError("the exam has ended: start a new one first")

    def end(self, write_report: bool = True) -> str | None:
        """End the exam: no more captures; the report is written (returns its path, relative)."""
        with self.lock:
            if self.ended is not None:
                raise ControlError("the exam has already ended")
            for vs in self.views:
                vs.candidate = vs.challenger = None
            self.ended = self.wall_clock()
            self.duration_s = self._duration()
            if write_report:
                self.report = "report.html"
                if self.writer is not None:   # the report first, then the exam.json that names it
                    from .report import write_report as build
                    self.writer.call(build, self.root, self.snapshot())
            self._changed()
            return self.report

    def new(self) -> None:
        """End the current exam if needed (report written), archive its files, start afresh."""
        with self.lock:
            if self.ended is None:
                self.end()
            if self.writer is not None:
                self.writer.archive(time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started)))
            self._start()

    def _duration(self) -> float:
        return self.last_ts if self.t0_media is not None else self.clock() - self.t0

    # ---- state ----
    def snapshot(self) -> dict:
        with self.lock:
            now = self.wall_clock()
            return {"v": EXAM_VERSION, "protocol": {"name": self.protocol.name, "title": self.protocol.title},
                    "source": self.source, "model": self.model, "started": round(self.started, 3),
                    "updated": round(now, 3), "ended": None if self.ended is None else round(self.ended, 3),
                    "duration_s": round(self.duration_s if self.ended is not None else self._duration(), 3),
                    "state": "ended" if self.ended is not None else "running", "report": self.report,
                    "dir": str(self.root), "control": self.control_address,
                    "views": [vs.to_json() for vs in self.views], "timeline": list(self.timeline)}
