"""Ties an exam to a running pipeline: protocol check, writer, control endpoint, publisher tap.

The exam watches the pipeline's Publisher: every result, then the image sent with it on the
frames topic. It therefore captures exactly the image that leaves the process (the cropped,
redacted ultrasound region), never the full scanner frame, and never a result without its image.
The tap sees the image even with --no-frames (the publisher drops it after the tap).
"""
from __future__ import annotations

import time
from pathlib import Path

from .control import DEFAULT_CONTROL, ControlServer, check_loopback
from .protocol import check_against_model, load_protocol
from .session import CaptureConfig, ExamSession
from .writer import ExamWriter

PUBLISH_EVERY_S = 1.0


class ExamRunner:
    def __init__(self, protocol: str, exam_dir: str | Path, model_info, model_meta: dict, source: str,
                 control: str | None = DEFAULT_CONTROL, config: CaptureConfig = CaptureConfig(), log=print,
                 redact: bool = True):
        self.protocol = load_protocol(protocol)
        if control and control != "none":
            check_loopback(control)          # refuse before any file is written
        check_against_model(self.protocol, model_info.labels, model_info.coarse_map, model_info.model_id)
        self.root = Path(exam_dir)
        # Stored captures get a second, learned look for text (engines/text_detect.py) on the writer's thread,
        # on top of the live redaction every outgoing image already had; --redact off turns both off.
        redactor = None
        if redact:
            from engines.text_detect import LearnedTextDetector
            redactor = LearnedTextDetector().redact
        self.writer = ExamWriter(self.root, log=log, redact_capture=redactor)
        self.session = ExamSession(self.protocol, self.root, model_meta, source, writer=self.writer,
                                   config=config)
        self.control = None
        if control and control != "none":
            try:
                self.control = ControlServer(self.session, control)
            except Exception:
                self.writer.close()
                raise
            self.session.control_address = self.control.address
        self._last_result: dict | None = None
        self._published_version = -1
        self._published_at = 0.0

    def attach(self, publisher) -> None:
        """Wrap the publisher's result/frame/status calls (on this instance only)."""
        send_result, send_frame, send_status = publisher.result, publisher.frame, publisher.status

        def result(payload: dict) -> None:
            send_result(payload)
            self._last_result = payload

        def frame(image, frame_index, t_capture_mono, crop) -> None:
            send_frame(image, frame_index, t_capture_mono, crop)
            last = self._last_result
            if last is not None and last.get("frame") == frame_index:
                self.session.observe(last, image)
                self._last_result = None
            self._publish(publisher)

        def status(payload: dict) -> None:
            send_status(payload)
            self._publish(publisher)

        publisher.result, publisher.frame, publisher.status = result, frame, status
        self._publisher = publisher

    def _publish(self, publisher, force: bool = False) -> None:
        """The exam topic on every change and once a second (late joiners get it whole).

        What is published is the state already on disk (exam.json as the writer last wrote it), so
        a viewer never asks for a capture image that is not written yet."""
        now = time.monotonic()
        written, seq = self.writer.last_written, self.writer.written_seq
        if written is None:
            return
        if force or seq != self._published_version or now - self._published_at >= PUBLISH_EVERY_S:
            self._published_version, self._published_at = seq, now
            state = dict(written)
            if state.get("state") == "running":
                state["updated"], state["duration_s"] = round(time.time(), 3), round(self.session._duration(), 3)
            publisher.exam(state)

    def finish(self) -> Path | None:
        """End of the source: end the exam (report written), flush files, stop the endpoint."""
        if self.control is not None:
            self.control.close()
        report = None
        with self.session.lock:
            if self.session.ended is None:
                self.session.end()
            if self.session.report:
                report = self.root / self.session.report
        self.writer.flush()
        self.writer.close()
        return report

    def publish_final(self) -> None:
        if getattr(self, "_publisher", None) is not None:
            try:
                self._publish(self._publisher, force=True)
            except Exception:
                pass
