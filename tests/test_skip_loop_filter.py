"""`sonoplane run --skip-loop-filter` (opt-in, pixel-changing decode without H.264 deblocking),
issue 11: the option reaches the decoder, `off` is the normal decode, bad values are one line."""
import numpy as np
import pytest

from engines.errors import SourceError
from streamer.sources import open_source, parse_skip_loop_filter

from .conftest import SAMPLE_CLIP, run_cli


def _luma(skip: str | None, n: int = 30) -> list[np.ndarray]:
    src = open_source(str(SAMPLE_CLIP), yuv420=True, skip_loop_filter=skip)
    try:
        out = []
        for frame in src.frames():
            out.append(frame.planes[0].copy())
            if len(out) == n:
                return out
    finally:
        src.close()
    return out


def test_skip_loop_filter_values():
    assert parse_skip_loop_filter(None) is None and parse_skip_loop_filter("off") is None
    assert parse_skip_loop_filter(" ALL ") == "all" and parse_skip_loop_filter("noref") == "noref"
    for bad in ("yes", "none", "1"):
        with pytest.raises(SourceError, match="--skip-loop-filter"):
            parse_skip_loop_filter(bad)


def test_skipping_the_loop_filter_changes_pixels_slightly_and_off_changes_none():
    normal, off, skipped = _luma(None), _luma("off"), _luma("all")
    assert len(normal) == len(off) == len(skipped) == 30
    assert all(np.array_equal(a, b) for a, b in zip(normal, off))
    diffs = [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(normal, skipped)]
    # The decoder really left the deblocking out (the clip was encoded with it on), and what it
    # changed is small: block edges, well under one grey level on average.
    assert sum(d > 0 for d in diffs) >= 25
    assert max(diffs) < 2.0


def test_bad_skip_loop_filter_is_one_line():
    r = run_cli("run", "--source", SAMPLE_CLIP, "--skip-loop-filter", "everything")
    assert r.returncode == 2 and "--skip-loop-filter" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
