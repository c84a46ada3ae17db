"""The fault matrix of an always-on scanner box (docs/service.md), one test per row: signals, dead
processes, sources that come and go, damaged input, bad models and addresses, exposure.

Every wait here is on an event (a message arriving, a process ending) with a generous deadline,
never a sleep that assumes a speed: the suite must pass on a loaded 2-core box. Processes are
counted by an environment tag (conftest.tagged_processes), so other users' runs do not count.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from streamer import schema
from streamer.runstats import LatencyHistogram

from .conftest import ROOT, SAMPLE_CLIP, TAG_VAR, free_port, run_cli, tagged_processes

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
DEADLINE_S = 90          # generous: a loaded box is slow, a hang is forever


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=DEADLINE_S, what="condition"):
    """Poll a cheap predicate (process table, file) until true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Subscriber:
    """Collects every message of a publisher on a thread; wait_for blocks until one matches."""

    def __init__(self, address: str, secure_key: str | None = None):
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(address, secure_key), daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _loop(self, address, secure_key):
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"sonoplane.")
        sock.setsockopt(zmq.RCVTIMEO, 100)
        if secure_key:
            from streamer.netsec import secure_subscriber
            secure_subscriber(sock, secure_key)
        sock.connect(address)
        self.ready.set()
        while not self.stop.is_set():
            try:
                _, payload = schema.decode(sock.recv())
            except zmq.Again:
                continue
            with self.cond:
                self.messages.append(payload)
                self.cond.notify_all()
        sock.close(0)

    def wait_for(self, predicate, timeout=DEADLINE_S, what="message"):
        with self.cond:
            if not self.cond.wait_for(lambda: any(predicate(m) for m in self.messages), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"last: {[m.get('state') or m.get('kind') for m in self.messages[-5:]]}")
            return next(m for m in self.messages if predicate(m))

    def of(self, kind):
        with self.cond:
            return [m for m in self.messages if m["kind"] == kind]

    def close(self):
        self.stop.set()
        self.thread.join(5)


class Run:
    """`sonoplane run` in the background, tagged, with a subscriber on its publisher."""

    def __init__(self, *args, secure_key=None, subscribe=True):
        self.tag = uuid.uuid4().hex
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.sub = Subscriber(self.address, secure_key) if subscribe else None
        env = {**os.environ, "PYTHONPATH": str(ROOT), TAG_VAR: self.tag}
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", *map(str, args),
                                      "--publish", self.address], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, timeout=DEADLINE_S):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"run hung (no exit within {timeout} s): {err[-800:]}")
        if self.sub is not None:
            # The final status is sent before the socket closes (1 s linger): it is here already
            # or arrives within the linger.
            try:
                self.sub.wait_for(lambda m: m.get("final"), timeout=5, what="final status")
            except AssertionError:
                pass
            self.sub.close()
        return self.proc.returncode, out, err

    def capture_pid(self) -> int:
        for pid in tagged_processes(self.tag):
            if pid != self.proc.pid and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError("no capture process")

    def no_process_left(self):
        wait_until(lambda: tagged_processes(self.tag) == [], timeout=20, what="every process of the run to end")


def one_error_line(err: str, *words):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]   # every line parses


def results(sub_or_rows):
    rows = sub_or_rows.of("result") if isinstance(sub_or_rows, Subscriber) else \
        [r for r in sub_or_rows if r["kind"] == "result"]
    return rows


# --- signals and processes -------------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_ends_a_run_cleanly(tmp_path, sig, code):
    record = tmp_path / "run.jsonl"
    run = Run("--source", SAMPLE_CLIP, "--record", record, "--no-frames")
    run.sub.wait_for(lambda m: m["kind"] == "result", what="a first result")
    run.proc.send_signal(sig)
    rc, out, err = run.finish()
    assert rc == code, err
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err
    rows = read_jsonl(record)                 # flushed and intact
    assert results(rows)
    assert rows[-1]["kind"] == "status" and rows[-1]["final"] is True
    assert rows[-1]["message"] == f"stopped by {signal.Signals(sig).name}"
    assert run.sub.wait_for(lambda m: m.get("final"), what="the final status on the wire")
    run.no_process_left()


def test_killing_the_parent_takes_the_capture_process_and_its_shared_memory_with_it():
    run = Run("--source", SAMPLE_CLIP, "--no-frames")
    run.sub.wait_for(lambda m: m["kind"] == "result", what="a first result")
    child = run.capture_pid()
    maps = Path(f"/proc/{child}/maps").read_text()
    shm = {line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line}
    assert shm
    run.proc.kill()
    run.finish()
    run.no_process_left()                     # prctl(PR_SET_PDEATHSIG): no orphan decoding on
    wait_until(lambda: not any(os.path.exists(p) for p in shm), timeout=20, what="shared memory unlinked")


def test_a_dead_capture_process_is_restarted_and_the_file_resumes(tmp_path):
    record = tmp_path / "run.jsonl"
    run = Run("--source", SAMPLE_CLIP, "--record", record, "--no-frames", "--max-frames", "300")
    run.sub.wait_for(lambda m: m["kind"] == "result" and m["frame"] >= 30, what="30 frames in")
    os.kill(run.capture_pid(), signal.SIGKILL)
    run.sub.wait_for(lambda m: m["kind"] == "status" and "capture process died" in m["message"],
                     what="a status saying the capture died")
    rc, out, err = run.finish()
    assert rc == 0, err                       # no hang, no error: it went on
    rows = read_jsonl(record)
    frames = [r["frame"] for r in results(rows)]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)   # monotonic, no repeats
    assert frames[-1] == 299                  # resumed where it was, reached the end
    assert rows[-1]["final"] and rows[-1]["restarts"] >= 1
    assert "1 capture restarts" in out
    run.no_process_left()


# --- live sources that come and go ------------------------------------------------------------

def ffmpeg_udp(port, seconds, clip=SAMPLE_CLIP):
    return subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(clip), "-t", str(seconds),
                             "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                            stdin=subprocess.DEVNULL)


@needs_ffmpeg
@pytest.mark.slow
def test_a_live_source_is_waited_for_reconnected_and_never_shown_stale_as_fresh():
    port = free_udp_port()
    run = Run("--source", f"udp://127.0.0.1:{port}", "--no-frames")
    sub = run.sub
    # Not sending yet: status `connecting`, once a second, and the run stays up.
    sub.wait_for(lambda m: m["kind"] == "status" and m["state"] == "connecting"
                 and sum(1 for x in sub.messages if x.get("state") == "connecting") >= 3,
                 what="three connecting heartbeats")
    assert run.proc.poll() is None
    sender = ffmpeg_udp(port, 4)
    first = sub.wait_for(lambda m: m["kind"] == "result", what="results once the sender starts")
    sender.wait(60)
    # The sender stopped: stalled, then reconnecting with a plain reason.
    lost = sub.wait_for(lambda m: m["kind"] == "status" and m["state"] == "reconnecting", what="reconnecting")
    assert "corrupt" not in lost["message"] and "Immediate exit" not in lost["message"]
    assert "no data" in lost["message"]
    n_before = len(results(sub))
    sender = ffmpeg_udp(port, 3)             # comes back
    sub.wait_for(lambda m: m["kind"] == "result" and len(results(sub)) > n_before + 10,
                 what="results after the source came back")
    sender.wait(60)
    run.proc.send_signal(signal.SIGTERM)
    rc, out, err = run.finish()
    assert rc == 143, err
    msgs = sub.messages
    states = [m["state"] for m in msgs if m["kind"] == "status"]
    assert "stalled" in states and states.index("stalled") < states.index("reconnecting")
    frames = [r["frame"] for r in results(sub)]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)   # index keeps counting
    assert frames[0] == first["frame"]
    # Nothing published as fresh while the source was not live: a result taken after the source
    # was lost is flagged stale, and no fresh result carries a frame captured during the outage.
    t_lost = lost["t_mono"]
    t_back = min(m["t_mono"] for m in msgs if m["kind"] == "status" and m["state"] == "live"
                 and m["t_mono"] > t_lost)
    for m in results(sub):
        assert m["flags"]["stale"] == (m["source"]["state"] != "live")
        if not m["flags"]["stale"]:
            assert not t_lost < m["t_capture_mono"] < t_back
    final = [m for m in msgs if m.get("final")]
    assert len(final) == 1 and final[0] is msgs[-1]
    run.no_process_left()


def test_open_timeout_bounds_the_wait_for_a_live_source():
    proc = run_cli("run", "--source", f"udp://127.0.0.1:{free_udp_port()}", "--open-timeout", "2",
                   "--publish", f"tcp://127.0.0.1:{free_port()}", timeout=DEADLINE_S)
    assert proc.returncode == 2
    one_error_line(proc.stderr, "--open-timeout")


# --- damaged input ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_damaged_stretch_is_skipped_counted_and_survived(tmp_path):
    data = SAMPLE_CLIP.read_bytes()
    mid = len(data) // 2
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data[:mid] + b"\0" * 200_000 + data[mid + 200_000:])
    record = tmp_path / "run.jsonl"
    proc = run_cli("run", "--source", damaged, "--fast", "--no-frames", "--record", record,
                   "--publish", f"tcp://127.0.0.1:{free_port()}", timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(record)
    assert len(results(rows)) >= 700          # was 197 of 825 (ffmpeg itself decodes 768)
    assert rows[-1]["final"] and rows[-1]["decode_errors"] > 0
    assert "damaged packets skipped" in proc.stdout


@needs_ffmpeg
def test_joined_segments_restarting_timestamps_play_at_native_rate_and_report_new_sizes(tmp_path):
    """Two MPEG-TS segments joined with `cat` (timestamps restart; 1280x720 then 640x360)."""
    a, b, joined = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "joined.ts"
    for out, vf in ((a, "null"), (b, "scale=640:360")):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(SAMPLE_CLIP), "-t", "3", "-vf", vf,
                        "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", str(out)], check=True)
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    record = tmp_path / "run.jsonl"
    t0 = time.monotonic()
    proc = run_cli("run", "--source", joined, "--no-frames", "--record", record,
                   "--publish", f"tcp://127.0.0.1:{free_port()}", timeout=300)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    # 6 s of video at native rate takes at least ~6 s (2x playback took ~3 s). A lower bound only:
    # a slow box takes longer, never shorter.
    assert wall >= 5.5, wall
    rows = results(read_jsonl(record))
    widths = [r["source"]["width"] for r in rows]
    assert set(widths) == {1280, 640}
    for r in rows:                            # every result reports its own frame's size
        x0, y0, x1, y1 = r["crop"]
        assert x1 <= r["source"]["width"] and y1 <= r["source"]["height"], r


def test_a_directory_as_source_says_so(tmp_path):
    proc = run_cli("run", "--source", tmp_path, "--publish", f"tcp://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    one_error_line(proc.stderr, "is a directory")


# --- models -----------------------------------------------------------------------------------

def tiny_model(path, labels, outputs, height=32, width=32, graph_height=None):
    """A real ONNX plane model (pool -> linear) with sonoplane metadata; outputs may differ from labels."""
    import onnx
    from onnx import TensorProto, helper

    from engines.metadata import metadata_json
    gh = graph_height or height
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, gh, width])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, outputs])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, outputs], np.linspace(-1, 1, outputs).tolist())
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [inp], [out], [w]),
                              opset_imports=[helper.make_opsetid("", 13)])
    meta = {"model_id": "tiny", "task": "plane", "labels": labels,
            "coarse_map": {lab: "brain" for lab in labels},
            "input": {"name": "image", "height": height, "width": width, "channels": 1},
            "normalisation": {"kind": "per_image_standardise", "scale": 255.0}, "outputs": {"logits": "logits"}}
    entry = model.metadata_props.add()
    entry.key, entry.value = "sonoplane", metadata_json(meta)
    onnx.save(model, str(path))
    return path


def test_models_are_validated_at_load(tmp_path):
    good = tiny_model(tmp_path / "good.onnx", ["a", "b", "c"], 3)
    proc = run_cli("check", "--source", SAMPLE_CLIP, "--model", good, "--frames", "3", "--anomaly-model", "none")
    assert proc.returncode == 0, proc.stderr            # the tiny model itself is fine
    wrong_outputs = tiny_model(tmp_path / "outputs.onnx", ["a", "b", "c", "d"], 3)
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--model", wrong_outputs,
                   "--publish", f"tcp://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    one_error_line(proc.stderr, "outputs 3 classes", "4 labels")
    wrong_input = tiny_model(tmp_path / "input.onnx", ["a", "b", "c"], 3, graph_height=48)
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--model", wrong_input,
                   "--publish", f"tcp://127.0.0.1:{free_port()}")
    assert proc.returncode == 2
    one_error_line(proc.stderr, "height is 48", "32")


# --- addresses and exposure -------------------------------------------------------------------

@pytest.mark.parametrize("address,words", [
    ("tcp://127.0.0.1:99999", ("99999", "0..65535")),
    ("tcp://0.0.0.0:{port}", ("beyond this machine", "--curve-secret", "--insecure")),
    ("tcp://127.0.0.1", ("tcp://HOST:PORT",)),
])
def test_bad_or_exposed_publish_addresses_are_refused(address, words):
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "2", "--publish",
                   address.format(port=free_port()))
    assert proc.returncode == 2
    one_error_line(proc.stderr, *words)


def test_publish_prints_the_port_actually_bound_and_parses_ipv6_loopback():
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "2", "--fast", "--publish", "tcp://127.0.0.1:0")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "->" in x)
    assert "tcp://127.0.0.1:" in line and not line.split("->")[1].split()[0].endswith(":0")
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            return                              # no IPv6 loopback on this box
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "2", "--fast",
                       "--publish", f"tcp://[::1]:{free_port()}")
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_publisher_talks_only_to_subscribers_with_its_key(tmp_path):
    keys = tmp_path / "keys"
    assert subprocess.run([sys.executable, "-m", "streamer.netsec", "keys", str(keys)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0
    run = Run("--source", SAMPLE_CLIP, "--no-frames", "--max-frames", "150", "--curve-secret",
              keys / "server.key_secret", secure_key=str(keys / "server.key"))
    plain = Subscriber(run.address)
    run.sub.wait_for(lambda m: m["kind"] == "result", what="results over CURVE")
    rc, out, err = run.finish()
    plain.close()
    assert rc == 0, err
    assert plain.messages == []                 # no key, nothing


# --- check ------------------------------------------------------------------------------------

def test_check_reports_health_with_documented_exit_codes(tmp_path):
    ok = run_cli("check", "--source", SAMPLE_CLIP, "--frames", "5")
    assert ok.returncode == 0, ok.stderr
    assert "health   ok" in ok.stdout and "model    ok" in ok.stdout
    silent = run_cli("check", "--source", f"udp://127.0.0.1:{free_udp_port()}", "--timeout", "2")
    assert silent.returncode == 3, silent.stderr
    assert "FAIL" in silent.stdout
    bad = tmp_path / "bad.onnx"
    bad.write_text("no model")
    wrong = run_cli("check", "--source", SAMPLE_CLIP, "--model", bad)
    assert wrong.returncode == 2
    one_error_line(wrong.stderr, "bad.onnx")


# --- bounded memory ---------------------------------------------------------------------------

def test_latency_histogram_quantiles_match_exact_ones_within_a_bin():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(2.5, 0.4, 20000), rng.uniform(40, 300, 200)])
    h = LatencyHistogram()
    for v in values:
        h.append(v)
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, q))
        assert abs(h.quantile(q) - exact) <= 0.01 * exact, (q, h.quantile(q), exact)
    assert h.max == values.max() and len(h) == len(values)
    size = h.counts.nbytes
    for v in values:
        h.append(v)
    assert h.counts.nbytes == size               # nothing grows with the number of frames
