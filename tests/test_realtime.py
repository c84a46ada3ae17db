"""Real-time scheduling (`sonoplane run --realtime-priority`), issue 11's tail."""
import ctypes
import json
import os
import resource
import subprocess
import sys

import pytest

from engines.errors import UserError
from streamer.realtime import Realtime, check_permission, parse_realtime

from .conftest import ROOT, SAMPLE_CLIP, run_cli


def _permitted() -> bool:
    try:
        check_permission(Realtime(loop=10))
        return True
    except UserError:
        return False


needs_realtime = pytest.mark.skipif(not hasattr(os, "sched_setscheduler") or not _permitted(),
                                    reason="needs Linux and permission for SCHED_FIFO (root / CAP_SYS_NICE)")


def test_realtime_specs():
    assert parse_realtime(None) is None and parse_realtime("off") is None and parse_realtime("0") is None
    assert parse_realtime("10") == Realtime(loop=10)
    rt = parse_realtime("loop=20, model=10,capture=5")
    assert rt == Realtime(loop=20, model=10, capture=5) and rt.highest == 20
    bad = {"x": "not a priority", "loop=100": "out of range", "gpu=5": "ROLE=PRIORITY",
           "loop=5,loop=6": "twice", "loop=": "not a priority"}
    for spec, words in bad.items():
        with pytest.raises(UserError, match=words):
            parse_realtime(spec)


PROBE = r"""
import json, os, sys, threading
from streamer.commands.run import add_pipeline_arguments, pipeline_config
from streamer.pipeline import Pipeline
from streamer.realtime import thread_policy
import argparse
ap = argparse.ArgumentParser(); add_pipeline_arguments(ap)
args = ap.parse_args(sys.argv[2:])
args.publish = "tcp://127.0.0.1:*"
p = Pipeline(pipeline_config(args, sys.argv[1]), log=lambda *a, **k: None)
tasks = lambda pid="self": [int(t) for t in os.listdir(f"/proc/{pid}/task")]
def policies(pid="self"):
    out = []
    for t in tasks(pid):
        try:
            out.append(thread_policy(t))
        except ProcessLookupError:     # a thread that ended meanwhile
            pass
    return out
out = {"before_run": sorted(policies())}
process = p._process
def seen(frame, cap, *rest):
    if "loop" not in out:    # the first frame: the loop thread, and every thread of the capture process
        out["loop"] = thread_policy(threading.get_native_id())
        out["capture"] = sorted(set(policies(cap.proc.pid)))
        out["capture_threads"] = len(tasks(cap.proc.pid))
    return process(frame, cap, *rest)
p._process = seen
summary = p.run()
out["classified"] = summary.classified
out["after_run"] = sorted(policies())
print(json.dumps(out))
"""


@needs_realtime
def test_realtime_sets_each_roles_policy():
    """A real run with two intra-op threads: the loop is FIFO while it runs and normal after; the plane
    model's extra thread is FIFO at its own priority and nothing else of the process is; every thread of
    the capture process (FFmpeg's decoder threads too) is FIFO at the capture's priority."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(SAMPLE_CLIP), "--threads", "2", "--fast",
                           "--max-frames", "20", "--decode-threads", "frame:2", "--anomaly-model", "none",
                           "--realtime-priority", "loop=12,model=11,capture=7"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    before = [tuple(p) for p in out["before_run"]]
    assert before.count(("fifo", 11)) == 1, before           # ORT's one extra thread of the plane model
    assert all(p == ("other", 0) for p in before if p != ("fifo", 11)), before
    assert tuple(out["loop"]) == ("fifo", 12)
    assert [tuple(p) for p in out["capture"]] == [("fifo", 7)] and out["capture_threads"] >= 2, out
    assert out["classified"] == 20
    after = [tuple(p) for p in out["after_run"]]
    # The loop is normal again; threads it started meanwhile (crop re-detection) did not inherit FIFO.
    assert after.count(("fifo", 11)) == 1 and all(p == ("other", 0) for p in after if p != ("fifo", 11)), after


def _without_realtime_permission():
    """In the child before exec: no CAP_SYS_NICE (dropped from the bounding set, so the exec'd root
    process lacks it) and RLIMIT_RTPRIO 0, as for an unprivileged user."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 23, 0, 0, 0) != 0:        # PR_CAPBSET_DROP, CAP_SYS_NICE
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop CAP_SYS_NICE")
def test_refused_realtime_is_one_line_before_anything_starts():
    proc = subprocess.run([sys.executable, "-m", "streamer", "run", "--source", str(SAMPLE_CLIP), "--max-frames",
                           "4", "--no-frames", "--publish", "tcp://127.0.0.1:*", "--realtime-priority", "10"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=_without_realtime_permission,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert "real-time scheduling refused" in proc.stderr and "RLIMIT_RTPRIO >= 10" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""     # nothing ran


def test_bad_realtime_options_are_one_line():
    for extra, words in ((["--realtime-priority", "loop=0"], "out of range"),
                         (["--realtime-priority", "model=5"], "needs --threads 2"),
                         (["--realtime-priority", "fast"], "not a priority"),
                         (["--realtime-priority", "5", "--source", str(SAMPLE_CLIP)], "one --source")):
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "2", "--no-frames", *extra)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("gc_mode", ["default", "off"])
def test_profile_stages_tail_splits_each_frame(tmp_path, gc_mode):
    """tools/profile_stages.py --tail: every classified frame after the warm-up is split into parts that add
    up to its capture->loop-end time; with the collector off no collection is seen."""
    out = tmp_path / "tail.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_stages.py"), str(SAMPLE_CLIP), "--tail",
                           "--fast", "--no-frames", "--max-frames", "60", "--warmup", "10", "--gc", gc_mode,
                           "--json", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "gc inside loop bodies" in proc.stdout
    data = json.loads(out.read_text())
    tail = data["tail"]
    assert tail["frames"] + tail["blank_left_out"] == data["classified"] - 10
    mean = tail["all_mean"]
    assert abs(mean["wait"] + mean["copy"] + mean["gap"] + mean["body"] - mean["total"]) < 0.05, mean
    # runs: times the loop thread was switched in during a body; 0 when nothing preempted it (with
    # OpenCV on one thread, --opencv-threads 1, the body never waits for a helper thread).
    assert 0 < mean["cpu"] <= mean["body"] + 0.5 and mean["run_delay"] >= 0 and mean["runs"] >= 0
    if gc_mode == "off":
        assert tail["gc"] == {} and tail["gc_in_loop_body"] == 0


@needs_realtime
def test_ort_spinning_bench_runs_each_variant():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ort_spinning.py"), "--n", "3"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["normal", "FIFO 10", "normal", "FIFO 10"], proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ort_spinning.py"), "--threads", "1"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--threads" in bad.stderr
