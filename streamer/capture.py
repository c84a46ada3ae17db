"""Capture in its own process, handing frames over through shared memory, newest frame wins.

Why a process: decoding (FFmpeg) and inference (ONNX Runtime) both hold the GIL for long
stretches; in one process they stall each other. The capture process decodes, paces files to
their native rate, and writes each frame into ONE shared-memory slot. The inference side always
takes the newest frame; a frame overwritten before it was taken is counted as skipped
(latest-frame policy). In `fast` mode the capture waits for the consumer instead: nothing is
skipped and a file is processed as fast as inference allows.

Live sources (network, V4L2, camera) reconnect with exponential backoff after a loss and report
status `reconnecting`; a file ends with status `ended`. A resolution change mid-stream is just a
new shape in the slot header (the slot is sized for up to 4K).
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from engines.errors import SourceError

MAX_FRAME_BYTES = 3840 * 2160 * 3
# Slot header: seq, index, pts (nan if none), t_capture_mono, t_capture_wall, height, width.
HEADER = np.dtype([("seq", "i8"), ("index", "i8"), ("pts", "f8"), ("t_mono", "f8"), ("t_wall", "f8"),
                   ("h", "i4"), ("w", "i4")])
HEADER_BYTES = 64
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class CapturedFrame:
    image: np.ndarray
    index: int                # source frame index
    pts_s: float | None
    t_capture_mono: float
    t_capture_wall: float
    skipped_since_last: int   # frames overwritten before the consumer took them


@dataclass
class CaptureOptions:
    source: str
    fast: bool = False        # process every frame, as fast as possible (files)
    realtime: bool = True     # pace files at their native rate (ignored when fast)
    pix_fmt: str | None = None
    size: str | None = None
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    reconnect: bool = True    # live sources only
    max_frames: int | None = None


def _capture_main(opts: CaptureOptions, shm_name: str, lock, cond, consumed, stop, events) -> None:
    """Runs in the capture process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and stops us
    from .sources import open_source

    shm = shared_memory.SharedMemory(name=shm_name)
    header = np.ndarray((1,), HEADER, buffer=shm.buf[:HEADER.itemsize])
    pixels = shm.buf[HEADER_BYTES:]
    seq = 0
    attempt = 0
    delivered = 0
    try:
        while not stop.is_set():
            try:
                src = open_source(opts.source, pix_fmt=opts.pix_fmt, size=opts.size,
                                  open_timeout_s=opts.open_timeout_s, read_timeout_s=opts.read_timeout_s)
            except SourceError as exc:
                if seq == 0 and attempt == 0:
                    events.put(("error", str(exc), None))       # never opened: a user error
                    return
                attempt += 1
                if not opts.reconnect or attempt > 1000:
                    events.put(("error", str(exc), None))
                    return
                delay = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
                events.put(("status", "reconnecting", f"{exc}; retry in {delay:.2f} s"))
                stop.wait(delay)
                continue
            info = src.info
            events.put(("status", "live", info.as_dict()))
            attempt = 0
            paced = info.kind == "file" and opts.realtime and not opts.fast
            t0 = pts0 = None
            try:
                for frame in src.frames():
                    if stop.is_set():
                        break
                    if paced and frame.pts_s is not None:
                        if t0 is None:
                            t0, pts0 = time.monotonic(), frame.pts_s
                        wait = t0 + (frame.pts_s - pts0) - time.monotonic()
                        if wait > 0:
                            stop.wait(wait)
                    img = frame.image
                    if img.nbytes > MAX_FRAME_BYTES:
                        events.put(("error", f"{opts.source}: frame {img.shape[1]}x{img.shape[0]} larger than 4K", None))
                        return
                    with cond:
                        if opts.fast:   # wait until the consumer took the previous frame
                            while consumed.value < seq and not stop.is_set():
                                cond.wait(0.1)
                        h, w = img.shape[:2]
                        if (h, w) != (int(header["h"][0]), int(header["w"][0])) and seq > 0:
                            events.put(("status", "live", {**info.as_dict(), "width": w, "height": h,
                                                           "pix_fmt": frame.pix_fmt, "resized": True}))
                        np.frombuffer(pixels, np.uint8, img.nbytes)[:] = img.reshape(-1)
                        seq += 1
                        header["seq"], header["index"] = seq, frame.index
                        header["pts"] = np.nan if frame.pts_s is None else frame.pts_s
                        header["t_mono"], header["t_wall"] = time.monotonic(), time.time()
                        header["h"], header["w"] = h, w
                        cond.notify_all()
                    delivered += 1
                    if opts.max_frames and delivered >= opts.max_frames:
                        events.put(("status", "ended", f"stopped after --max-frames {opts.max_frames}"))
                        return
            except SourceError as exc:
                if not info.live:
                    events.put(("error", str(exc), None))
                    return
                events.put(("status", "reconnecting", str(exc)))
            finally:
                src.close()
            if stop.is_set():
                return
            if not info.live:
                events.put(("status", "ended", "end of file"))
                return
            if not opts.reconnect:
                events.put(("status", "ended", "stream ended"))
                return
            attempt += 1
            events.put(("status", "reconnecting", "stream ended or lost"))
            stop.wait(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
    except Exception as exc:   # report, never die silently
        events.put(("error", f"capture failed: {type(exc).__name__}: {exc}", None))
    finally:
        del header, pixels
        shm.close()


class CaptureProcess:
    """Parent-side handle. Use as a context manager: the process is always stopped and joined."""

    def __init__(self, opts: CaptureOptions):
        self.opts = opts
        ctx = mp.get_context("spawn")
        self.shm = shared_memory.SharedMemory(create=True, size=HEADER_BYTES + MAX_FRAME_BYTES)
        self._header = np.ndarray((1,), HEADER, buffer=self.shm.buf[:HEADER.itemsize])
        self._header[0] = (0, -1, np.nan, 0.0, 0.0, 0, 0)
        self._lock = ctx.Lock()
        self._cond = ctx.Condition(self._lock)
        self._consumed = ctx.Value("q", 0, lock=False)
        self._stop = ctx.Event()
        self.events: mp.Queue = ctx.Queue()
        self.proc = ctx.Process(target=_capture_main, name="sonoplane-capture", daemon=True,
                                args=(opts, self.shm.name, self._lock, self._cond, self._consumed,
                                      self._stop, self.events))
        self.last_seq = 0
        self.skipped_total = 0
        self.state = "connecting"
        self.state_message = ""
        self.source_info: dict = {"url": opts.source}
        self.error: str | None = None

    def __enter__(self) -> "CaptureProcess":
        self.proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "error")

    def poll_events(self) -> list[tuple[str, str]]:
        """Drain status events; returns [(state, message)] for state changes."""
        changes = []
        while True:
            try:
                kind, a, b = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "error":
                self.state, self.error, self.state_message = "error", a, a
            else:
                self.state = a
                if isinstance(b, dict):
                    self.source_info = {**self.source_info, **b}
                    self.state_message = ""
                else:
                    self.state_message = b or ""
            changes.append((self.state, self.state_message))
        if not changes and not self.proc.is_alive() and not self.finished:
            # Died without a word (killed, crashed in native code): say so.
            self.state, self.error = "error", f"capture process exited unexpectedly (code {self.proc.exitcode})"
            self.state_message = self.error
            changes.append((self.state, self.error))
        return changes

    def next_frame(self, timeout_s: float = 0.2) -> CapturedFrame | None:
        """The newest frame not yet taken, or None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while int(self._header["seq"][0]) == self.last_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.05))
            h0 = self._header[0]
            seq, h, w = int(h0["seq"]), int(h0["h"]), int(h0["w"])
            image = np.frombuffer(self.shm.buf[HEADER_BYTES:], np.uint8, h * w * 3).reshape(h, w, 3).copy()
            skipped = seq - self.last_seq - 1
            self.last_seq = seq
            self._consumed.value = seq
            self._cond.notify_all()
            pts = float(h0["pts"])
            frame = CapturedFrame(image, int(h0["index"]), None if np.isnan(pts) else pts,
                                  float(h0["t_mono"]), float(h0["t_wall"]), skipped)
        self.skipped_total += skipped
        return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self.proc.pid is not None:
            self.proc.join(timeout=3)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout=2)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self.poll_events()
        self.events.close()
        self.events.join_thread()
        self._header = None
        try:
            self.shm.close()
            self.shm.unlink()
        except (FileNotFoundError, BufferError):
            pass
