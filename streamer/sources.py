"""Video sources: thin explicit wrappers over PyAV (FFmpeg) and OpenCV VideoCapture.

    open_source("clip.mp4")                      # file (PyAV)
    open_source("udp://127.0.0.1:5000")          # network stream: udp, rtp, rtsp, srt, tcp, http(s)
    open_source("/dev/video0", pix_fmt="mjpeg", size="1920x1080")   # V4L2 frame grabber (PyAV)
    open_source("0")                             # camera index (OpenCV)

A source yields `SourceFrame`s (BGR uint8, or with `yuv420=True` the decoder's own YUV 4:2:0 planes
where the video has them: streamer/yuv.py) and raises `SourceError` with a one-line message for
anything a user can get wrong: missing file, corrupt file, unsupported URL, unreachable device.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np

from engines.errors import SourceError

MAX_CONSECUTIVE_ERRORS = 500   # damaged packets in a row (about 15 s of 30 fps video) before giving up
NETWORK_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "srt", "tcp", "http", "https", "rtmp")
DECODE_THREAD_TYPES = ("size", "auto", "frame", "slice", "none")
# `size` (the default) decodes frames up to this many pixels (1080p) on one thread (slice threading,
# as far as the encoder made slices) and larger ones with FFmpeg's frame threads. Measured here
# (docs/latency.md, Session 7): one thread decodes 1080p H.264 at ~170 fps, far above 60, while frame
# threading holds every frame back 2 more frames (33 ms at 60 fps) and, under load, grows its
# threads' malloc arenas by ~30 MB that are never given back; one thread decodes 4K at only ~59 fps,
# so 4K keeps frame threads for throughput.
SINGLE_THREAD_DECODE_MAX_PIXELS = 1920 * 1088
# FFmpeg's skip_loop_filter (AVDiscard): which frames the H.264 / HEVC decoder leaves unfiltered
# (no deblocking). Cheaper decode, different pixels: opt-in, measured in docs/latency.md "Session 7".
# noref: frames no other frame predicts from (errors do not spread); bidir: B-frames; nokey: all
# but keyframes; all: every frame (errors spread along prediction until the next keyframe).
SKIP_LOOP_FILTER = ("off", "noref", "bidir", "nokey", "all")


def parse_decode_threads(text: str | None) -> tuple[str, int]:
    """`sonoplane run --decode-threads TYPE[:N]` -> (PyAV thread_type, thread_count; 0 = FFmpeg's own
    choice). FRAME threading decodes N frames at once: more throughput, N-1 frames of decoder delay
    before the capture stamps a frame; SLICE splits one frame (only as far as the encoder made slices);
    AUTO lets FFmpeg pick (frame where it can); SIZE (the default) is SLICE up to 1080p and AUTO above
    (resolve_decode_threads, once the frame size is known). Bad input: SourceError (one line)."""
    if text is None or not text.strip():
        return "SIZE", 0
    kind, _, count = text.strip().lower().partition(":")
    if kind not in DECODE_THREAD_TYPES:
        raise SourceError(f"--decode-threads {text}: choose {', '.join(DECODE_THREAD_TYPES)}, optionally :N")
    try:
        n = int(count) if count else 0
    except ValueError:
        n = -1
    if n < 0 or n > 64:
        raise SourceError(f"--decode-threads {text}: the thread count must be 0 (FFmpeg's choice) to 64")
    return kind.upper(), n


def resolve_decode_threads(thread_type: str, width: int, height: int) -> str:
    """The PyAV thread_type for a parsed type and the stream's frame size: SIZE becomes SLICE for
    frames up to SINGLE_THREAD_DECODE_MAX_PIXELS, AUTO above. A live stream joined before its first
    keyframe has no size yet when it opens (and the thread type cannot change once decoding starts):
    SLICE too, because scanner outputs are mostly 1080p and one thread still decodes 4K at ~59 fps here."""
    if thread_type != "SIZE":
        return thread_type
    return "AUTO" if width * height > SINGLE_THREAD_DECODE_MAX_PIXELS else "SLICE"


def parse_skip_loop_filter(text: str | None) -> str | None:
    """`sonoplane run --skip-loop-filter WHICH` -> FFmpeg's skip_loop_filter value, or None for
    off (the decoder's normal, filtered output). Bad input: SourceError (one line)."""
    value = (text or "off").strip().lower()
    if value not in SKIP_LOOP_FILTER:
        raise SourceError(f"--skip-loop-filter {text}: choose {', '.join(SKIP_LOOP_FILTER)}")
    return None if value == "off" else value


@dataclass
class SourceFrame:
    image: np.ndarray | None   # HxWx3 BGR uint8 (None when `planes` is given)
    index: int                 # 0-based frame count from this source
    pts_s: float | None        # presentation time in seconds, when the container has it
    pix_fmt: str               # the source's native pixel format (yuv420p, mjpeg, bgr24...)
    # Limited-range YUV 4:2:0 (Y, U, V) views of the decoder's buffers (valid until the next frame),
    # instead of `image`: only when the source was opened with yuv420=True and the frame qualifies.
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.planes[0].shape if self.planes is not None else self.image.shape


@dataclass
class SourceInfo:
    url: str
    kind: str                  # file | network | v4l2 | camera
    width: int
    height: int
    fps: float                 # nominal rate (0 when unknown)
    pix_fmt: str
    live: bool                 # live sources reconnect; files end

    def as_dict(self) -> dict:
        return {"url": self.url, "kind": self.kind, "width": self.width, "height": self.height,
                "fps": round(self.fps, 3), "pix_fmt": self.pix_fmt}


def classify_spec(spec: str) -> str:
    """file | network | v4l2 | camera; SourceError for unsupported schemes."""
    if spec.isdigit():
        return "camera"
    if spec.startswith("/dev/video"):
        return "v4l2"
    scheme = urlparse(spec).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        return "network"
    if scheme and scheme != "file" and len(scheme) > 1:   # len>1: a Windows drive letter is a path
        raise SourceError(f"unsupported source URL scheme '{scheme}://' in {spec!r} "
                          f"(supported: file paths, {', '.join(s + '://' for s in NETWORK_SCHEMES)}, "
                          f"/dev/videoN, camera index)")
    return "file"


class PyAVSource:
    """Files, network streams and V4L2 devices through PyAV/FFmpeg."""

    def __init__(self, spec: str, kind: str, pix_fmt: str | None = None, size: str | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 5.0, yuv420: bool = False,
                 decode_threads: str | None = None, skip_loop_filter: str | None = None):
        import av

        self.spec, self.kind = spec, kind
        self.yuv420 = yuv420
        options: dict[str, str] = {}
        fmt = None
        url = spec
        if kind == "file":
            path = Path(spec[7:] if spec.startswith("file://") else spec)
            if path.is_dir():
                raise SourceError(f"{path} is a directory, not a video file")
            if not path.exists():
                raise SourceError(f"video file not found: {path}")
            if not path.is_file():
                raise SourceError(f"not a video file: {path}")
            url = str(path)
        elif kind == "v4l2":
            if not os.path.exists(spec):
                raise SourceError(f"video device not found: {spec} (is the frame grabber connected?)")
            fmt = "v4l2"
            if pix_fmt:
                options["input_format"] = pix_fmt
            if size:
                options["video_size"] = size
        elif kind == "network":
            scheme = urlparse(spec).scheme.lower()
            if scheme in ("rtsp", "rtsps"):
                options["rtsp_transport"] = "tcp"
            if scheme in ("udp", "rtp"):
                # Large socket buffer: a 1080p I-frame burst overflows the default and drops packets.
                options.setdefault("buffer_size", str(4 << 20))
                options.setdefault("overrun_nonfatal", "1")
        try:
            self.container = av.open(url, format=fmt, options=options,
                                     timeout=(open_timeout_s, read_timeout_s))
        except av.error.FileNotFoundError:
            raise SourceError(f"cannot open {spec}: not found") from None
        except av.error.ExitError:
            raise SourceError(f"cannot open {spec}: no data within {open_timeout_s:g} s") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {spec}: {_reason(exc)}") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{spec}: no video stream in it")
        self.stream = self.container.streams.video[0]
        ctx = self.stream.codec_context
        thread_type, thread_count = parse_decode_threads(decode_threads)
        self.decode_threading = resolve_decode_threads(thread_type, ctx.width or 0, ctx.height or 0)
        self.stream.thread_type = self.decode_threading
        if thread_count:
            ctx.thread_count = thread_count
        skip = parse_skip_loop_filter(skip_loop_filter)
        if skip is not None:     # read when the decoder opens (PyAV opens it on the first packet)
            ctx.options = {**ctx.options, "skip_loop_filter": skip}
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.info = SourceInfo(url=spec, kind=kind, width=ctx.width or 0, height=ctx.height or 0,
                               fps=float(rate) if rate else 0.0,
                               pix_fmt=str(ctx.pix_fmt or (pix_fmt or "?")), live=kind != "file")
        self.decode_errors = 0          # damaged packets skipped
        self.read_timeout_s = read_timeout_s
        self._skip_until_pts: float | None = None

    def seek_after(self, pts_s: float) -> None:
        """Resume after the frame at pts_s (a restarted capture of a file)."""
        try:
            self.container.seek(int(pts_s / self.stream.time_base), stream=self.stream, backward=True)
        except Exception:
            pass                        # not seekable: decode from the start and skip
        self._skip_until_pts = pts_s

    def frames(self) -> Iterator[SourceFrame]:
        """Decoded frames. A damaged packet is skipped and counted (decode_errors); only a long
        run of damage (MAX_CONSECUTIVE_ERRORS packets without one good frame) ends the source."""
        import av

        index = 0
        consecutive = 0
        tb = self.stream.time_base
        demux = self.container.demux(self.stream)

        def damaged(exc) -> None:
            nonlocal consecutive, demux
            self.decode_errors += 1
            consecutive += 1
            if consecutive > MAX_CONSECUTIVE_ERRORS:
                raise SourceError(f"{self.spec}: unreadable after {index} frames "
                                  f"({self.decode_errors} damaged packets): {_reason(exc)}") from None

        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.EOFError:
                break
            except av.error.ExitError:
                raise SourceError(f"{self.spec}: no data for {self.read_timeout_s:g} s "
                                  f"(the source stopped sending)") from None
            except av.error.FFmpegError as exc:
                damaged(exc)
                demux = self.container.demux(self.stream)   # carry on from where the reader is
                continue
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:
                damaged(exc)
                continue
            for frame in decoded:
                pts = float(frame.pts * tb) if frame.pts is not None and tb else None
                if self._skip_until_pts is not None:
                    if pts is not None and pts <= self._skip_until_pts + 1e-6:
                        continue
                    self._skip_until_pts = None
                consecutive = 0
                planes = _yuv420_planes(frame) if self.yuv420 else None
                image = None if planes is not None else frame.to_ndarray(format="bgr24")
                yield SourceFrame(image, index, pts, str(frame.format.name), planes)
                index += 1
        if index == 0 and self.kind == "file" and self._skip_until_pts is None:
            raise SourceError(f"{self.spec}: no decodable video frames (corrupt or truncated file?)")

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


class OpenCVSource:
    """A camera by index through OpenCV VideoCapture."""

    def __init__(self, spec: str, size: str | None = None, **_):
        import cv2

        self.spec = spec
        self.cap = cv2.VideoCapture(int(spec))
        if not self.cap.isOpened():
            raise SourceError(f"cannot open camera index {spec} (no such device or busy)")
        if size:
            w, h = (int(v) for v in size.lower().split("x"))
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        self.decode_errors = 0
        self.info = SourceInfo(url=spec, kind="camera", width=int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                               height=int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                               fps=float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0), pix_fmt="bgr24", live=True)

    def frames(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            ok, image = self.cap.read()
            if not ok:
                raise SourceError(f"camera {self.spec}: read failed")
            yield SourceFrame(image, index, None, "bgr24")
            index += 1

    def seek_after(self, pts_s: float) -> None:
        pass

    def close(self) -> None:
        self.cap.release()


AVCOL_RANGE_JPEG = 2     # full-range ("JPEG") YUV: not what the limited-range conversion expects


def _yuv420_planes(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(Y, U, V) views of a limited-range 4:2:0 frame with even sizes (streamer/yuv.py), else None
    (the caller converts to BGR). Views skip the decoder's line padding; no copy."""
    if frame.format.name != "yuv420p" or (frame.width | frame.height) & 1 or \
            getattr(frame, "color_range", 0) == AVCOL_RANGE_JPEG:
        return None
    return tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes)


def open_source(spec: str, pix_fmt: str | None = None, size: str | None = None,
                open_timeout_s: float = 5.0, read_timeout_s: float = 5.0, yuv420: bool = False,
                decode_threads: str | None = None, skip_loop_filter: str | None = None):
    """yuv420: yield the decoder's YUV 4:2:0 planes where a frame has them (the capture process);
    the OpenCV camera source is always BGR. decode_threads: parse_decode_threads; skip_loop_filter:
    parse_skip_loop_filter (PyAV sources)."""
    kind = classify_spec(str(spec))
    if kind == "camera":
        return OpenCVSource(spec, size=size)
    return PyAVSource(spec, kind, pix_fmt=pix_fmt, size=size, open_timeout_s=open_timeout_s,
                      read_timeout_s=read_timeout_s, yuv420=yuv420, decode_threads=decode_threads,
                      skip_loop_filter=skip_loop_filter)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
