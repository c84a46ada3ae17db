"""Several video sources through one model session, with cross-stream batching.

    sonoplane run --source udp://0.0.0.0:5000 --source udp://0.0.0.0:5001 [--stream-id a,b]

Each stream is the single-stream Pipeline (streamer/pipeline.py) unchanged — its own capture
process, crop tracker, blank/frozen detector, smoother, frames topic — run on its own thread. They
share ONE classifier: its backend is wrapped in a BatchingBackend, so the newest frames of the
streams that reach inference together go through ONE session call (the shipped ONNX models have a
dynamic batch dimension). Nothing waits to fill a batch: a call that finds the session idle runs
at once with whatever is queued; calls that arrive while it runs are batched into the next call.
Results and frames are published on ONE address with per-stream ids in topics and messages
(`sonoplane.result.<id>`); `--record X.jsonl` writes one file per stream, `X.<id>.jsonl`.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engines.backends import InferenceOutput
from engines.errors import UserError

from .infer import PlaneClassifier
from .pipeline import Pipeline, PipelineConfig, RunSummary
from .publish import Publisher


@dataclass
class _Request:
    x: np.ndarray
    event: threading.Event
    out: InferenceOutput | None = None
    error: BaseException | None = None


class BatchingBackend:
    """A backend shared by several threads: calls that meet run as one batched call."""

    def __init__(self, backend):
        self.backend = backend
        self.info = backend.info
        self.name = backend.name
        self.input_name = backend.input_name
        self._lock = threading.Lock()
        self._pending: list[_Request] = []
        self._running = False
        self.calls = 0            # session calls made
        self.frames = 0           # frames inferred (sum of batch sizes)
        self.batch_sizes: dict[int, int] = {}

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        req = _Request(batch, threading.Event())
        with self._lock:
            self._pending.append(req)
            lead = not self._running
            self._running = True
        if not lead:
            req.event.wait()
            if req.error is not None:
                raise req.error
            if req.out is not None:
                return req.out
            # woken without a result: promoted to run the next batch (it holds this request)
        self._run_batch()
        if req.error is not None:
            raise req.error
        return req.out

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        sizes = [r.x.shape[0] for r in batch]
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([r.x for r in batch])
            out = self.backend.infer(x)
            start = 0
            for r, n in zip(batch, sizes):
                r.out = InferenceOutput(out.logits[start:start + n],
                                        None if out.cam is None else out.cam[start:start + n])
                start += n
        except BaseException as exc:   # every waiting stream gets the error, none hangs
            for r in batch:
                r.error = exc
        with self._lock:
            self.calls += 1
            self.frames += sum(sizes)
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            promoted = self._pending[0] if self._pending else None
            if promoted is None:
                self._running = False
        for r in batch:
            r.event.set()
        if promoted is not None:
            promoted.event.set()       # out is None: it runs the next batch

    def close(self) -> None:
        self.backend.close()


def stream_ids(given: str, n: int) -> list[str]:
    """`--stream-id a,b,c` names the streams; the default ("0") numbers them 0..n-1."""
    ids = [s.strip() for s in given.split(",")] if "," in given else ([given] if n == 1 else [])
    if not ids:
        ids = [str(k) for k in range(n)]
    if len(ids) != n:
        raise UserError(f"--stream-id: {len(ids)} ids for {n} sources (give one per --source, comma-separated)")
    if len(set(ids)) != n or not all(ids):
        raise UserError(f"--stream-id: ids must be distinct and non-empty, got {given!r}")
    return ids


def record_path(record: str | None, stream: str) -> str | None:
    if not record:
        return None
    p = Path(record)
    return str(p.with_name(f"{p.stem}.{stream}{p.suffix or '.jsonl'}"))


class MultiStream:
    def __init__(self, cfgs: list[PipelineConfig], log=print):
        if len(cfgs) < 2:
            raise ValueError("MultiStream is for two or more sources")
        first = cfgs[0]
        self.classifier = PlaneClassifier(first.model, backend=first.backend, threads=first.threads)
        self.batching = BatchingBackend(self.classifier.backend)
        self.classifier.backend = self.batching
        self.pipelines = [Pipeline(cfg, log=log, classifier=self.classifier) for cfg in cfgs]
        owner = self.pipelines[0].open_publisher(record=record_path(first.record, first.stream_id))
        self.pipelines[0].publisher = owner
        for p in self.pipelines[1:]:
            p.publisher = Publisher.sharing(owner, p.cfg.stream_id, record_path(p.cfg.record, p.cfg.stream_id),
                                            frames_fps=p.cfg.frames_fps)
        self.address = owner.address

    def run(self) -> list[RunSummary]:
        summaries: list[RunSummary | None] = [None] * len(self.pipelines)
        errors: list[BaseException | None] = [None] * len(self.pipelines)

        def work(k: int) -> None:
            try:
                summaries[k] = self.pipelines[k].run()
            except BaseException as exc:      # reported below, the other streams go on
                errors[k] = exc

        threads = [threading.Thread(target=work, args=(k,), name=f"stream-{p.cfg.stream_id}", daemon=True)
                   for k, p in enumerate(self.pipelines)]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
        except KeyboardInterrupt:
            for p in self.pipelines:
                p.stop.set()
            for t in threads:
                t.join(10)
        for k, exc in enumerate(errors):
            if exc is not None:
                if isinstance(exc, UserError):
                    raise UserError(f"stream {self.pipelines[k].cfg.stream_id}: {exc}") from None
                raise exc
        return summaries


def run_many(args, sources: list[str]) -> int:
    """`sonoplane run` with several --source: one model session, per-stream publishing."""
    from .commands.run import pipeline_config

    if getattr(args, "exam", None) not in (None, "none"):
        raise UserError("--exam takes one --source")
    ids = stream_ids(args.stream_id, len(sources))
    cfgs = [replace(pipeline_config(args, src), stream_id=sid) for src, sid in zip(sources, ids)]
    ms = MultiStream(cfgs)
    from .commands.run import install_stop_signals
    install_stop_signals(*ms.pipelines)      # SIGTERM/SIGHUP/SIGINT end every stream cleanly
    if not args.quiet:
        print(f"sonoplane: {len(sources)} sources -> {ms.address} as streams {', '.join(ids)} "
              f"(model {ms.classifier.info.model_id}, one session, cross-stream batching)", file=sys.stderr)
    summaries = ms.run()
    if not args.quiet:
        for sid, s in zip(ids, summaries):
            if s is not None and s.classified:
                print(f"--- stream {sid}\n{s.format()}")
        b = ms.batching
        sizes = ", ".join(f"{n} frame{'s' if n > 1 else ''}: {c}" for n, c in sorted(b.batch_sizes.items()))
        print(f"--- model: {b.frames} frames in {b.calls} session calls ({sizes})")
    stopped = next((s.stopped_by for s in summaries if s is not None and s.stopped_by), None)
    if stopped:
        import signal
        print(f"sonoplane: stopped by {stopped}", file=sys.stderr)
        return 128 + int(signal.Signals[stopped])
    errors = [s.error for s in summaries if s is not None and s.error]
    if errors:
        raise UserError("; ".join(errors))
    return 0
