"""Latency stats (streamer/latency.py) on data with known answers, and tools/latency_report.py
on synthetic and (short) real runs."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer import latency
from engines.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
SAMPLE = ROOT / "streamer" / "assets" / "sample_scan.mp4"


def make_result(i: int, t0: float, durations_ms=(2.0, 10.0, 0.5, 0.25), skipped: int = 0) -> dict:
    """A result message whose stages are spaced by the given durations (ms)."""
    stamps = [t0]
    for d in durations_ms:
        stamps.append(stamps[-1] + d / 1e3)
    return {"v": 1, "kind": "result", "stream": "0", "frame": i, "t_capture_mono": t0,
            "stages": dict(zip(latency.STAGE_ORDER, stamps)), "skipped_total": skipped,
            "plane": "brain", "label": "Brain (Tv.)", "confidence": 0.9, "topk": [["Brain (Tv.)", 0.9, "brain"]]}


# --- stats -----------------------------------------------------------------------------------

def test_summarize_known_percentiles():
    s = latency.summarize(range(1, 101))          # 1..100, numpy linear interpolation
    assert s["count"] == 100 and s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p10"] == pytest.approx(10.9)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["p99.9"] == pytest.approx(99.901)
    assert s["max"] == 100 and s["min"] == 1
    assert s["tail"] == pytest.approx(100 - 95.05)       # p100 - p95
    assert s["flatness"] == pytest.approx(90.1 - 10.9)   # p90 - p10


def test_summarize_constant_is_flat_and_one_spike_is_tail():
    flat = latency.summarize([20.0] * 500)
    assert flat["flatness"] == 0 and flat["tail"] == 0 and flat["p99.9"] == 20
    spiky = latency.summarize([20.0] * 499 + [220.0])
    assert spiky["p50"] == 20 and spiky["flatness"] == 0      # the bulk is unchanged...
    assert spiky["tail"] == pytest.approx(200.0)              # ...the spike shows in the tail only
    assert latency.summarize([]) == {"count": 0}


def test_warmup_drop_by_frames_and_seconds():
    t = [100.0 + i * 0.1 for i in range(50)]                  # 10 fps
    assert latency.warmup_keep_mask(t, frames=5).sum() == 45
    assert not latency.warmup_keep_mask(t, frames=5)[:5].any()
    # 2 s at 10 fps = the first 20 results, whatever the frame count says
    assert latency.warmup_keep_mask(t, frames=0, seconds=2.0).sum() == 30
    assert latency.warmup_keep_mask(t, frames=25, seconds=2.0).sum() == 25   # both rules apply
    assert latency.warmup_keep_mask(t, frames=80).sum() == 0


def test_warmup_is_excluded_from_the_table():
    # 30 slow warm-up frames (500 ms infer) then 100 frames at 10 ms: warm-up must not show
    res = [make_result(i, 10.0 + i / 30, (2, 500 if i < 30 else 10, 0.5, 0.25)) for i in range(130)]
    table = latency.stage_table(res, warmup_frames=30)
    assert table["preprocess->infer"]["count"] == 100
    assert table["preprocess->infer"]["max"] == pytest.approx(10.0)
    with_warmup = latency.stage_table(res, warmup_frames=0)
    assert with_warmup["preprocess->infer"]["max"] == pytest.approx(500.0)


# --- stage durations -------------------------------------------------------------------------

def test_stage_durations_from_a_message():
    r = make_result(0, 1000.0, (3.0, 12.0, 0.5, 0.25))
    d = latency.stage_durations_ms(r)
    assert d["capture->preprocess"] == pytest.approx(3.0)
    assert d["preprocess->infer"] == pytest.approx(12.0)
    assert d["infer->smooth"] == pytest.approx(0.5)
    assert d["smooth->publish"] == pytest.approx(0.25)
    assert d["capture->publish"] == pytest.approx(15.75)
    assert "capture->subscriber" not in d
    d = latency.stage_durations_ms(r, received_mono=1000.0 + 0.0171)
    assert d["capture->subscriber"] == pytest.approx(17.1)


def test_stage_durations_reject_broken_messages():
    r = make_result(0, 5.0)
    del r["stages"]["infer"]
    with pytest.raises(ValueError, match="infer"):
        latency.stage_durations_ms(r)
    r = make_result(0, 5.0, (2.0, -1.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="backwards"):
        latency.stage_durations_ms(r)


def test_glass_to_glass_from_parts():
    g = latency.glass_to_glass_ms(30, 40.0, 60)
    # 33.3 ms capture frame + 40 ms rounded up to 3 vsyncs (50 ms) + 16.7 ms display
    assert g["processing_vsync_ms"] == pytest.approx(50.0)
    assert g["total_ms"] == pytest.approx(1000 / 30 + 50.0 + 1000 / 60)
    # exactly on a vsync stays there
    assert latency.glass_to_glass_ms(60, 1000 / 60, 60)["processing_vsync_ms"] == pytest.approx(1000 / 60)


def test_read_results_jsonl_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        latency.read_results_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "result"}\nnot json\n')
    with pytest.raises(UserError, match=":2: not a JSON line"):
        latency.read_results_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"kind": "status"}\n')
    with pytest.raises(UserError, match="no result messages"):
        latency.read_results_jsonl(empty)


def test_markdown_table_shape():
    md = latency.stage_markdown(latency.stage_table([make_result(i, i / 30, (2, 10, 0.5, 0.5)) for i in range(40)],
                                                   warmup_frames=0))
    lines = md.splitlines()
    assert lines[0].startswith("| stage (ms) | p50") and len(lines) == 2 + len(latency.STAGE_SPANS)
    assert "| capture->publish | 13.0 | 13.0 |" in md and "| smooth->publish | 0.50 |" in md


# --- tools/latency_report.py -----------------------------------------------------------------

def write_jsonl(path: Path, results: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in results))


def test_report_mode_on_synthetic_jsonl(tmp_path):
    rng = np.random.default_rng(0)
    res = [make_result(i, 50.0 + i / 30, (2.0, float(rng.uniform(20, 30)), 0.5, 0.25), skipped=i // 10)
           for i in range(200)]
    run = tmp_path / "run.jsonl"
    write_jsonl(run, res)
    png, out_json = tmp_path / "cdf.png", tmp_path / "lat.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "latency_report.py"), "report", str(run),
                           "--cdf", str(png), "--json", str(out_json), "--warmup-frames", "20"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| capture->publish |" in proc.stdout and "| preprocess->infer |" in proc.stdout
    assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"
    table = json.loads(out_json.read_text())[str(run)]
    infer = [d for d in (latency.stage_durations_ms(r)["preprocess->infer"] for r in res[20:])]
    assert table["preprocess->infer"]["count"] == 180
    assert table["preprocess->infer"]["p50"] == pytest.approx(float(np.percentile(infer, 50)))
    assert table["capture->publish"]["p50"] == pytest.approx(float(np.percentile(infer, 50)) + 2.75)


def test_report_mode_bad_input_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "latency_report.py"), "report", str(tmp_path / "nope.jsonl")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_cores_from_proc_tree_rusage():
    sys.path.insert(0, str(TOOLS))
    from latency_report import run_and_measure
    # a child that burns ~0.4 s of CPU in a 0.4+ s wall: close to one core
    code = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.4: pass"
    info = run_and_measure([sys.executable, "-c", code], cwd=ROOT)
    assert info["returncode"] == 0 and 0.4 <= info["cpu_s"] < 2.0
    assert 0.3 < info["cores"] <= 1.2


def test_streamer_latency_does_not_import_torch():
    code = "import sys, streamer.latency; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_compare_config_errors_are_one_line(tmp_path):
    for argv, msg in ((["--video", str(tmp_path / "none.mp4")], "no such video file"),
                      (["--video", str(SAMPLE), "--config", "noequals"], "expected NAME="),
                      (["--video", str(SAMPLE), "--config", "a=--fast"], "set by compare itself"),
                      (["--video", str(SAMPLE), "--modes", "turbo"], "--modes")):
        proc = subprocess.run([sys.executable, str(TOOLS / "latency_report.py"), "compare", *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr


# --- real runs of the pipeline (short) ---------------------------------------------------------

@pytest.mark.slow
def test_compare_real_runs_interleaved_with_two_streams(tmp_path):
    out = tmp_path / "cmp.json"
    png = tmp_path / "cmp.png"
    proc = subprocess.run([sys.executable, str(TOOLS / "latency_report.py"), "compare", "--video", str(SAMPLE),
                           "--config", "ref=--threads 1", "--config", "noframes=--threads 1 --no-frames",
                           "--repeat", "2", "--max-frames", "30", "--warmup-frames", "3", "--two-stream",
                           "--json", str(out), "--cdf", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    # A B A B per mode, both modes in each repeat
    assert r["run_order"] == ["ref/native", "noframes/native", "ref/fast", "noframes/fast"] * 2
    for key, s in r["summary"].items():
        assert s["frames"] == 30 and 0 < s["p50"] <= s["p99"] <= s["max"]
        assert len(s["p50_per_repeat"]) == 2 and 0.1 < s["cores"] < 2.5
        assert s["infer_p50"] < s["p50"]              # inference is part of capture->publish
        assert s["stages"]["preprocess->infer"]["p50"] == pytest.approx(s["infer_p50"])
        assert s["stages"]["capture->publish"]["count"] == s["n"]
        if key.endswith("/fast"):                      # --fast: every frame classified, none skipped
            assert s["classified"] == 30 and s["skipped"] == 0
        else:                                          # native: every captured frame is classified or skipped
            assert s["classified"] + s["skipped"] == 30
    assert "| ref | native |" in proc.stdout and "| noframes | fast |" in proc.stdout
    assert "1.00 | 1.00 | 1.00 |" in proc.stdout       # the reference against itself
    assert "glass-to-glass estimate" in proc.stdout and r["glass_to_glass"]["p50"]["total_ms"] > 1000 / 30
    assert set(r["two_stream"]) == {"a/native", "b/native", "a/fast", "b/fast"}
    assert all(s["classified"] > 0 for s in r["two_stream"].values())
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_live_mode_adds_capture_to_subscriber(tmp_path):
    sys.path.insert(0, str(TOOLS))
    from latency_report import free_port
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "live.json"
    live = subprocess.Popen([sys.executable, str(TOOLS / "latency_report.py"), "live", "--connect", addr,
                             "--duration", "8", "--warmup-frames", "5", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        subprocess.run([sys.executable, "-m", "streamer", "run", "--source", str(SAMPLE), "--max-frames", "90",
                        "--publish", addr, "--no-frames", "--quiet"], cwd=ROOT, check=True, timeout=60)
        stdout, stderr = live.communicate(timeout=30)
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate()
    assert live.returncode == 0, stderr
    r = json.loads(out.read_text())
    sub, pub = r["stages"]["capture->subscriber"], r["stages"]["capture->publish"]
    assert r["results"] > 20 and sub["count"] == pub["count"]
    assert sub["p50"] >= pub["p50"]                    # the subscriber receives after the publish stamp
    assert "| capture->subscriber |" in stdout


def test_live_mode_without_publisher_says_so():
    proc = subprocess.run([sys.executable, str(TOOLS / "latency_report.py"), "live", "--connect",
                           "tcp://127.0.0.1:9", "--duration", "0.5"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no result messages" in proc.stderr


def test_seed_baseline_one_frame():
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS))
    from seed_baseline import run_baseline
    b = run_baseline(SAMPLE, frames=1)
    assert b["frames"] == 1 and b["size"] == "1280x720"
    parts = b["parts_ms_p50"]
    assert parts["denoise"] > parts["equalize"] > 0 and parts["cnn"] > 0
    assert b["per_frame_ms"]["p50"] >= parts["denoise"] + parts["cnn"]
    assert 0 < b["fps"] < 1000 / b["per_frame_ms"]["p50"] + 1e-6   # throughput includes decoding


def test_blank_frames_left_out_by_default():
    res = [make_result(i, i / 30, (1.0, 20.0, 0.5, 0.5)) for i in range(100)]
    for r in res[50:70]:                           # a blank stretch: no inference, no topk
        r["topk"] = []
        r["stages"]["infer"] = r["stages"]["preprocess"]
    assert latency.model_ran(res[0]) and not latency.model_ran(res[60])
    all_frames = latency.stage_table(res, warmup_frames=10)
    inferred = latency.stage_table(res, warmup_frames=10, include_blank=False)
    assert all_frames["preprocess->infer"]["count"] == 90 and all_frames["preprocess->infer"]["min"] == 0
    assert inferred["preprocess->infer"]["count"] == 70
    assert inferred["preprocess->infer"]["min"] == pytest.approx(20.0)


def test_measured_process_timeout_stops_it():
    sys.path.insert(0, str(TOOLS))
    from latency_report import run_and_measure
    info = run_and_measure([sys.executable, "-c", "import time; time.sleep(30)"], cwd=ROOT, timeout_s=0.5)
    assert info.get("timed_out") and info["returncode"] != 0 and info["wall_s"] < 15
