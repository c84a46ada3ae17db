"""Capture in its own process, handing frames over through shared memory, newest frame wins.

Why a process: decoding (FFmpeg) and inference (ONNX Runtime) both hold the GIL for long
stretches; in one process they stall each other. The capture process decodes, paces files to
their native rate, and writes frame number s into slot s % SLOTS of a small ring of
shared-memory slots. The inference side takes the newest frame, except that an older frame still
in the ring is taken first when it can still be published within the catch-up budget (the
"catch-up" rule, CaptureProcess._choose); a frame not taken is counted as skipped (latest-frame
policy). Why a ring: before a keyframe the decoder hands over several frames back to back (the
I-frame's long decode delays the frames before it in display order), faster than the loop takes
them; with ONE slot the first of them was overwritten before the loop was free, although the loop
had time to spare right after the burst (docs/latency.md, Session 8). In `fast` mode the capture
waits for the consumer instead: nothing is skipped and a file is processed as fast as inference
allows.

Nothing the parent waits on can be held by a dead child: each slot is a seqlock (the writer makes
its sequence number odd while it writes, 2*s when frame s is complete; the reader copies and
treats the frame as gone if the number moved), wake-ups and status events travel over pipes, and every wait has a timeout and a
liveness check. The child dies with its parent whatever the parent's death (prctl
PR_SET_PDEATHSIG on Linux, plus the parent's pid and the control pipe's end-of-file checked while
it waits), ignores the terminal's and the service manager's signals (the parent owns shutdown),
and leaves no semaphore behind (it uses none). A capture process that dies anyway (a crash inside
FFmpeg, a kill) is restarted with backoff, from the last frame delivered for files.

Live sources (network, V4L2, camera) wait for the source and reconnect forever by default,
reporting status `connecting` / `reconnecting` (`open_deadline_s` bounds the wait for the first
open); a file ends with status `ended`. Frame indices keep counting across reconnects and
restarts. A resolution change mid-stream is just a new shape in the slot header (sized for 4K).

The slot holds either BGR or, for limited-range YUV 4:2:0 video (what H.264 / HEVC decoders put out),
the decoder's planes as one I420 buffer, with no colour conversion in the capture at all (the
luma path, streamer/yuv.py): half the bytes to copy, and the BGR conversion that cost more than
the copy is gone; the pipeline works on the Y plane and converts only the crops that leave in colour.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import select
import signal
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from engines.errors import SourceError, UserError

from . import yuv

MAX_FRAME_PIXELS = 3840 * 2160
MAX_FRAME_BYTES = MAX_FRAME_PIXELS * 3   # a 4K BGR frame; an I420 one takes half
# Ring control block, at the start of the shared memory. latest: the number (seq) of the newest
# complete frame; consumed: the last seq the parent took (fast mode). Frames are numbered from 1;
# the numbering goes on across capture-process restarts.
CONTROL = np.dtype([("latest", "i8"), ("consumed", "i8")])
CONTROL_BYTES = 64
# Slot header. seq: seqlock (2*s - 1 while frame s is written, 2*s when complete); index: frame
# index, monotonic across reconnects; pts (nan if none); capture times; shape; decode_errors:
# damaged packets skipped so far (this child). layout: LAYOUT_BGR (h x w x 3) or LAYOUT_I420 (Y,
# then U, then V; streamer/yuv.py).
HEADER = np.dtype([("seq", "i8"), ("index", "i8"), ("pts", "f8"), ("t_mono", "f8"), ("t_wall", "f8"),
                   ("h", "i4"), ("w", "i4"), ("decode_errors", "i8"), ("layout", "i4")])
LAYOUT_BGR, LAYOUT_I420 = 0, 1
HEADER_BYTES = 128
SLOT_BYTES = HEADER_BYTES + MAX_FRAME_BYTES
# Slots in the ring. Two hold a keyframe burst's frame while the loop works on the previous one;
# untouched pages of a slot cost no memory (a 1080p I420 frame touches 3 MB of the 25 MB slot).
SLOTS = 2
# The loop's work per frame is estimated from this many recent frames (median); until that many
# were seen, no older frame is taken (newest only).
BUSY_WINDOW = 32
BUSY_MIN_SAMPLES = 8
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)        # between reconnect attempts of a live source
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)   # between restarts of a dead capture process
MAX_RESTARTS_WITHOUT_PROGRESS = 5        # files: a capture that dies at the same place gives up
CLOSE_TIMEOUT_S = 1.5     # a child blocked in an open/read gets SIGKILL after this (it holds no lock)
PR_SET_PDEATHSIG = 1


class CapturedFrame:
    """One frame taken from the slot (owned: a copy, never reused by the capture).

    `luma` is what the analysis runs on: the Y plane of a YUV 4:2:0 frame (with `luma_range`
    "limited": streamer/yuv.luma_to_gray maps it to gray), or the BGR image itself (luma_range
    None: gray analysis averages or converts its channels as before). `colour(rect)` and
    `colour_halved(rect, n)` convert only a crop to BGR; `image` is the whole frame in BGR,
    converted on first use (tools and `sonoplane check`; the live loop never asks for it)."""

    def __init__(self, pixels: np.ndarray, layout: int, height: int, width: int, index: int,
                 pts_s: float | None, t_capture_mono: float, t_capture_wall: float, skipped_since_last: int):
        self.pixels, self.layout, self.height, self.width = pixels, layout, height, width
        self.index = index                # source frame index (monotonic across reconnects and restarts)
        self.pts_s = pts_s
        self.t_capture_mono = t_capture_mono
        self.t_capture_wall = t_capture_wall
        self.skipped_since_last = skipped_since_last   # frames overwritten before the consumer took them
        self._bgr = pixels if layout == LAYOUT_BGR else None

    @property
    def is_yuv(self) -> bool:
        return self.layout == LAYOUT_I420

    @property
    def luma(self) -> np.ndarray:
        return yuv.planes(self.pixels, self.height, self.width)[0] if self.is_yuv else self.pixels

    @property
    def luma_range(self) -> str | None:
        return "limited" if self.is_yuv else None

    @property
    def image(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = yuv.to_bgr(self.pixels, self.height, self.width)
        return self._bgr

    def colour(self, rect) -> np.ndarray:
        """BGR of the crop `rect` (a view for BGR frames, a converted copy for YUV ones)."""
        if not self.is_yuv:
            return rect.apply(self.pixels)
        return yuv.to_bgr(self.pixels, self.height, self.width, rect)

    def colour_halved(self, rect, halvings: int) -> np.ndarray:
        """BGR of the crop halved `halvings` times (engines.downscale), converted after downscaling
        for YUV frames; a display-size copy at a fraction of the full conversion's cost."""
        if not self.is_yuv:
            from engines.downscale import halve_times
            return halve_times(rect.apply(self.pixels), halvings)
        return yuv.to_bgr_halved(self.pixels, self.height, self.width, rect, halvings)

    def detect_image(self, min_width: int) -> np.ndarray:
        """A fresh BGR copy of the whole frame, halved while it stays >= min_width wide (the crop
        tracker's detection input: it needs colour to tell coloured UI from gray B-mode)."""
        from engines.crop import CropRect
        from engines.downscale import halvings_to
        n = halvings_to(self.width, self.height, min_width)
        small = self.colour_halved(CropRect(0, 0, self.width, self.height), n)
        return small.copy() if small is self.pixels else small


@dataclass
class CaptureOptions:
    source: str
    fast: bool = False        # process every frame, as fast as possible (files)
    realtime: bool = True     # pace files at their native rate (ignored when fast)
    pix_fmt: str | None = None
    size: str | None = None
    open_timeout_s: float = 5.0          # one open attempt
    read_timeout_s: float = 5.0          # no data for this long: the source is lost
    open_deadline_s: float | None = None # live: give up when not open after this long (None: never)
    reconnect: bool = True    # live sources only
    max_frames: int | None = None
    yuv420: bool = True       # hand YUV 4:2:0 video over as planes (no BGR conversion); False: BGR always
    decode_threads: str | None = None     # PyAV decoder threading, TYPE[:N] (sources.parse_decode_threads)
    skip_loop_filter: str | None = None   # H.264/HEVC deblocking skipped on these frames (pixel-changing)
    cpus: tuple[int, ...] | None = None   # pin this process and its threads (streamer/affinity.py)
    realtime_priority: int | None = None  # SCHED_FIFO for this process and its threads (streamer/realtime.py)
    # An older frame still in the ring is taken before the newest when it would be published within
    # this budget of its capture (its age + the loop's recent median work per frame). None: one frame
    # period of the source (its nominal rate, else the measured interval between frames); 0: never
    # (newest only, as with a single slot).
    catch_up_ms: float | None = None
    slots: int = SLOTS


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the parent dies (any death, SIGKILL included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass                  # not Linux: the parent-alive checks below still end us
    if os.getppid() != parent_pid:   # the parent died before prctl took effect
        os._exit(0)


class _Control:
    """Child side of the parent's control pipe: b"c" = a frame was consumed, b"q" = stop,
    end-of-file = the parent is gone."""

    def __init__(self, conn, parent_pid: int):
        self.fd = conn.fileno()
        self._conn = conn     # keep the Connection alive: it owns the fd
        self.parent_pid = parent_pid
        self.stopped = False

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to timeout_s, waking on any control byte; True when we must stop."""
        if self.stopped:
            return True
        if os.getppid() != self.parent_pid:
            self.stopped = True
            return True
        try:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
            if ready:
                data = os.read(self.fd, 4096)
                if not data or b"q" in data:
                    self.stopped = True
        except OSError:
            self.stopped = True
        return self.stopped

    def poll(self) -> bool:
        return self.wait(0.0)


def _capture_main(opts: CaptureOptions, shm_name: str, notify, events, control, parent_pid: int,
                  index_base: int, resume_after_pts: float | None, already_delivered: int) -> None:
    """Runs in the capture process."""
    _die_with_parent(parent_pid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)      # the parent handles these and stops us
    if opts.cpus:   # before the source opens: FFmpeg's decoder threads inherit the mask
        from .affinity import pin_process
        pin_process(opts.cpus)
    from .sources import open_source

    ctl = _Control(control, parent_pid)
    notify_fd = notify.fileno()
    os.set_blocking(notify_fd, False)            # a wake-up never blocks the capture

    def send(*event) -> None:
        try:
            events.send(event)
        except (OSError, ValueError):            # parent gone
            ctl.stopped = True

    if opts.realtime_priority:   # before the source opens: FFmpeg's decoder threads inherit it
        from .realtime import set_fifo_process
        try:
            set_fifo_process(opts.realtime_priority)
        except OSError as exc:   # the parent checked the permission: a cgroup without RT runtime
            send("error", f"capture: real-time scheduling refused ({exc.strerror or exc})", None)
            return

    shm = shared_memory.SharedMemory(name=shm_name)
    control_block = np.ndarray((1,), CONTROL, buffer=shm.buf[:CONTROL.itemsize])
    headers = [slot_header(shm, i) for i in range(opts.slots)]
    slot_pixels = [slot_array(shm, i) for i in range(opts.slots)]
    seq = int(control_block["latest"][0])   # frames written by earlier capture processes count on
    last_shape = ((int(headers[seq % opts.slots]["h"][0]), int(headers[seq % opts.slots]["w"][0]))
                  if seq > 0 else None)
    next_index = index_base
    attempt = 0
    opened_once = False
    t_start = time.monotonic()
    delivered = already_delivered
    errors_before = 0                     # decode errors of sources already closed
    try:
        while not ctl.poll():
            try:
                src = open_source(opts.source, pix_fmt=opts.pix_fmt, size=opts.size,
                                  open_timeout_s=opts.open_timeout_s, read_timeout_s=opts.read_timeout_s,
                                  yuv420=opts.yuv420, decode_threads=opts.decode_threads,
                                  skip_loop_filter=opts.skip_loop_filter)
            except SourceError as exc:
                live = _is_live(opts.source)
                waited = time.monotonic() - t_start
                if not live:
                    send("error", str(exc), None)            # a file that cannot be opened: user error
                    return
                if opened_once and not opts.reconnect:
                    send("error", str(exc), None)
                    return
                if not opened_once and opts.open_deadline_s is not None and waited >= opts.open_deadline_s:
                    send("error", f"{exc} (gave up after --open-timeout {opts.open_deadline_s:g} s)", None)
                    return
                attempt += 1
                delay = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
                state = "reconnecting" if opened_once else "connecting"
                send("status", state, f"{exc}; retrying in {delay:.2f} s")
                ctl.wait(delay)
                continue
            info = src.info
            opened_once = True
            attempt = 0
            if resume_after_pts is not None and not info.live:
                src.seek_after(resume_after_pts)
                resume_after_pts = None
            send("status", "live", info.as_dict())
            paced = info.kind == "file" and opts.realtime and not opts.fast
            t0 = pts0 = last_pts = None
            lost: str | None = None
            try:
                for frame in src.frames():
                    if ctl.poll():
                        break
                    if paced and frame.pts_s is not None:
                        # Re-anchor when the timestamps restart or jump (segments joined with `cat`):
                        # the clock must follow the frames, not race to catch up with them.
                        if t0 is None or frame.pts_s < last_pts - 0.001 or frame.pts_s > last_pts + 2.0:
                            t0, pts0 = time.monotonic(), frame.pts_s
                        last_pts = frame.pts_s
                        wait = t0 + (frame.pts_s - pts0) - time.monotonic()
                        if wait > 0 and ctl.wait(wait):
                            break
                    h, w = frame.shape[:2]
                    layout = LAYOUT_BGR if frame.planes is None else LAYOUT_I420
                    nbytes = frame.image.nbytes if layout == LAYOUT_BGR else yuv.i420_rows(h) * w
                    if h * w > MAX_FRAME_PIXELS:
                        send("error", f"{opts.source}: frame {w}x{h} larger than 4K", None)
                        return
                    if opts.fast:   # wait until the consumer took the previous frame
                        while int(control_block["consumed"][0]) < seq and not ctl.wait(0.5):
                            pass
                        if ctl.stopped:
                            break
                    if last_shape is not None and (h, w) != last_shape:
                        send("status", "live", {**info.as_dict(), "width": w, "height": h,
                                                "pix_fmt": frame.pix_fmt, "resized": True})
                    last_shape = (h, w)
                    seq += 1                                        # this frame's number
                    header = headers[seq % opts.slots]
                    header["seq"] = 2 * seq - 1                     # writing
                    slot = slot_pixels[seq % opts.slots][:nbytes]
                    if layout == LAYOUT_BGR:
                        slot[:] = frame.image.reshape(-1)
                    else:   # straight from the decoder's planes (skipping line padding): one copy
                        yuv.write_planes(slot, h, w, frame.planes)
                    header["layout"] = layout
                    header["index"] = next_index
                    header["pts"] = np.nan if frame.pts_s is None else frame.pts_s
                    header["t_mono"], header["t_wall"] = time.monotonic(), time.time()
                    header["h"], header["w"] = h, w
                    header["decode_errors"] = errors_before + src.decode_errors
                    header["seq"] = 2 * seq                         # complete
                    control_block["latest"] = seq                   # the newest frame, for the reader
                    next_index += 1
                    try:
                        os.write(notify_fd, b"f")
                    except BlockingIOError:
                        pass                                        # the parent has wake-ups queued
                    except OSError:
                        return                                      # parent gone
                    delivered += 1
                    if opts.max_frames and delivered >= opts.max_frames:
                        send("status", "ended", f"stopped after --max-frames {opts.max_frames}")
                        return
            except SourceError as exc:
                if not info.live:
                    send("error", str(exc), None)
                    return
                lost = str(exc)
            finally:
                errors_before += src.decode_errors
                if seq > 0:
                    headers[seq % opts.slots]["decode_errors"] = errors_before
                src.close()
            if ctl.stopped:
                return
            if not info.live:
                send("status", "ended", "end of file")
                return
            if not opts.reconnect:
                send("status", "ended", lost or "stream ended")
                return
            attempt += 1
            delay = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
            send("status", "reconnecting", f"{lost or 'stream ended'}; reconnecting in {delay:.2f} s")
            ctl.wait(delay)
    except Exception as exc:   # report, never die silently
        send("error", f"capture failed: {type(exc).__name__}: {exc}", None)
    finally:
        slot = header = None                      # every view of the mapping goes before close()
        del control_block, headers, slot_pixels, slot, header
        shm.close()


def slot_header(shm: shared_memory.SharedMemory, i: int) -> np.ndarray:
    start = CONTROL_BYTES + i * SLOT_BYTES
    return np.ndarray((1,), HEADER, buffer=shm.buf[start:start + HEADER.itemsize])


def slot_array(shm: shared_memory.SharedMemory, i: int) -> np.ndarray:
    """Slot i's pixel bytes (a view of the mapping)."""
    start = CONTROL_BYTES + i * SLOT_BYTES + HEADER_BYTES
    return np.frombuffer(shm.buf[start:start + MAX_FRAME_BYTES], np.uint8)


def parse_catch_up(spec: str | None) -> float | None:
    """--catch-up-ms: 'auto' (None: one frame period of the source), 'off' or a number of ms >= 0."""
    if spec is None or str(spec).strip().lower() == "auto":
        return None
    text = str(spec).strip().lower()
    if text == "off":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise UserError(f"--catch-up-ms must be auto, off or a number of milliseconds >= 0, not {spec!r}")
    return value


def _is_live(source: str) -> bool:
    from .sources import classify_spec
    try:
        return classify_spec(source) != "file"
    except SourceError:
        return False


class CaptureProcess:
    """Parent-side handle. Use as a context manager: the process is always stopped and joined."""

    def __init__(self, opts: CaptureOptions):
        self.opts = opts
        self._ctx = mp.get_context("spawn")
        if opts.slots < 1:
            raise ValueError("CaptureOptions.slots must be at least 1")
        self.slots = opts.slots
        self.shm = shared_memory.SharedMemory(create=True, size=CONTROL_BYTES + self.slots * SLOT_BYTES)
        self._control_block = np.ndarray((1,), CONTROL, buffer=self.shm.buf[:CONTROL.itemsize])
        self._control_block[0] = (0, 0)
        self._headers = [slot_header(self.shm, i) for i in range(self.slots)]
        for hdr in self._headers:
            hdr[0] = (0, -1, np.nan, 0.0, 0.0, 0, 0, 0, LAYOUT_BGR)
        self._busy_s: list[float] = []     # the loop's recent work per frame (catch-up rule)
        self._t_handed: float | None = None   # when the last frame handed out was taken
        self._interval_s: list[float] = []    # recent capture intervals, when the rate is unknown
        self._t_last_capture = 0.0
        self.caught_up = 0                 # frames taken although a newer one was waiting
        self.skipped_overwritten = 0       # skipped: overwritten in the ring before the loop was free
        self.skipped_passed_over = 0       # skipped: still in the ring, but too old for the catch-up budget
        self.proc = None
        self._notify = self._events = self._control = None
        self.last_seq = 0
        self.last_index = -1
        self.last_pts: float | None = None
        self.delivered = 0
        self.skipped_total = 0
        self.decode_errors = 0            # damaged packets skipped, all capture processes together
        self._errors_before = 0           # of capture processes that died
        self.restarts = 0
        self._restarts_without_progress = 0
        self._restart_at: float | None = None
        self.state = "connecting"
        self.state_message = "waiting for the source"
        self.source_info: dict = {"url": opts.source}
        self.error: str | None = None
        self._closing = False
        self._pending: list[tuple[str, str]] = []
        self.live = _is_live(opts.source)

    # ---- child lifecycle ------------------------------------------------------------------
    def _start(self) -> None:
        notify_r, notify_w = self._ctx.Pipe(duplex=False)
        events_r, events_w = self._ctx.Pipe(duplex=False)
        control_r, control_w = self._ctx.Pipe(duplex=False)
        resume = self.last_pts if (self.delivered and not self.live) else None
        self.proc = self._ctx.Process(
            target=_capture_main, name="sonoplane-capture", daemon=True,
            args=(self.opts, self.shm.name, notify_w, events_w, control_r, os.getpid(),
                  self.last_index + 1, resume, self.delivered))
        self.proc.start()
        # Our copies of the child's ends: closing them makes end-of-file mean "the other side died".
        for conn in (notify_w, events_w, control_r):
            conn.close()
        self._notify, self._events, self._control = notify_r, events_r, control_w
        self._delivered_at_start = self.delivered

    def __enter__(self) -> "CaptureProcess":
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "error")

    def _drain_events(self) -> None:
        if self._events is None:
            return
        try:
            while self._events.poll(0):
                kind, a, b = self._events.recv()
                if kind == "error":
                    self.state, self.error, self.state_message = "error", a, a
                else:
                    self.state = a
                    if isinstance(b, dict):
                        self.source_info = {**self.source_info, **b}
                        self.state_message = ""
                    else:
                        self.state_message = b or ""
                self._pending.append((self.state, self.state_message))
        except (EOFError, OSError):
            pass              # the child is gone; _check_child says what happens next

    def _check_child(self) -> None:
        """A capture process that died without ending properly is restarted with backoff."""
        if self._closing or self.finished:
            return
        now = time.monotonic()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self.restarts += 1
                self._start()
            return
        if self.proc.is_alive():
            return
        self._drain_events()       # it may have said its last word just before exiting
        if self.finished:
            return
        code = self.proc.exitcode
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self._errors_before = self.decode_errors
        progressed = self.delivered > self._delivered_at_start
        self._restarts_without_progress = 0 if progressed else self._restarts_without_progress + 1
        if not self.live and self._restarts_without_progress >= MAX_RESTARTS_WITHOUT_PROGRESS:
            self.state = "error"
            self.error = self.state_message = (f"capture process died {self._restarts_without_progress} times "
                                               f"without progress ({why})")
            self._pending.append((self.state, self.state_message))
            return
        delay = RESTART_BACKOFF_S[min(self._restarts_without_progress, len(RESTART_BACKOFF_S) - 1)]
        where = f" from frame {self.last_index + 1}" if self.delivered and not self.live else ""
        self.state = "reconnecting"
        self.state_message = f"capture process died ({why}); restarting{where} in {delay:.1f} s"
        self._pending.append((self.state, self.state_message))
        self._close_pipes()
        self._restart_at = now + delay

    def poll_events(self) -> list[tuple[str, str]]:
        """Status changes since the last call: [(state, message)]; restarts a dead capture."""
        if self.proc is not None and self._restart_at is None:
            self._drain_events()
        self._check_child()
        changes, self._pending = self._pending, []
        return changes

    # ---- frames ---------------------------------------------------------------------------
    def next_frame(self, timeout_s: float = 0.2) -> CapturedFrame | None:
        """The next frame to process, or None after timeout_s (never longer): the newest frame not
        yet taken, or an older one still in the ring that the catch-up rule lets through."""
        now = time.monotonic()
        deadline = now + timeout_s
        if self._t_handed is not None:   # the caller worked on the last frame until now
            self._busy_s.append(now - self._t_handed)
            del self._busy_s[:-BUSY_WINDOW]
            self._t_handed = None
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._restart_at is not None or self.proc is None:
                if self._restart_at is not None and remaining > 0:
                    time.sleep(min(remaining, 0.05))
                return None
            try:
                ready, _, _ = select.select([self._notify.fileno(), self._events.fileno()], [], [],
                                            min(remaining, 0.1))
            except (OSError, ValueError):
                return None
            if self._notify.fileno() in ready:
                try:
                    if not os.read(self._notify.fileno(), 65536):   # end-of-file: the child died
                        self._check_child()
                        return self._take()
                except OSError:
                    return None
            elif ready:            # an event (or the child's end): let poll_events handle it
                return self._take()
            elif not self.proc.is_alive():
                return self._take()

    def catch_up_budget_s(self) -> float:
        """How soon after its capture an older frame must be publishable to be taken (0: never)."""
        if self.opts.catch_up_ms is not None:
            return max(0.0, self.opts.catch_up_ms / 1e3)
        fps = self.source_info.get("fps") or 0.0
        if fps > 0:
            return 1.0 / fps
        if len(self._interval_s) >= BUSY_MIN_SAMPLES:   # a live source without a nominal rate
            return float(np.median(self._interval_s))
        return 0.0

    def busy_estimate_s(self) -> float | None:
        """The caller's median work per frame over the last BUSY_WINDOW frames (None: too few yet)."""
        return float(np.median(self._busy_s)) if len(self._busy_s) >= BUSY_MIN_SAMPLES else None

    def _oldest_in_ring(self, latest: int) -> int:
        """The oldest frame not yet taken that the ring can still hold (older ones are overwritten),
        `latest` being the newest complete one."""
        return max(self.last_seq + 1, latest - self.slots + 1)

    def _choose(self, latest: int, now: float) -> int:
        """The number of the frame to take, `latest` being the newest complete one.

        Newest wins, except that the oldest frame still in the ring whose age plus the loop's
        recent work per frame fits the catch-up budget goes first: it would still be published
        within the budget (one frame period by default), so it is classified instead of skipped,
        and the newer frames wait behind it for at most that long. When the loop cannot keep up
        (its work alone exceeds the budget) or in the first frames (no estimate yet), this is the
        single slot's rule: newest only."""
        first = self._oldest_in_ring(latest)
        if first >= latest:
            return latest
        budget = self.catch_up_budget_s()
        busy = self.busy_estimate_s()
        if budget <= 0 or busy is None or busy >= budget:
            return latest
        for seq in range(first, latest):
            hdr = self._headers[seq % self.slots]
            if int(hdr["seq"][0]) != 2 * seq:       # being overwritten: gone
                continue
            if now - float(hdr["t_mono"][0]) + busy <= budget:
                return seq
        return latest

    def _take(self) -> CapturedFrame | None:
        """Seqlock read of the chosen slot: copy, then check that the writer did not move meanwhile
        (if it did, that frame is gone: choose again)."""
        gone = self.last_seq              # frames up to this one are taken or overwritten
        for _ in range(50):
            latest = int(self._control_block["latest"][0])
            if latest <= self.last_seq:
                return None
            t_start = time.monotonic()
            seq = self._choose(latest, t_start) if gone == self.last_seq else latest
            hdr = self._headers[seq % self.slots]
            s1 = int(hdr["seq"][0])
            if s1 != 2 * seq:                # the child is already writing a newer frame here
                gone = seq
                if s1 & 1:                   # mid-write: it never holds this long
                    time.sleep(0.0005)
                continue
            h0 = hdr[0].copy()
            h, w, layout = int(h0["h"]), int(h0["w"]), int(h0["layout"])
            shape = (yuv.i420_rows(h), w) if layout == LAYOUT_I420 else (h, w, 3)
            pixels = slot_array(self.shm, seq % self.slots)[:int(np.prod(shape))].reshape(shape).copy()
            if int(hdr["seq"][0]) != s1:     # overwritten while we copied: take a newer one
                gone = seq
                continue
            skipped = max(0, seq - self.last_seq - 1)
            if seq < latest:
                self.caught_up += 1
            in_ring = self._oldest_in_ring(latest)
            self.skipped_passed_over += max(0, seq - in_ring)
            self.skipped_overwritten += skipped - max(0, seq - in_ring)
            if self.last_seq > 0 and h0["t_mono"] > 0 and seq > self.last_seq:
                self._interval_s.append((float(h0["t_mono"]) - self._t_last_capture) / (seq - self.last_seq))
                del self._interval_s[:-BUSY_WINDOW]
            self._t_last_capture = float(h0["t_mono"])
            self.last_seq = seq
            self._t_handed = t_start
            self._control_block["consumed"] = seq
            if self.opts.fast:
                try:
                    os.write(self._control.fileno(), b"c")
                except OSError:
                    pass
            pts = float(h0["pts"])
            frame = CapturedFrame(pixels, layout, h, w, int(h0["index"]), None if np.isnan(pts) else pts,
                                  float(h0["t_mono"]), float(h0["t_wall"]), skipped)
            self.skipped_total += skipped
            self.delivered += 1 + skipped
            self.last_index, self.last_pts = frame.index, frame.pts_s
            self.decode_errors = self._errors_before + int(h0["decode_errors"])
            return frame
        return None

    # ---- shutdown -------------------------------------------------------------------------
    def _close_pipes(self) -> None:
        for conn in (getattr(self, "_notify", None), getattr(self, "_events", None),
                     getattr(self, "_control", None)):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self._notify = self._events = self._control = None

    def close(self) -> None:
        """Stop and join the capture process (bounded: stop request, then SIGTERM, then SIGKILL)."""
        self._closing = True
        self._restart_at = None
        if self.proc is not None and self.proc.pid is not None:
            if self._control is not None:
                try:
                    os.write(self._control.fileno(), b"q")
                except OSError:
                    pass
            self.proc.join(timeout=CLOSE_TIMEOUT_S)
            if self.proc.is_alive():
                self.proc.kill()              # it ignores SIGTERM by design
                self.proc.join(timeout=CLOSE_TIMEOUT_S)
            if self._events is not None:
                self._drain_events()
                self._pending.clear()
        self._close_pipes()
        self._headers, self._control_block = [], None   # views of the mapping go before close()
        try:
            self.shm.close()
            self.shm.unlink()
        except (FileNotFoundError, BufferError):
            pass
