"""Background writer: every file of an exam is written by one thread, in order, off the pipeline.

Order matters: a capture's PNGs and sidecar are written before the exam.json that names them,
and exam.json is always replaced atomically (temp file + os.replace), so a reader never sees a
half-written file or a path to an image that does not exist yet.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from .heatmap import heatmap_overlay


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png.tobytes())
    os.replace(tmp, path)


WRITER_NICE = 19   # added to the nice value the writer thread starts with


class ExamWriter:
    """Writes the exam's files on its own thread (PNG encoding and the capture redaction stay off the loop).

    redact_capture: image -> (image, boxes), run on every capture before it is written (the learned text
    detector, engines/text_detect.py); the capture, its heatmap and the report all use its output. If it
    fails, the capture is not written (the error is counted and logged), never written unredacted."""

    def __init__(self, root: Path, log=print, redact_capture=None):
        self.root = Path(root)
        self.redact_capture = redact_capture
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.jobs: queue.Queue = queue.Queue()
        self.errors = 0
        self.last_written: dict | None = None   # the exam state now on disk (its images included)
        self.written_seq = 0
        self.thread = threading.Thread(target=self._loop, name="exam-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        # Below the live loop: the capture's learned redaction is ~0.4 s of CPU per capture, and on a
        # two-core box it must not take the loop's turn (files land a little later, frames are not skipped).
        # Linux threads have their own nice value; elsewhere this is a no-op.
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))
        except (AttributeError, OSError):
            pass
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                job()
            except Exception as exc:   # a full disk must not stop the exam or the pipeline
                self.errors += 1
                self.log(f"exam writer: {exc}", file=sys.stderr)
            finally:
                self.jobs.task_done()

    # ---- jobs (run on the writer thread) ----
    def save_capture(self, rel_image: str, rel_heatmap: str | None, rel_sidecar: str, image: np.ndarray,
                     cam_u8: np.ndarray | None, sidecar: dict) -> None:
        def job():
            stored, meta = image, sidecar
            if self.redact_capture is not None:
                stored, boxes = self.redact_capture(image)
                meta = {**sidecar, "redaction": {"learned_text_boxes": [[b.x0, b.y0, b.x1, b.y1] for b in boxes]}}
            path = self.root / rel_image
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(path, stored)
            if rel_heatmap and cam_u8 is not None:
                write_png_atomic(self.root / rel_heatmap, heatmap_overlay(stored, cam_u8))
            write_json_atomic(self.root / rel_sidecar, meta)
        self.jobs.put(job)

    def delete(self, *rel_paths: str | None) -> None:
        def job():
            for rel in rel_paths:
                if rel:
                    (self.root / rel).unlink(missing_ok=True)
        self.jobs.put(job)

    def exam_json(self, snapshot: dict) -> None:
        def job():
            write_json_atomic(self.root / "exam.json", snapshot)
            self.last_written, self.written_seq = snapshot, self.written_seq + 1
        self.jobs.put(job)

    def call(self, fn, *args) -> None:
        self.jobs.put(lambda: fn(*args))

    def archive(self, name: str) -> None:
        """Move the current exam's files into archive/NAME/ (a new exam starts in the same folder)."""
        def job():
            dest = self.root / "archive" / name
            dest.mkdir(parents=True, exist_ok=True)
            for entry in ("exam.json", "report.html", "captures"):
                src = self.root / entry
                if src.exists():
                    shutil.move(str(src), str(dest / entry))
        self.jobs.put(job)

    def flush(self, timeout_s: float = 30.0) -> None:
        done = threading.Event()
        self.jobs.put(done.set)
        done.wait(timeout_s)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=60)
