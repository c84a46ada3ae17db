"""The bench tools drive the real pipeline: a short end-to-end run of each on a generated sweep."""
import json
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT
from .test_make_sweep import make_stills


def test_bench_video_and_latency_report_end_to_end(tmp_path):
    labels = make_stills(tmp_path)
    video = tmp_path / "sweep.mp4"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_sweep.py"), "--images", str(labels),
                    "--planes", "Fetal brain", "Fetal abdomen", "--size", "320x240", "--fps", "15",
                    "--hold", "1.5", "--transition", "0.3", "--frozen", "0.5", "--blank", "0.5",
                    "--out", str(video)], check=True, capture_output=True, timeout=120)
    report = tmp_path / "bench.json"
    png = tmp_path / "timeline.png"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_video.py"), str(video), "--labels",
                           str(video.with_suffix(".csv")), "--fast", "--json", str(report), "--timeline", str(png)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    for key in ("stable_accuracy", "stable_accuracy_raw", "macro_f1", "flicker_per_min",
                "time_to_stable_median_s", "time_to_stable_p90_s", "frames", "skipped", "brain_subplane_accuracy",
                "brain_subplane_frames"):
        assert key in r
    n_frames = sum(1 for _ in open(video.with_suffix(".csv"))) - 1
    assert r["frames"] == n_frames and r["skipped"] == 0            # --fast: every frame classified
    assert 0.0 <= r["stable_accuracy"] <= 1.0 and r["on_blank"]["shown_none"] > 0.8
    assert png.stat().st_size > 10_000

    record = tmp_path / "run.jsonl"
    subprocess.run([sys.executable, "-m", "streamer", "run", "--source", str(video), "--fast", "--no-frames",
                    "--publish", "tcp://127.0.0.1:0", "--record", str(record), "--quiet"],
                   cwd=ROOT, check=True, timeout=120)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "latency_report.py"), "report", str(record),
                           "--cdf", str(tmp_path / "cdf.png"), "--json", str(tmp_path / "lat.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "capture->publish" in proc.stdout and (tmp_path / "cdf.png").is_file()
    table = json.loads((tmp_path / "lat.json").read_text())[str(record)]
    assert table["capture->publish"]["p50"] > 0 and table["capture->publish"]["count"] > 0


def test_glass_to_glass_estimate():
    sys.path.insert(0, str(ROOT / "tools"))
    from latency_report import glass_to_glass_ms
    # 30 fps source (33.3 ms) + 40 ms processing -> 3 vsyncs at 60 Hz (50 ms) + 16.7 ms display
    assert abs(glass_to_glass_ms(30, 40.0, 60) - (33.333 + 50.0 + 16.667)) < 0.01


@pytest.mark.slow
def test_soak_runs_two_streams_and_reports_each(tmp_path):
    """tools/soak.py --streams 2: two looped UDP streams, two `sonoplane run` processes, a series and
    a verdict per stream (the minutes here are far too few for a pass: only the shape is checked)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--streams", "2", "--minutes", "0.35",
                           "--interval", "5", "--json", str(out), "--", "--model", "planes_sepcnn"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    r = json.loads(out.read_text())
    assert {row["stream"] for row in r["rows"]} == {0, 1}
    last = {row["stream"]: row for row in r["rows"]}
    for s in (0, 1):
        assert last[s]["results"] > 0 and last[s]["frames"] > 0 and last[s]["main_mb"] > 50 and last[s]["cap_mb"]
    verdicts = r["verdict"]["streams"]
    assert len(verdicts) == 2 and all(v["rc"] == 143 for v in verdicts)
    assert r["verdict"]["pass"] == all(v["pass"] for v in verdicts)


def test_soak_refuses_bad_arguments_in_one_line():
    for bad in (["--streams", "0"], ["--clip", "/no/such/clip.mp4"]):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), *bad],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("tool", ["bench_redact", "compare_redaction"])
def test_redaction_tools_before_tree_must_be_a_checkout(tool):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), "--before-tree", "/no/such/tree"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{tool}: no engines/redact.py under /no/such/tree"


def test_profile_frames_topic_times_both_paths_on_a_clip():
    from .conftest import SAMPLE_CLIP
    tool = str(ROOT / "tools" / "profile_frames_topic.py")
    proc = subprocess.run([sys.executable, tool, str(SAMPLE_CLIP), "--every", "100", "--max-frames", "2", "--repeat", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "session 4: colour conversion of the whole crop" in proc.stdout and "now: JPEG" in proc.stdout
    assert "total per sent frame: session 4's path" in proc.stdout
    bad = subprocess.run([sys.executable, tool, "/no/such/video.mp4"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "profile_frames_topic: no such video: /no/such/video.mp4"


def test_compare_labels_counts_agreement_on_common_frames(tmp_path):
    def write(d, rows):
        d.mkdir()
        (d / "v.jsonl").write_text("".join(json.dumps({"kind": "result", "frame": f, "plane": p, "label": lab}) + "\n"
                                           for f, p, lab in rows))
    write(tmp_path / "a", [(0, "brain", "Brain (Tt.)"), (1, "brain", "Brain (Tt.)"), (2, "femur", "Femur"),
                           (3, "brain", "Brain (Tv.)")])
    write(tmp_path / "b", [(0, "brain", "Brain (Tt.)"), (1, "brain", "Brain (Tv.)"), (2, "femur", "Femur")])
    out = tmp_path / "cmp.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_labels.py"), str(tmp_path / "a"),
                           str(tmp_path / "b"), "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    total = json.loads(out.read_text())["all"]
    assert total == {"frames": 3, "plane_same": 3, "label_same": 2, "brain_frames": 2, "brain_label_same": 1}
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_labels.py"), str(tmp_path / "a"),
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a directory" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
def test_multistream_bench_pins_each_stream_to_its_own_cpu(tmp_path):
    from .conftest import SAMPLE_CLIP
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_multistream.py"), str(SAMPLE_CLIP), "--streams", "2",
                           "--layouts", "separate", "--max-frames", "60", "--pin-each", "--json", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["layout"] == "separate" and all(s["classified"] > 0 for s in row["streams"]), row


def test_profile_stages_reports_steady_state_cpu_per_thread(tmp_path):
    """tools/profile_stages.py on the bundled clip: per-span figures, and the steady-state CPU of
    every thread of the sonoplane process and of the capture process (issue 11's CPU budget)."""
    from .conftest import SAMPLE_CLIP
    out = tmp_path / "stages.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_stages.py"), str(SAMPLE_CLIP), "--fast",
                           "--max-frames", "120", "--warmup", "20", "--json", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["classified"] == 120
    spans = {row["span"] for row in r["rows"]}
    assert {"model", "preprocess", "loop body", "frames prepare"} <= spans
    threads = r["steady_thread_cpu_ms_per_classified"]
    assert threads["main (the loop)"] > 0 and "frames-topic" in threads
    assert r["steady_capture_cpu_ms_per_frame"] > 0
    assert "per thread" in proc.stdout
    h = r["handover"]                                 # --fast: the capture waits, nothing skipped
    assert h["slots"] == 2 and h["skipped_total"] == h["skipped_overwritten"] + h["skipped_passed_over"] == 0
    assert "capture hand-over" in proc.stdout


def test_bench_live_places_missed_frames_against_the_decoded_keyframes():
    """bench_live finds keyframes from the demuxed packets only; they must be the frames the
    decoder marks as keyframes, in display order (the capture's frame index)."""
    import av
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_live import keyframe_positions, where_missed
    from .conftest import SAMPLE_CLIP
    with av.open(str(SAMPLE_CLIP)) as c:
        decoded = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert keyframe_positions(str(SAMPLE_CLIP)) == decoded and len(decoded) >= 2
    k = decoded[1]
    got = where_missed([1, k - 4, k - 1, k, k + 1, k - 5], decoded, rate=1.0, startup_s=2.0)
    assert got == {"startup": 1, "before_keyframe": 2, "other": 3}


def test_stress_redaction_pairs_detectors_on_the_same_random_lines():
    """With --before-tree set to this checkout, the `full before` row must equal `full` (the same
    frames and lines went through the same detector): the pairing the before/after figures rely on.
    The `capture` path (the full-size boxes plus the learned detector's) covers at least what `full` does."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "stress_redaction.py"), "--frames", "3", "--lines", "2",
                           "--widths", "1280,1920", "--before-tree", str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("1280", "1920"):
            path = " ".join(parts[1:3]) if parts[2] == "before" else parts[1]
            rows[(parts[0], path)] = parts[1 + len(path.split()):]          # lines, leak %, ...
    assert set(rows) == {(w, p) for w in ("1280", "1920") for p in ("topic", "full", "capture", "full before")}
    for w in ("1280", "1920"):
        assert rows[(w, "full")] == rows[(w, "full before")]
        full, capture = rows[(w, "full")], rows[(w, "capture")]
        assert capture[0] == full[0] and float(capture[1]) <= float(full[1]) and float(capture[-1]) >= float(full[-1])
        assert 4 <= int(rows[(w, "full")][0]) <= 6     # 3 frames x 2 lines, less any that fell outside the crop
