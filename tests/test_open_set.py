"""Open-set rejection: the in-graph distance, the hysteresis gate, the smoother, the shipped model, the CLI."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engines.backends import create_backend
from engines.zoo import resolve
from streamer.infer import PlaneClassifier
from streamer.smoothing import LabelSmoother, OpenSetGate

from .conftest import FIXTURES, ROOT, SHARED, needs_shared
from .test_smoothing import BRAIN, COARSE, LABELS, feed


def test_gate_rejects_above_threshold_and_releases_below_release_fraction():
    gate = OpenSetGate(100.0, release=0.6)
    assert [gate.update(s) for s in (50, 99, 101, 90, 61, 59, 99)] == [False, False, True, True, True, False, False]
    assert gate.update(None) is False            # a model without the output never rejects
    with pytest.raises(ValueError):
        OpenSetGate(100.0, release=1.5)


def test_rejected_frames_turn_a_shown_plane_uncertain_and_none_can_enter():
    sm = LabelSmoother(LABELS, COARSE)
    s, t = feed(sm, BRAIN, 1.0, 30)
    assert s[-1].plane == "brain"
    s, t = feed(sm, BRAIN, 1.0, 30, t, reject=True)
    assert s[-1].plane == "uncertain" and s[-1].uncertain
    assert all(x.plane in ("brain", "uncertain") for x in s)
    s, _ = feed(sm, BRAIN, 1.0, 30, t)           # the view becomes standard again: brain returns
    assert s[-1].plane == "brain"


def test_a_rejected_view_the_model_calls_other_is_still_shown_as_other():
    labels = ["Brain (Tt.)", "Femur", "Other"]
    coarse = {"Brain (Tt.)": "brain", "Femur": "femur", "Other": "other"}
    sm = LabelSmoother(labels, coarse)
    s, t = feed(sm, np.array([0.05, 0.05, 0.9]), 1.0, 30, reject=True)
    assert s[-1].plane == "other"
    s, _ = feed(sm, np.array([0.05, 0.85, 0.1]), 1.0, 30, t, reject=True)
    assert all(x.plane in ("other", "uncertain") for x in s)      # never femur while rejected


def test_in_graph_distance_matches_numpy_on_the_embedding():
    import onnx
    import onnxruntime as ort

    from engines import open_set as O
    proto = onnx.load(str(resolve("planes_lite0")))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1280, 16)).astype(np.float32) * 0.1
    means = rng.standard_normal((3, 16)).astype(np.float32)
    O.add_embedding(proto)                       # also strips the shipped fit: a refit replaces it
    O.add_score(proto, w, means)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((3, 1, 144, 192)).astype(np.float32)
    emb, dist = sess.run([O.EMBEDDING_OUTPUT, O.SCORE_OUTPUT], {"image": x})
    w16 = w.astype(np.float16).astype(np.float64)      # stored as fp16 in the graph
    want = O.distances(emb.astype(np.float64), w16, means.astype(np.float64))
    np.testing.assert_allclose(dist, want, rtol=1e-4)
    assert [o.name for o in sess.get_outputs()].count(O.SCORE_OUTPUT) == 1


def test_shipped_default_has_open_set_and_it_separates_a_scan_from_noise():
    clf = PlaneClassifier("planes_lite0")
    cfg = clf.info.open_set
    assert cfg and cfg["kind"] == "mahalanobis_tied" and cfg["threshold"] > 0
    assert "training" in cfg["threshold_rule"] and cfg["fit_patients"] > 0 and cfg["command"]
    brain = cv2.imread(str(FIXTURES / "sononet" / "BRAIN-TV.jpg"))
    scan = clf.classify_frame(brain)[0]
    assert scan.plane == "brain" and scan.open_set < cfg["threshold"]
    noise = np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8)
    assert clf.predict(noise).open_set > cfg["threshold"]
    # The file stays small: the open-set part is a 1280 x 128 fp16 matrix and a few means.
    assert resolve("planes_lite0").stat().st_size < 8e6


def test_models_without_open_set_report_none():
    out = create_backend("onnxruntime", resolve("sononet16")).infer(np.zeros((1, 1, 224, 288), np.float32))
    assert out.open_set is None


def test_open_set_command_bad_input_is_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "engines", "open-set", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
    p = run("--model", str(tmp_path / "missing.onnx"))
    assert p.returncode != 0 and "Traceback" not in p.stderr and "not found" in p.stderr
    p = run("--model", "sononet16", "--data", str(tmp_path / "nodata"))
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


@needs_shared
@pytest.mark.slow
def test_refit_on_training_patients_writes_metadata(tmp_path):
    out = tmp_path / "refit.onnx"
    p = subprocess.run([sys.executable, "-m", "engines", "open-set", "--model", "planes_lite0", "--out", str(out),
                        "--components", "32", "--threads", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr
    info = PlaneClassifier(out).info
    fit = info.open_set
    assert fit["components"] == 32 and fit["fit_images"] > 500
    # The threshold is the training fetal-plane 0.99 quantile: about 1 % of them are above it.
    assert 0.0 < fit["train_fetal_rejected"] <= 0.02


def test_curve_on_a_recorded_sweep_replays_the_gate(tmp_path):
    """tools/open_set_curve.py --results: a recording whose Other stretch is called femur with a large
    distance: with open-set off all of it is shown as femur, at the model's threshold none of it."""
    thr = PlaneClassifier("planes_lite0").info.open_set["threshold"]
    rows, results = [], []
    for i in range(180):                          # 3 s brain, 3 s Other at 30 fps
        other = i >= 90
        rows.append({"frame": i, "t_s": f"{i / 30:.4f}", "kind": "stable",
                     "plane": "Other" if other else "Fetal brain", "brain_plane": "", "source": "x"})
        topk = [["Femur", 0.9, "femur"], ["Other", 0.05, "other"], ["Thorax", 0.02, "thorax"]] if other else \
            [["Brain (Tt.)", 0.9, "brain"], ["Brain (Tv.)", 0.05, "brain"], ["Femur", 0.02, "femur"]]
        results.append({"kind": "result", "frame": i, "t_capture_mono": 100 + i / 300, "topk": topk,
                        "open_set": 3 * thr if other else 0.3 * thr, "flags": {"frozen": False},
                        "skipped_total": 0, "plane": "x", "confidence": 0.0, "model": {"id": "planes_lite0"}})
    rec, gt = tmp_path / "rec.jsonl", tmp_path / "gt.csv"
    rec.write_text("\n".join(json.dumps(r) for r in results))
    with open(gt, "w", newline="") as f:
        import csv
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "curve.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "open_set_curve.py"), "--results", str(rec),
                        "--labels", str(gt), "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    curve = {r["factor"]: r for r in json.loads(out.read_text())["sweeps"]}
    assert curve[None]["nonstandard_shown_fetal"] > 0.9          # off: the Other stretch is "femur"
    # Shipped threshold: never femur; only the shown brain decaying over its first ~0.1 s (3 of 90 frames).
    assert curve[1.0]["nonstandard_shown_fetal"] <= 0.05
    assert curve[1.0]["four_plane_stable_accuracy"] > 0.9        # brain still shown (distance below threshold)
