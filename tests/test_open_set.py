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


def test_far_or_unsure_rule_rejects_far_and_unsure_or_very_far_with_hysteresis():
    gate = OpenSetGate(600.0, release=0.5, near=250.0, confident=0.9)
    assert gate.update(400, top_plane_p=0.97) is False      # far-ish but the model is sure: kept
    assert gate.update(400, top_plane_p=0.6) is True        # far and unsure: rejected
    assert gate.update(200, top_plane_p=0.6) is True        # still above 0.5 x near while unsure
    assert gate.update(200, top_plane_p=0.95) is False      # sure again and below 0.5 x threshold: released
    assert gate.update(700, top_plane_p=0.99) is True       # very far: rejected however sure
    assert gate.update(310, top_plane_p=0.99) is True       # hysteresis on the far limit too (> 300)
    assert gate.update(290, top_plane_p=0.99) is False
    assert gate.update(400) is True                         # no probability given: treated as unsure
    with pytest.raises(ValueError):
        OpenSetGate(100.0, near=200.0)                      # near must not exceed the far threshold


def test_top_plane_probability_sums_the_brain_sub_planes():
    sm = LabelSmoother(LABELS, COARSE)
    probs = np.zeros(len(LABELS), np.float32)
    brains = [i for i, l in enumerate(LABELS) if COARSE[l] == "brain"]
    probs[brains[0]], probs[brains[1]] = 0.3, 0.3
    probs[[i for i, l in enumerate(LABELS) if COARSE[l] != "brain"][0]] = 0.4
    assert sm.top_plane_probability(probs) == pytest.approx(0.6)


def test_cross_fitted_distances_come_from_fits_that_did_not_see_the_image():
    from engines import open_set as O
    rng = np.random.default_rng(0)
    fine = np.repeat(np.array(["a", "b"]), 60)
    emb = rng.standard_normal((120, 8)) + np.where(fine == "a", 0.0, 4.0)[:, None]
    emb[0] += 6.0                                          # one atypical "a" image
    patients = np.repeat(np.arange(40), 3)                 # 3 images per patient
    folds = O.patient_folds(patients.astype(str), 5)
    assert all(len(set(folds[patients == p])) == 1 for p in range(40)) and set(folds) == set(range(5))
    fetal = np.ones(120, bool)
    oof, extra = O.cross_fit_distances(emb, fine, fetal, folds, components=None, extra=(emb[:3], folds[:3]))
    w, means, _ = O.fit_tied(emb, fine, components=None)
    insample = O.distances(emb, w, means)
    assert oof[0] > insample[0]                            # its own fit pulled the atypical image closer
    np.testing.assert_allclose(extra, oof[:3])             # derived images are scored with their source's fold
    k = folds[5]
    w, means, _ = O.fit_tied(emb[folds != k], fine[folds != k], components=None)
    assert oof[5] == pytest.approx(O.distances(emb[5:6], w, means)[0])


def test_rule_tuning_keeps_the_fetal_share_and_rejects_far_unsure_negatives():
    from engines import open_set as O
    rng = np.random.default_rng(1)
    d_pos = rng.gamma(4.0, 25.0, 1000)                     # fetal images: mostly near, confident
    p_pos = np.clip(rng.normal(0.95, 0.03, 1000), 0, 1)
    d_neg = rng.uniform(150, 400, 300)                     # partial views: mid distance, unsure
    p_neg = rng.uniform(0.4, 0.8, 300)
    every = np.ones(1000, bool)
    rule = O.tune_rule(d_pos, p_pos, every, d_neg, p_neg, np.ones(300, bool), keep=0.99)
    assert rule["near"] <= rule["threshold"]
    kept = 1 - O.rejects(d_pos, p_pos, rule["threshold"], rule["near"], rule["confident"]).mean()
    assert kept >= 0.99 and kept == pytest.approx(rule["tune_fetal_kept"])
    dist_only = np.quantile(d_pos, 0.99)                   # the distance rule at the same keep rate
    assert rule["tune_negatives_shown_fetal"] < (d_neg <= dist_only).mean()


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
                        "--components", "32", "--rule", "far-or-unsure", "--threads", "1"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr
    fit = PlaneClassifier(out).info.open_set
    assert fit["components"] == 32 and fit["fit_images"] > 500 and fit["folds"] == 5
    # far-or-unsure, tuned on training patients: keeps >= 0.99 of their fetal images (out-of-fold distances)
    # and shows fewer partial views as a fetal plane than the model alone.
    assert fit["tune_fetal_kept"] >= 0.99 and 0 < fit["near"] <= fit["threshold"] and 0 < fit["confident"] < 1
    assert fit["tune_negatives_shown_fetal"] < fit["partial_views_shown_fetal_without_gate"]
    assert "training patients only" in fit["threshold_rule"] and fit["caveat"]


def brain_then_other_recording(tmp_path, topk_brain, topk_other, distance):
    """A 6 s recording at 30 fps (3 s brain, then 3 s Other) and its ground-truth csv for
    tools/open_set_curve.py; distance(other) gives each frame's open-set distance."""
    import csv
    rows, results = [], []
    for i in range(180):
        other = i >= 90
        rows.append({"frame": i, "t_s": f"{i / 30:.4f}", "kind": "stable",
                     "plane": "Other" if other else "Fetal brain", "brain_plane": "", "source": "x"})
        results.append({"kind": "result", "frame": i, "t_capture_mono": 100 + i / 300,
                        "topk": topk_other if other else topk_brain, "open_set": distance(other),
                        "flags": {"frozen": False}, "skipped_total": 0, "plane": "x", "confidence": 0.0,
                        "model": {"id": "planes_lite0"}})
    rec, gt = tmp_path / "rec.jsonl", tmp_path / "gt.csv"
    rec.write_text("\n".join(json.dumps(r) for r in results))
    with open(gt, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rec, gt


def curve_by_factor(rec, gt, out, *extra):
    """Run tools/open_set_curve.py on one recording; its sweep rows keyed by threshold factor."""
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "open_set_curve.py"), "--results", str(rec),
                        "--labels", str(gt), *extra, "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    return {r["factor"]: r for r in json.loads(out.read_text())["sweeps"]}


def test_curve_on_a_recorded_sweep_replays_the_gate(tmp_path):
    """tools/open_set_curve.py --results: a recording whose Other stretch is called femur with a large
    distance: with open-set off all of it is shown as femur, at the model's threshold none of it."""
    thr = PlaneClassifier("planes_lite0").info.open_set["threshold"]
    rec, gt = brain_then_other_recording(
        tmp_path, [["Brain (Tt.)", 0.9, "brain"], ["Brain (Tv.)", 0.05, "brain"], ["Femur", 0.02, "femur"]],
        [["Femur", 0.9, "femur"], ["Other", 0.05, "other"], ["Thorax", 0.02, "thorax"]],
        lambda other: 3 * thr if other else 0.3 * thr)
    curve = curve_by_factor(rec, gt, tmp_path / "curve.json")
    assert curve[None]["nonstandard_shown_fetal"] > 0.9          # off: the Other stretch is "femur"
    # Shipped threshold: never femur; only the shown brain decaying over its first ~0.1 s (3 of 90 frames).
    assert curve[1.0]["nonstandard_shown_fetal"] <= 0.05
    assert curve[1.0]["four_plane_stable_accuracy"] > 0.9        # brain still shown (distance below threshold)


def test_curve_replays_the_far_or_unsure_rule_from_the_model_metadata(tmp_path):
    """A model whose metadata carries near / confident: an Other stretch at a middle distance called femur with
    low confidence is rejected, a brain stretch at the same distance called with high confidence is kept."""
    import onnx

    from engines import open_set as O
    proto = onnx.load(str(resolve("planes_lite0")))
    meta = O._meta(proto)
    meta["open_set"] = {**meta["open_set"], "threshold": 600.0, "near": 250.0, "confident": 0.9, "release": 0.6}
    O._set_meta(proto, meta)
    model = tmp_path / "rule.onnx"
    onnx.save(proto, str(model))
    rec, gt = brain_then_other_recording(                   # both stretches at distance 400
        tmp_path, [["Brain (Tt.)", 0.93, "brain"], ["Brain (Tv.)", 0.05, "brain"], ["Femur", 0.01, "femur"]],
        [["Femur", 0.6, "femur"], ["Other", 0.3, "other"], ["Thorax", 0.05, "thorax"]],
        lambda other: 400.0)
    curve = curve_by_factor(rec, gt, tmp_path / "curve.json", "--model", str(model))
    assert curve[None]["nonstandard_shown_fetal"] > 0.9          # off: the Other stretch is "femur"
    assert curve[1.0]["nonstandard_shown_fetal"] <= 0.05         # far and unsure: rejected
    assert curve[1.0]["four_plane_stable_accuracy"] > 0.9        # far but sure: the brain is kept
    assert curve[2.0]["nonstandard_shown_fetal"] > 0.9           # both distances doubled: 400 < near, kept


def test_curve_noise_reports_the_spread_of_the_distance_within_each_still(tmp_path):
    import csv
    rng = np.random.default_rng(0)
    rows, results = [], []
    for i in range(200):                          # two stills, 100 frames each, distances 100 and 300 x (1 +- 20 %)
        base = 100.0 if i < 100 else 300.0
        rows.append({"frame": i, "t_s": f"{i / 30:.4f}", "kind": "stable", "plane": "Fetal brain",
                     "brain_plane": "", "source": "a" if i < 100 else "b"})
        results.append({"kind": "result", "frame": i, "open_set": base * rng.uniform(0.8, 1.2)})
    rec, gt, out = tmp_path / "rec.jsonl", tmp_path / "gt.csv", tmp_path / "noise.json"
    rec.write_text("\n".join(json.dumps(r) for r in results))
    with open(gt, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "open_set_curve.py"), "--noise", "--results", str(rec),
                        "--labels", str(gt), "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    noise = json.loads(out.read_text())["noise"]
    assert noise["stills"] == 2 and noise["frames"] == 200
    assert 0.75 <= noise["quantiles"]["0.05"] <= 0.88 and 0.95 <= noise["quantiles"]["0.5"] <= 1.05
