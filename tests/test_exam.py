"""Exam guidance: protocols, the capture state machine, exam.json, the control endpoint, the report."""
import json
import os
import sys
import threading

import cv2
import numpy as np
import pytest

from engines.errors import UserError
from engines.planes import SONONET16_LABELS, SONONET16_TO_COARSE
from streamer.exam.control import ControlServer, check_loopback, control_request, handle_request
from streamer.exam.heatmap import cam_array, small_cam
from streamer.exam.protocol import check_against_model, load_protocol, protocol_from_dict, shipped_protocols
from streamer.exam.report import write_report
from streamer.exam.session import ExamSession
from streamer.exam.writer import ExamWriter

from .conftest import ROOT, SAMPLE_CLIP, run_cli

sys.path.insert(0, str(ROOT / "tools"))
from bench_redact import box_mask  # noqa: E402

LITE_LABELS = ('Brain (Tt.)', 'Brain (Tc.)', 'Brain (Tv.)', 'Brain (other)', 'Abdomen', 'Femur', 'Thorax',
               'Cervix', 'Other')
LITE_MAP = {x: ("brain" if x.startswith("Brain") else x.lower()) for x in LITE_LABELS}
MODEL = {"id": "planes_lite0", "sha256": "abc123", "backend": "onnxruntime"}
FPS = 30.0
RNG = np.random.default_rng(0)
# A textured "ultrasound" image (sharp) and a blurred copy of it (less sharp).
IMAGE = cv2.GaussianBlur(RNG.integers(0, 255, (240, 320, 3), dtype=np.uint8), (3, 3), 0)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def result(i, plane, label=None, p=0.95, raw=None, **flags):
    """A result message as the pipeline publishes it, frame i at FPS."""
    raw_label = raw or label or plane.capitalize()
    raw_plane = LITE_MAP.get(raw_label, plane)
    return {"frame": i, "t_capture_mono": 100.0 + i / FPS, "plane": plane,
            "label": label if plane not in ("uncertain", "none") else None, "confidence": p,
            "topk": [[raw_label, p, raw_plane], ["Other", round(1 - p, 4), "other"]],
            "flags": {"uncertain": plane == "uncertain", "none": plane == "none",
                      "frozen": flags.get("frozen", False), "stale": flags.get("stale", False)},
            "source": {"state": flags.get("source_state", "live")}, "crop": [0, 0, 320, 240],
            "cam": small_cam(np.arange(30, dtype=np.float32).reshape(1, 5, 6).repeat(9, 0), LITE_LABELS, label)}


def live(image, i):
    """Live B-mode changes every frame: a little noise that moves with the frame index."""
    noise = np.random.default_rng(i).integers(-3, 4, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def feed(session, clock, results, image=IMAGE, still=False):
    for r in results:
        clock.t = r["t_capture_mono"]
        session.observe(r, image if still else live(image, r["frame"]))


def make(tmp_path, protocol="fetal-planes-4", writer=True):
    clock = Clock()
    w = ExamWriter(tmp_path) if writer else None
    s = ExamSession(load_protocol(protocol), tmp_path, MODEL, "test.mp4", writer=w, clock=clock)
    return s, clock, w


def statuses(session):
    return {v.view.id: v.status for v in session.views}


# ---- protocols ----

def test_shipped_protocols_load_and_check_against_models():
    assert {"fetal-planes-4", "fetal-planes-brain", "sononet16-planes"} <= set(shipped_protocols())
    p4 = load_protocol("fetal-planes-4")
    assert [v.id for v in p4.views] == ["brain", "abdomen", "femur", "thorax"]
    check_against_model(p4, LITE_LABELS, LITE_MAP, "planes_lite0")
    check_against_model(p4, SONONET16_LABELS, SONONET16_TO_COARSE, "sononet16")
    check_against_model(load_protocol("fetal-planes-brain"), LITE_LABELS, LITE_MAP, "planes_lite0")
    check_against_model(load_protocol("sononet16-planes"), SONONET16_LABELS, SONONET16_TO_COARSE, "sononet16")
    with pytest.raises(UserError, match="brain-cb.*cannot name"):
        check_against_model(load_protocol("sononet16-planes"), LITE_LABELS, LITE_MAP, "planes_lite0")
    with pytest.raises(UserError, match="Brain \\(Tt.\\)"):
        check_against_model(load_protocol("fetal-planes-brain"), SONONET16_LABELS, SONONET16_TO_COARSE, "sononet16")


def test_bad_protocols_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown exam protocol"):
        load_protocol("no-such-protocol")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(UserError, match="not valid TOML"):
        load_protocol(bad)
    with pytest.raises(UserError, match="plane must be one of"):
        protocol_from_dict({"views": [{"id": "x", "plane": "liver"}]})
    with pytest.raises(UserError, match="appears twice"):
        protocol_from_dict({"views": [{"id": "x", "plane": "femur"}, {"id": "x", "plane": "femur"}]})
    with pytest.raises(UserError, match="at least one"):
        protocol_from_dict({"name": "empty"})


def test_cli_refuses_a_view_the_model_cannot_name(tmp_path):
    r = run_cli("run", "--source", SAMPLE_CLIP, "--exam", "sononet16-planes", "--exam-dir", tmp_path / "e",
                "--publish", "tcp://127.0.0.1:0", "--exam-control", "none", timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "cannot name" in r.stderr and "Traceback" not in r.stderr


# ---- state machine ----

def test_known_sequence_gives_known_captures(tmp_path):
    s, clock, w = make(tmp_path)
    seq = [result(i, "uncertain") for i in range(10)]
    # Femur shown for 1.5 s from frame 10: candidates from frame 13 (0.1 s run), the first committed at
    # frame 27 (0.45 s later); frame 30, the most confident, waits as challenger, then replaces it.
    seq += [result(i, "femur", "Femur", p=0.99 if i == 30 else 0.90) for i in range(10, 55)]
    seq += [result(i, "uncertain") for i in range(55, 60)]
    feed(s, clock, seq)
    assert statuses(s) == {"brain": "pending", "abdomen": "pending", "femur": "captured", "thorax": "pending"}
    femur = s.views[2]
    assert [c.frame for c in femur.captures] == [30]
    assert femur.first_seen_s == pytest.approx(10 / FPS) and femur.first_captured_s == pytest.approx(27 / FPS)
    w.flush()
    exam = json.loads((tmp_path / "exam.json").read_text())
    best = exam["views"][2]["best"]
    assert best["frame"] == 30 and best["image"] == "captures/femur/f0000030.png"
    img = cv2.imread(str(tmp_path / best["image"]))
    assert img.shape == IMAGE.shape and np.array_equal(img, live(IMAGE, 30))   # exactly the image it was given
    heat = cv2.imread(str(tmp_path / best["heatmap"]))
    assert heat.shape == IMAGE.shape and not np.array_equal(heat, IMAGE)
    side = json.loads((tmp_path / best["sidecar"]).read_text())
    assert side["frame"] == 30 and side["model"] == MODEL and set(side["score_parts"]) == {
        "probability", "sharpness", "steadiness"}
    w.close()


def test_never_captures_from_uncertain_none_frozen_stale_or_short_runs(tmp_path):
    s, clock, w = make(tmp_path, writer=False)
    seq = [result(i, "femur", "Femur", p=0.99, frozen=True) for i in range(0, 40)]
    seq += [result(i, "femur", "Femur", p=0.99, stale=True) for i in range(40, 80)]
    seq += [result(i, "femur", "Femur", p=0.99, source_state="reconnecting") for i in range(80, 120)]
    seq += [result(i, "none") for i in range(120, 160)]
    seq += [result(i, "uncertain", raw="Femur", p=0.99) for i in range(160, 200)]
    # A run too short to confirm (0.5 s < min_run 0.1 + confirm 0.45), then a raw label that disagrees.
    seq += [result(i, "femur", "Femur", p=0.99) for i in range(200, 215)]
    seq += [result(i, "uncertain") for i in range(215, 220)]
    seq += [result(i, "femur", "Femur", p=0.99, raw="Thorax") for i in range(220, 280)]
    # Confident enough? 0.7 is below min_probability.
    seq += [result(i, "abdomen", "Abdomen", p=0.70) for i in range(280, 340)]
    # A confident frame, but the raw top-1 disagrees on most frames of its confirm window.
    seq += [result(i, "uncertain") for i in range(340, 345)]
    seq += [result(i, "thorax", "Thorax", p=0.95 if i < 356 else 0.6, raw="Thorax" if i < 356 else "Abdomen")
            for i in range(345, 400)]
    feed(s, clock, seq)
    # An image that stops changing (a freeze the detector has not flagged yet) is never kept, even
    # with one frame changed inside it (an H.264 key frame re-encodes the frozen image).
    feed(s, clock, [result(i, "uncertain") for i in range(400, 405)])
    feed(s, clock, [result(i, "femur", "Femur", p=0.99) for i in range(405, 420)], still=True)
    feed(s, clock, [result(420, "femur", "Femur", p=0.99)])
    feed(s, clock, [result(i, "femur", "Femur", p=0.99) for i in range(421, 460)], still=True)
    assert set(statuses(s).values()) == {"pending"}
    assert all(not v.captures for v in s.views)


def test_replacement_only_when_clearly_better_and_keep_n(tmp_path):
    s, clock, _ = make(tmp_path, writer=False)
    blurred = cv2.GaussianBlur(IMAGE, (9, 9), 0)
    feed(s, clock, [result(i, "brain", "Brain (Tv.)", p=0.90) for i in range(0, 60)], blurred)
    first = [c.frame for c in s.views[0].captures]
    assert len(first) == 1
    # A sharper frame later in the same run, same probability: clearly better -> replaces it.
    feed(s, clock, [result(i, "brain", "Brain (Tv.)", p=0.90) for i in range(60, 120)])
    after = s.views[0].captures
    assert len(after) == 1 and after[0].frame >= 60 and after[0].quality.sharpness > 0.5
    # A second run gives the second kept capture (keep = 2), a third weaker one is not kept.
    feed(s, clock, [result(i, "uncertain") for i in range(120, 130)])
    feed(s, clock, [result(i, "brain", "Brain (Tt.)", p=0.97) for i in range(130, 190)])
    feed(s, clock, [result(i, "uncertain") for i in range(190, 200)])
    feed(s, clock, [result(i, "brain", "Brain (Tt.)", p=0.85) for i in range(200, 260)], blurred)
    caps = s.views[0].captures
    assert len(caps) == 2 and caps[0].score >= caps[1].score
    assert all(130 <= c.frame < 190 or 60 <= c.frame < 120 for c in caps)


def test_fine_label_views(tmp_path):
    s, clock, _ = make(tmp_path, "fetal-planes-brain", writer=False)
    feed(s, clock, [result(i, "brain", "Brain (Tc.)", p=0.95) for i in range(0, 40)])
    st = statuses(s)
    assert st["brain-tc"] == "captured" and st["brain-tt"] == "pending" and st["brain-tv"] == "pending"


def test_operator_reject_and_manual(tmp_path):
    s, clock, w = make(tmp_path)
    feed(s, clock, [result(i, "femur", "Femur") for i in range(0, 40)])
    femur = s.views[2]
    assert femur.status == "captured"
    s.reject("femur")
    assert femur.status == "rejected" and not femur.captures
    feed(s, clock, [result(i, "uncertain") for i in range(40, 45)] + [result(i, "femur", "Femur") for i in range(45, 85)])
    assert femur.status == "captured"          # captures again after a reject
    s.mark_manual("thorax")
    assert s.views[3].status == "manual"
    feed(s, clock, [result(85, "uncertain")])   # the operator's mark keeps the next frame
    assert s.views[3].captures and s.views[3].captures[0].manual
    w.flush()
    exam = json.loads((tmp_path / "exam.json").read_text())
    assert [v["status"] for v in exam["views"]] == ["pending", "pending", "captured", "manual"]
    assert (tmp_path / exam["views"][3]["best"]["image"]).is_file()
    w.close()


# ---- exam.json ----

def test_exam_json_is_replaced_atomically(tmp_path):
    s, clock, w = make(tmp_path)
    bad, reads = [], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                json.loads((tmp_path / "exam.json").read_text())
                reads[0] += 1
            except FileNotFoundError:
                pass
            except json.JSONDecodeError as exc:
                bad.append(str(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in range(30):   # many changes: reject/capture cycles
            base = k * 50
            feed(s, clock, [result(base + i, "femur", "Femur") for i in range(40)])
            s.reject("femur")
            feed(s, clock, [result(base + 40 + i, "uncertain") for i in range(10)])
        w.flush()
    finally:
        stop.set()
        t.join()
    assert not bad and reads[0] > 0
    exam = json.loads((tmp_path / "exam.json").read_text())
    assert {"v", "protocol", "source", "model", "started", "updated", "views"} <= set(exam)
    assert not list(tmp_path.glob(".*.tmp"))
    # Rejected captures' files are gone; only kept ones remain on disk.
    assert not list((tmp_path / "captures" / "femur").glob("*.png"))
    w.close()


# ---- control endpoint ----

def test_control_endpoint_bad_requests_change_nothing(tmp_path):
    s, clock, w = make(tmp_path)
    server = ControlServer(s, "tcp://127.0.0.1:0")
    try:
        before = s.version
        for raw, why in [(b"\xff\xfe", "not JSON"), (b"[1, 2]", "JSON object"), (b'{"op": "explode"}', "unknown op"),
                         (b'{"op": "reject", "view": "liver"}', "unknown view"),
                         (b'{"op": "reject", "view": "femur"}', "no capture"),
                         (b'{"op": "manual"}', "view id"), (b'{"op": "end", "x": 1}', "unknown field"),
                         (b"x" * 5000, "too long")]:
            reply = control_request(server.address, raw)
            assert reply["ok"] is False and why in reply["error"], (raw[:20], reply)
        assert s.version == before and set(statuses(s).values()) == {"pending"}
        reply = control_request(server.address, {"op": "manual", "view": "femur"})
        assert reply["ok"] and reply["exam"]["views"][2]["status"] == "manual"
        reply = control_request(server.address, {"op": "end"})
        assert reply["ok"] and reply["exam"]["state"] == "ended" and reply["exam"]["report"] == "report.html"
        assert control_request(server.address, {"op": "end"})["ok"] is False
        w.flush()
        assert (tmp_path / "report.html").is_file()
        reply = control_request(server.address, {"op": "new"})
        assert reply["ok"] and reply["exam"]["state"] == "running"
        assert set(v["status"] for v in reply["exam"]["views"]) == {"pending"}
        w.flush()
        assert len(list((tmp_path / "archive").glob("*/report.html"))) == 1
    finally:
        server.close()
        w.close()
    with pytest.raises(UserError, match="loopback"):
        check_loopback("tcp://0.0.0.0:5556")
    assert handle_request(s, b"{}")["ok"] is False


# ---- report ----

def test_report_on_disk(tmp_path):
    s, clock, w = make(tmp_path)
    feed(s, clock, [result(i, "femur", "Femur") for i in range(0, 40)] + [result(i, "thorax", "Thorax") for i in range(40, 80)])
    s.end()
    w.flush()
    w.close()
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 4        # femur + thorax: image and heatmap each
    assert "<svg" in page and 'id="view-brain"' in page and "MISSING" in page
    assert "2 of 4 views done" in page and "planes_lite0" in page
    (tmp_path / "report.html").unlink()
    r = run_cli("report", tmp_path)
    assert r.returncode == 0 and (tmp_path / "report.html").is_file()
    r = run_cli("report", tmp_path / "nothing")
    assert r.returncode == 2 and "no exam.json" in r.stderr and "Traceback" not in r.stderr
    assert write_report(tmp_path).name == "report.html"


def test_small_cam_round_trip():
    cam = np.zeros((3, 5, 6), np.float32)
    cam[1, 2, 4] = 7.0
    cam[1, 0, 0] = -3.0
    msg = small_cam(cam, ("a", "b", "c"), "b")
    a = cam_array(msg)
    assert msg["label"] == "b" and a.shape == (5, 6) and a[2, 4] == 255 and a[0, 0] == 0
    assert small_cam(cam, ("a", "b", "c"), None) is None and cam_array({"h": 2, "w": 2, "data": b"x"}) is None


@pytest.mark.slow
def test_run_with_exam_on_the_sample_clip(tmp_path):
    d = tmp_path / "exam"
    r = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "120", "--exam", "fetal-planes-4",
                "--exam-dir", d, "--publish", "tcp://127.0.0.1:0", "--exam-control", "tcp://127.0.0.1:0",
                "--quiet", timeout=240)
    assert r.returncode == 0, r.stderr
    assert f"exam report: {(d / 'report.html').resolve()}" in r.stdout
    exam = json.loads((d / "exam.json").read_text())
    assert exam["state"] == "ended" and exam["model"]["id"] == "planes_lite0"
    brain = exam["views"][0]
    assert brain["status"] == "captured"
    side = json.loads((d / brain["best"]["sidecar"]).read_text())
    x0, y0, x1, y1 = side["crop"]
    img = cv2.imread(str(d / brain["best"]["image"]))
    # The cropped ultrasound region only, never the full scanner frame (burned-in text).
    assert (img.shape[1], img.shape[0]) == (x1 - x0, y1 - y0) == tuple(side["image_size"])
    # Exactly the published image: that frame of the clip, cropped, with burned-in text redacted.
    # The clip is YUV 4:2:0: the run converts it to colour as streamer.yuv does (the luma path).
    import av
    from engines.redact import redact_text
    from streamer import yuv
    with av.open(str(SAMPLE_CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == brain["best"]["frame"]:
                full = yuv.to_bgr(f.to_ndarray(format="yuv420p"), f.height, f.width)
                break
    assert img.shape[1] < full.shape[1]
    crop = full[y0:y1, x0:x1]
    redacted, boxes = redact_text(crop)
    # Then the stored capture's second, learned look (engines/text_detect.py), recorded in the sidecar.
    from engines.text_detect import LearnedTextDetector
    stored, learned = LearnedTextDetector().redact(redacted)
    assert np.array_equal(img, stored)
    assert side["redaction"]["learned_text_boxes"] == [[b.x0, b.y0, b.x1, b.y1] for b in learned]
    if boxes:
        assert not np.array_equal(img, crop)


def test_capture_is_redacted_again_before_it_is_written(tmp_path):
    """The writer runs the capture redactor on every capture before anything is written: the stored PNG and
    its heatmap show the redactor's output, the sidecar lists its boxes; a redactor that fails leaves no PNG
    (never an unredacted one) and counts an error."""
    from engines.text_detect import LearnedTextDetector
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    ok, frame = cap.read()
    assert ok
    image = np.ascontiguousarray(frame[100:600, 150:900])
    cv2.putText(image, "DOE, JANE  ID 48213377", (120, 260), cv2.FONT_HERSHEY_DUPLEX, 1.1, (230, 230, 230), 2,
                cv2.LINE_AA)
    text = np.zeros(image.shape[:2], np.uint8)
    cv2.putText(text, "DOE, JANE  ID 48213377", (120, 260), cv2.FONT_HERSHEY_DUPLEX, 1.1, 255, 2, cv2.LINE_AA)
    cam = np.full((5, 6), 200, np.uint8)
    detector = LearnedTextDetector()
    w = ExamWriter(tmp_path, redact_capture=detector.redact)
    w.save_capture("a.png", "a_heatmap.png", "a.json", image, cam, {"frame": 1})
    w.flush()
    stored = cv2.imread(str(tmp_path / "a.png"))
    assert np.array_equal(stored, detector.redact(image)[0])
    assert (stored[text > 0] == 0).mean() > 0.9, "the drawn patient text survived in the stored capture"
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["frame"] == 1 and side["redaction"]["learned_text_boxes"]
    from engines.redact import TextBox
    outside = ~box_mask([TextBox(*b) for b in side["redaction"]["learned_text_boxes"]], image.shape)
    assert np.array_equal(stored[outside], image[outside]) and outside.mean() > 0.8   # the rest untouched
    heat = cv2.imread(str(tmp_path / "a_heatmap.png"))
    assert heat.shape == image.shape and heat[text > 0].max() < image[text > 0].max()

    def broken(_):
        raise RuntimeError("detector failed")
    w2 = ExamWriter(tmp_path / "b", redact_capture=broken, log=lambda *a, **k: None)
    w2.save_capture("b.png", None, "b.json", image, None, {"frame": 2})
    w2.flush()
    assert w2.errors == 1 and not (tmp_path / "b" / "b.png").exists()
    w.close(), w2.close()


@pytest.mark.slow
def test_demo_runs_an_exam_and_prints_the_report(tmp_path):
    out, d = tmp_path / "demo.mp4", tmp_path / "demo_exam"
    r = run_cli("demo", "--fast", "--max-frames", "150", "--out", out, "--exam-dir", d, "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"exam report: {(d / 'report.html').resolve()}" in r.stdout
    page = (d / "report.html").read_text()
    assert "Four fetal planes" in page and "data:image/jpeg;base64," in page
    assert out.stat().st_size > 10_000


@pytest.mark.skipif(not hasattr(os, "setpriority") or not sys.platform.startswith("linux"), reason="Linux thread nice")
def test_writer_thread_runs_below_the_live_loop(tmp_path):
    """The writer (PNG encoding, the captures' learned redaction) runs at a higher nice value than the
    thread that created it, so on a busy box it waits for the live loop instead of taking its turn."""
    from streamer.exam.writer import WRITER_NICE
    w = ExamWriter(tmp_path)
    w.call(lambda: None)
    w.flush()
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, w.thread.native_id) == min(19, mine + WRITER_NICE)
    w.close()
