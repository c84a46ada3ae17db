import numpy as np
import pytest

from streamer.bench_metrics import (flicker_per_min, macro_f1, percentiles, stable_segments,
                                    stage_durations_ms, time_to_stable)


def test_percentiles_tail_flatness_and_warmup_drop():
    vals = [1000.0] * 5 + list(range(1, 101))       # 5 warm-up outliers, then 1..100
    s = percentiles(vals, drop_first=5)
    assert s["count"] == 100 and s["max"] == 100
    assert s["p50"] == pytest.approx(50.5) and s["flatness"] == pytest.approx(90.1 - 10.9)
    assert s["tail"] == pytest.approx(100 - 95.05)


def test_stage_durations():
    r = {"stages": {"capture": 1.0, "preprocess": 1.002, "infer": 1.010, "smooth": 1.0105, "publish": 1.011}}
    d = stage_durations_ms(r, received_mono=1.013)
    assert d["preprocess->infer"] == pytest.approx(8.0)
    assert d["capture->publish"] == pytest.approx(11.0) and d["capture->subscriber"] == pytest.approx(13.0)


def test_macro_f1_known_answer():
    truth = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "b"]
    # a: tp1 fp0 fn1 -> 2/3 ; b: tp2 fp1 fn0 -> 4/5
    assert macro_f1(truth, pred) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_segments_flicker_and_time_to_stable():
    fps = 10
    times = [i / fps for i in range(60)]
    kinds = ["stable"] * 30 + ["transition"] * 5 + ["stable"] * 25
    planes = ["brain"] * 30 + [""] * 5 + ["femur"] * 25
    segs = stable_segments(times, kinds, planes)
    assert [(s.plane, s.start_t, s.end_t) for s in segs] == [("brain", 0.0, 2.9), ("femur", 3.5, 5.9)]
    # smoothed: right from 0.3 s in segment 1 (one flicker at 1.5 s), femur right from 4.2 s
    shown = ["uncertain"] * 3 + ["brain"] * 12 + ["abdomen"] + ["brain"] * 14 + ["brain"] * 5 + \
            ["brain"] * 7 + ["femur"] * 18
    assert time_to_stable(segs[0], times, shown) == pytest.approx(0.3)
    assert time_to_stable(segs[1], times, shown) == pytest.approx(0.7)
    per_seg = [[shown[i] for i, t in enumerate(times) if s.start_t <= t <= s.end_t] for s in segs]
    minutes = [(s.end_t - s.start_t + 1 / fps) / 60 for s in segs]
    # seg1: uncertain->brain, brain->abdomen, abdomen->brain = 3 ; seg2: brain->femur = 1
    assert flicker_per_min(per_seg, minutes) == pytest.approx(4 / (5.5 / 60))


def test_time_to_stable_never_settles():
    times = [i / 10 for i in range(20)]
    seg = stable_segments(times, ["stable"] * 20, ["brain"] * 20)[0]
    assert time_to_stable(seg, times, ["femur"] * 20) is None
