"""The capture's ring of shared-memory slots and its catch-up rule (streamer/capture.py).

A frame that arrives while the loop works on the previous one, with a newer frame right behind
it (the decoder's burst before a keyframe), is processed instead of skipped when it can still be
published within the catch-up budget; otherwise the newest frame wins, as with a single slot.
Behaviour only: which frames are handed out, in which order, and what is counted as skipped.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.capture import (CaptureOptions, CaptureProcess, LAYOUT_I420, parse_catch_up, slot_array)
from engines.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = ROOT / "streamer" / "assets" / "sample_scan.mp4"     # 30 fps
STALL_EVERY = 12          # frames between two long stalls of the consumer
WORK_S = 0.010            # the consumer's usual work per frame (a third of a 30 fps period)
STALL_S = 0.090           # a long frame: two more frames (33 and 67 ms later) arrive meanwhile


def consume(opts: CaptureOptions, work_s: float = WORK_S, stall_s: float = STALL_S) -> tuple[list, CaptureProcess]:
    """Take every frame the capture hands out, working work_s on each and stall_s on every
    STALL_EVERY-th; returns the frames taken (index, skipped_since_last) and the handle."""
    taken = []
    with CaptureProcess(opts) as cap:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cap.poll_events()
            frame = cap.next_frame(0.5)
            if frame is None:
                if cap.finished:
                    break
                continue
            taken.append((frame.index, frame.skipped_since_last))
            stall = len(taken) > 10 and len(taken) % STALL_EVERY == 0
            time.sleep(stall_s if stall else work_s)
        assert cap.state == "ended", cap.state_message
    return taken, cap


def check_accounting(taken: list, cap: CaptureProcess, n: int) -> None:
    indices = [i for i, _ in taken]
    assert indices == sorted(set(indices)), "frames handed out twice or out of order"
    assert sum(s for _, s in taken) == cap.skipped_total
    assert len(taken) + cap.skipped_total == indices[-1] + 1 == n


def test_a_generous_budget_loses_no_frame_to_a_stall_and_keeps_the_order():
    n = 60
    # 6 slots: a stall overshooting on a loaded box still cannot lap the ring
    taken, cap = consume(CaptureOptions(str(SAMPLE_CLIP), max_frames=n, catch_up_ms=1000, slots=6))
    check_accounting(taken, cap, n)
    assert cap.skipped_total == 0
    assert cap.caught_up >= 3        # each stall left older frames waiting behind a newer one


def test_catch_up_off_is_the_single_slot_rule_newest_only():
    n = 60
    for opts in (CaptureOptions(str(SAMPLE_CLIP), max_frames=n, catch_up_ms=0),
                 CaptureOptions(str(SAMPLE_CLIP), max_frames=n, catch_up_ms=1000, slots=1)):
        taken, cap = consume(opts)
        check_accounting(taken, cap, n)
        assert cap.caught_up == 0
        assert cap.skipped_total >= 3    # at least the first frame of each stall's pair


def test_by_default_a_frame_that_cannot_be_published_within_one_period_is_skipped():
    """A 90 ms stall at 30 fps: the first frame behind it is ~57 ms old when the loop is free,
    beyond one period (33 ms): skipped for the newer one, as before the ring."""
    n = 60
    taken, cap = consume(CaptureOptions(str(SAMPLE_CLIP), max_frames=n))
    check_accounting(taken, cap, n)
    assert cap.catch_up_budget_s() == pytest.approx(1 / 30, rel=0.01)
    assert cap.skipped_total >= 3
    assert cap.skipped_passed_over + cap.skipped_overwritten == cap.skipped_total
    assert cap.skipped_passed_over >= 1   # a stall's older frame: still in the ring, but declined as too old


def test_a_consumer_slower_than_the_source_is_never_fed_old_frames():
    """40 ms of work per frame at 30 fps: the loop cannot keep up, so newest wins every time."""
    taken, cap = consume(CaptureOptions(str(SAMPLE_CLIP), max_frames=45, slots=3), work_s=0.040, stall_s=0.040)
    check_accounting(taken, cap, 45)
    assert cap.caught_up == 0
    assert cap.skipped_total >= 5


def fake_frame(cap: CaptureProcess, seq: int, t_mono: float, index: int) -> None:
    """Write frame `seq` into its slot exactly as the capture process does (seqlock, then latest)."""
    hdr = cap._headers[seq % cap.slots]
    hdr["seq"] = 2 * seq - 1
    slot_array(cap.shm, seq % cap.slots)[:24] = seq
    hdr["layout"], hdr["index"], hdr["pts"] = LAYOUT_I420, index, np.nan
    hdr["t_mono"], hdr["t_wall"], hdr["h"], hdr["w"] = t_mono, time.time(), 4, 4
    hdr["seq"] = 2 * seq
    cap._control_block["latest"] = seq


def test_the_rule_takes_the_oldest_frame_that_still_fits_the_budget():
    """No child process: frames written into the ring by hand, the parent's real reader."""
    cap = CaptureProcess(CaptureOptions(str(SAMPLE_CLIP), catch_up_ms=16.0, slots=3))
    try:
        now = time.monotonic()
        cap._busy_s = [0.008] * 10                   # the loop works 8 ms per frame
        for seq, age_ms in ((1, 12.0), (2, 6.0), (3, 1.0)):
            fake_frame(cap, seq, now - age_ms / 1e3, index=100 + seq)
        # frame 1: 12 + 8 > 16 ms -> too old; frame 2: 6 + 8 <= 16 -> taken, frame 1 skipped
        frame = cap._take()
        assert (frame.index, frame.skipped_since_last, cap.caught_up) == (102, 1, 1)
        assert int(frame.pixels.reshape(-1)[0]) == 2
        cap._t_handed = None
        frame = cap._take()                          # the newest is always taken
        assert (frame.index, frame.skipped_since_last) == (103, 0)
        assert cap._take() is None                   # nothing new
        # frames 4..7 written while the loop was away: 4 was overwritten (3 slots), 5 is fresh enough
        for seq, age_ms in ((4, 30.0), (5, 7.0), (6, 3.0), (7, 0.5)):
            fake_frame(cap, seq, now - age_ms / 1e3, index=100 + seq)
        cap._busy_s = [0.008] * 10
        frame = cap._take()
        assert (frame.index, frame.skipped_since_last) == (105, 1)
        # a loop as slow as the budget: newest only
        fake_frame(cap, 8, now, index=108)
        cap._busy_s = [0.020] * 10
        frame = cap._take()
        assert (frame.index, frame.skipped_since_last) == (108, 2)
        # too few frames seen to know the loop's work: newest only
        fake_frame(cap, 9, now, index=109)
        fake_frame(cap, 10, now, index=110)
        cap._busy_s = [0.001] * 3
        assert cap._take().index == 110
        assert cap.skipped_total == 1 + 1 + 2 + 1
    finally:
        cap.close()


def test_a_frame_overwritten_while_chosen_gives_way_to_the_newest():
    cap = CaptureProcess(CaptureOptions(str(SAMPLE_CLIP), catch_up_ms=50.0, slots=2))
    try:
        now = time.monotonic()
        cap._busy_s = [0.005] * 10
        fake_frame(cap, 1, now, index=1)
        fake_frame(cap, 2, now, index=2)
        cap._headers[1]["seq"] = 2 * 3 - 1           # the writer has started frame 3 in frame 1's slot
        frame = cap._take()
        assert (frame.index, frame.skipped_since_last) == (2, 1)
    finally:
        cap.close()


def test_the_budget_follows_the_source_rate_or_the_measured_interval():
    cap = CaptureProcess(CaptureOptions(str(SAMPLE_CLIP)))
    try:
        cap.source_info["fps"] = 60.0
        assert cap.catch_up_budget_s() == pytest.approx(1 / 60)
        cap.source_info["fps"] = 0.0                 # a live source without a nominal rate
        assert cap.catch_up_budget_s() == 0.0        # nothing measured yet: newest only
        cap._interval_s = [0.04] * 10
        assert cap.catch_up_budget_s() == pytest.approx(0.04)
    finally:
        cap.close()


@pytest.mark.parametrize("spec,value", [("auto", None), ("AUTO", None), ("off", 0.0), ("0", 0.0), ("12.5", 12.5)])
def test_catch_up_option_values(spec, value):
    assert parse_catch_up(spec) == value


@pytest.mark.parametrize("spec", ["-1", "soon", "nan", "inf"])
def test_catch_up_option_refuses_bad_values(spec):
    with pytest.raises(UserError, match="--catch-up-ms"):
        parse_catch_up(spec)


def test_bad_catch_up_option_is_one_line_before_anything_starts():
    proc = subprocess.run([sys.executable, "-m", "streamer", "run", "--source", str(SAMPLE_CLIP),
                           "--catch-up-ms", "soon", "--max-frames", "5"],
                          capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ,
                                                                          "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--catch-up-ms" in lines[0] and "Traceback" not in proc.stderr
