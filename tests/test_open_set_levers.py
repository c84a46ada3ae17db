"""Session-6 open-set levers: logit scores (energy, max-softmax), their training-fitted thresholds and
hysteresis, tools/frame_outputs.py (the runtime's model inputs re-created from a recording) and
tools/open_set_levers.py (configurations replayed through the runtime's smoother and gate)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from engines.open_set import (NormalisedScore, energy, logit_score, release_at_same_quantile,
                              threshold_at_reject_rate)
from streamer.infer import PlaneClassifier
from streamer.smoothing import OpenSetGate

from .conftest import ROOT, SAMPLE_CLIP, run_cli

sys.path.insert(0, str(ROOT / "tools"))
import open_set_curve  # noqa: E402
import open_set_levers as L  # noqa: E402

LITE = PlaneClassifier("planes_lite0").info
LABELS = list(LITE.labels)


def logits_for(label: str, peak: float, n: int = 1, rng=None) -> np.ndarray:
    """n logit rows with `peak` on `label` and small noise elsewhere."""
    rng = rng or np.random.default_rng(0)
    z = rng.normal(0, 0.3, (n, len(LABELS)))
    z[:, LABELS.index(label)] += peak
    return z


def test_energy_is_minus_logsumexp_and_higher_for_flat_logits():
    z = np.array([[8.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    e = energy(z)
    assert np.allclose(e, -np.log(np.exp(z).sum(1)))
    assert e[1] > e[0]                                   # flat, low logits: further out
    assert np.allclose(energy(z + 100), e - 100)         # no overflow on large logits


def test_max_softmax_score_sums_the_brain_sub_planes():
    """A frame split between two brain sub-planes is sure of the plane: its max-softmax score is low."""
    z = np.full((1, len(LABELS)), -5.0)
    z[0, LABELS.index("Brain (Tt.)")] = z[0, LABELS.index("Brain (Tc.)")] = 5.0
    s = logit_score("max-softmax", z, LITE.labels, LITE.coarse_map, LITE.temperature)
    assert s[0] < 0.01
    with pytest.raises(ValueError):
        logit_score("entropy", z, LITE.labels, LITE.coarse_map, LITE.temperature)


def test_threshold_rejects_the_requested_share_and_release_keeps_its_quantile():
    rng = np.random.default_rng(1)
    d = rng.gamma(2.0, 60.0, 5000)
    s = np.log(d) + 3                                    # any increasing map of the same images
    thr = threshold_at_reject_rate(s, 0.0112)
    assert abs((s > thr).mean() - 0.0112) < 0.002
    rel = release_at_same_quantile(s, d, 400.0, 0.6)
    assert abs(rel - (np.log(240.0) + 3)) < 0.02         # 0.6 x 400 = 240, mapped the same way


def test_normalised_score_reproduces_the_distance_gate_frame_for_frame():
    """OpenSetGate(1, release_u) on the normalised distance rejects exactly where OpenSetGate(T, 0.6) does."""
    rng = np.random.default_rng(2)
    d = np.concatenate([rng.uniform(50, 700, 300), rng.uniform(250, 320, 50), rng.uniform(50, 700, 300)])
    norm = NormalisedScore(30.0, 482.1, 0.6 * 482.1)
    a, b = OpenSetGate(482.1, 0.6), OpenSetGate(1.0, norm.release)
    ra = [a.update(x) for x in d]
    rb = [b.update(float(norm(x))) for x in d]
    assert ra == rb and any(ra) and not all(ra)


def test_stills_curve_with_energy_rejects_the_flat_other_image_at_the_training_rate():
    rng = np.random.default_rng(3)
    train = np.concatenate([logits_for(c, 9.0, 100, rng) for c in ("Femur", "Abdomen", "Thorax", "Brain (Tt.)")])
    val = np.concatenate([logits_for("Femur", 9.0, 20, rng), logits_for("Femur", 2.0, 1, rng)])   # last: Other
    truth = np.array(["femur"] * 20 + ["other"])
    pred = np.array(["femur"] * 21)
    rows = open_set_curve.score_curve("energy", LITE, train, truth, pred, val, [f"img{i}" for i in range(21)])
    shipped = next(r for r in rows if r["shipped_rate"])
    off = next(r for r in rows if r["threshold"] is None)
    assert off["nonstandard_shown_fetal"] == 1 and shipped["nonstandard_shown_fetal"] == 0
    assert shipped["four_plane_acc"] >= 0.95


def write_npz(path, meta, **arrs):
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrs)


def model_meta(info, threshold=None):
    return {"model_id": info.model_id, "labels": list(info.labels), "coarse_map": dict(info.coarse_map),
            "temperature": info.temperature,
            "open_set": None if threshold is None else {"threshold": threshold, "release": 0.6,
                                                        "train_fetal_rejected": 0.0112}}


def test_levers_replay_energy_and_heart_check_on_a_sweep(tmp_path):
    """A sweep: 3 s thorax, then 3 s of an Other image the model calls thorax from inside the thorax cluster
    (small distance) but with lower logits, and SonoNet16 calls RVOT. The distance rule shows it as thorax,
    energy (threshold from the training stills) and the heart check reject it, and all keep the real thorax."""
    rng = np.random.default_rng(4)
    sono = PlaneClassifier("sononet16").info
    son_labels = list(sono.labels)
    meta = {"kind": "stills", "models": {"planes_lite0": model_meta(LITE, 400.0), "sononet16": model_meta(sono)}}
    n_tr = 400
    coarse = np.array(["thorax"] * 200 + ["femur"] * 200 + ["thorax"] * 10 + ["other"])
    base = np.concatenate([logits_for("Thorax", 9.0, 200, rng), logits_for("Femur", 9.0, 200, rng),
                           logits_for("Thorax", 9.0, 10, rng), logits_for("Thorax", 3.5, 1, rng)])
    son = rng.normal(0, 0.3, (411, len(son_labels)))
    son[:410, son_labels.index("4CH")] += 8
    son[410, son_labels.index("RVOT")] += 8
    write_npz(tmp_path / "stills.npz", meta, **{
        "logits__planes_lite0": base.astype(np.float32), "open_set__planes_lite0": rng.uniform(50, 300, 411),
        "logits__sononet16": son.astype(np.float32), "open_set__sononet16": np.full(411, np.nan),
        "name": np.array([f"img{i}" for i in range(411)]), "patient": np.array([f"p{i}" for i in range(411)]),
        "coarse": coarse, "fine": np.array(["Thorax" if c == "thorax" else c.capitalize() for c in coarse]),
        "validation": np.arange(411) >= n_tr})
    n = 180
    other = np.arange(n) >= 90
    lo = np.where(other[:, None], logits_for("Thorax", 3.5, n, rng), logits_for("Thorax", 9.0, n, rng))
    son_s = np.full((n, len(son_labels)), np.nan)
    cad = np.arange(0, n, 6)
    son_s[cad] = rng.normal(0, 0.3, (len(cad), len(son_labels)))
    son_s[cad, np.where(other[cad], son_labels.index("RVOT"), son_labels.index("4CH"))] += 8
    write_npz(tmp_path / "s.npz", {"kind": "sweep", "cadence_s": 0.2, "models": meta["models"]}, **{
        "logits__planes_lite0": lo.astype(np.float32), "open_set__planes_lite0": rng.uniform(80, 150, n),
        "logits__sononet16": son_s.astype(np.float32), "open_set__sononet16": np.full(n, np.nan),
        "frame": np.arange(n), "t_media": np.arange(n) / 30, "blank": np.zeros(n, bool), "frozen": np.zeros(n, bool)})
    with open(tmp_path / "s.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["frame", "t_s", "kind", "plane", "brain_plane", "source"])
        w.writeheader()
        w.writerows({"frame": i, "t_s": f"{i / 30:.4f}", "kind": "stable", "brain_plane": "",
                     "plane": "Other" if other[i] else "Fetal thorax", "source": "o.png" if other[i] else "t.png"}
                    for i in range(n))
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "open_set_levers.py"), "--stills", str(tmp_path / "stills.npz"),
                        "--sweep", str(tmp_path / "s.npz"), "--labels", str(tmp_path / "s.csv"),
                        "--configs", "distance", "energy", "heart", "--bootstrap", "200", "--curve", "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    fit = r["fit_on_training_patients"]
    assert fit["heart"]["train_thorax_kept"] >= 0.99 and fit["heart"]["t"] < 0.5
    c = r["configs"]
    assert c["distance"]["sweeps"]["nonstandard_shown_fetal"] > 0.9
    assert c["distance"]["stills"]["nonstandard_shown_fetal"] == 1
    for cfg in ("energy", "heart"):
        assert c[cfg]["sweeps"]["nonstandard_shown_fetal"] < 0.1, cfg
        assert c[cfg]["sweeps"]["four_plane_stable_acc"] > 0.9, cfg
        assert c[cfg]["stills"]["nonstandard_shown_fetal"] == 0, cfg
    # SonoNet16 runs once per 0.2-s cell while the model says thorax: 1 frame in 6 here
    assert abs(c["heart"]["sweeps"]["sononet16_runs_per_frame"] - 1 / 6) < 0.01
    # trade-off curves at training reject rates: off shows the Other stretch for every score, energy at the
    # shipped rate rejects it, the distance at no rate does (it sits inside the cluster)
    curves = r["curves"]
    for kind in ("distance", "energy", "max-softmax"):
        assert next(x for x in curves[kind] if x["train_reject_rate"] == 0)["sweeps_nonstandard_shown_fetal"] > 0.9
    assert next(x for x in curves["energy"] if x["shipped_rate"])["sweeps_nonstandard_shown_fetal"] < 0.1
    assert min(x["sweeps_nonstandard_shown_fetal"] for x in curves["distance"] if x["train_reject_rate"] <= 0.02) > 0.9
    # paired with the shipped rule: energy removes the Other stretch on every draw that holds it
    d, lo_d, hi_d = c["energy"]["minus_distance_95"]["sweeps_nonstandard_shown_fetal"]
    assert d < -0.8 and hi_d < 0
    lo_ci, hi_ci = c["distance"]["bootstrap_95"]["sweeps_four_plane_stable_acc"][1:]
    assert lo_ci <= c["distance"]["sweeps"]["four_plane_stable_acc"] <= hi_ci


def test_frame_outputs_recreates_the_recorded_model_outputs(tmp_path):
    """A real run's recording of the bundled clip: re-cut with the recorded crops, the frames give back the
    recorded open-set distance and top-1 probability (rounding only), and the cadence model runs once per cell."""
    rec = tmp_path / "rec.jsonl"
    p = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--no-frames", "--max-frames", "24", "--record", rec)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "o.npz"
    q = subprocess.run([sys.executable, str(ROOT / "tools" / "frame_outputs.py"), "--video", str(SAMPLE_CLIP),
                        "--results", str(rec), "--models", "planes_lite0", "--cadence-model", "planes_sepcnn",
                        "--cadence-s", "0.2", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert q.returncode == 0, q.stderr
    z = np.load(out)
    recs = {r["frame"]: r for r in map(json.loads, rec.read_text().splitlines()) if r.get("kind") == "result"}
    done = [f for f, r in recs.items() if r["topk"]]
    assert len(done) >= 20
    for f in done:
        assert abs(z["open_set__planes_lite0"][f] - recs[f]["open_set"]) < 0.02
        p_top = np.exp(z["logits__planes_lite0"][f] / LITE.temperature)
        assert abs(p_top.max() / p_top.sum() - recs[f]["topk"][0][1]) < 1e-3
    ran = ~np.isnan(z["logits__planes_sepcnn"]).any(1)
    cells = np.floor(z["t_media"] / 0.2 + 1e-9)
    assert ran.sum() == len(np.unique(cells[~z["blank"]])) and ran.sum() < len(done)


def test_tools_bad_input_is_one_line(tmp_path):
    not_video = tmp_path / "not_a_video.mp4"
    not_video.write_text("hello")
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps({"kind": "result", "frame": 0, "topk": [], "crop": [0, 0, 8, 8], "flags": {}}))
    for tool, args in (("open_set_levers.py", ["--stills", str(tmp_path / "missing.npz")]),
                       ("open_set_levers.py", ["--stills", str(not_video)]),
                       ("frame_outputs.py", ["--video", str(tmp_path / "missing.mp4"), "--results",
                                             str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.npz")]),
                       ("frame_outputs.py", ["--video", str(not_video), "--results", str(rec),
                                             "--out", str(tmp_path / "o.npz")]),
                       ("frame_outputs.py", ["--stills", "--models", "no_such_model", "--out", str(tmp_path / "o.npz")])):
        p = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
        assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
