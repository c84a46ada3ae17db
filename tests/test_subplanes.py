"""Brain sub-planes from a second model (engines/subplanes.py, streamer/subplanes.py, run --subplane-model)."""
import json

import cv2
import numpy as np
import pytest

from engines.subplanes import SubplaneMapping, brain_labels

from .conftest import FIXTURES, SAMPLE_CLIP, SHARED, free_port, needs_shared, run_cli

LABELS = ["Brain (Tt.)", "Brain (Tc.)", "Brain (Tv.)", "Brain (other)", "Abdomen", "Femur", "Thorax",
          "Cervix", "Other"]
COARSE = {lab: "brain" for lab in LABELS[:4]} | {"Abdomen": "abdomen", "Femur": "femur", "Thorax": "thorax",
                                                 "Cervix": "cervix", "Other": "other"}


def test_refine_keeps_the_plane_mass_and_splits_brain_in_the_refiners_proportions():
    # The refiner lists its labels in another order: the mapping goes by name, not position.
    refiner_labels = LABELS[::-1]
    mapping = SubplaneMapping(LABELS, COARSE, refiner_labels, COARSE)
    primary = np.array([0.50, 0.05, 0.05, 0.0, 0.1, 0.1, 0.1, 0.05, 0.05])      # brain 0.6, Tt favoured
    refiner_by_name = {"Brain (Tt.)": 0.1, "Brain (Tc.)": 0.1, "Brain (Tv.)": 0.6, "Brain (other)": 0.0,
                       "Abdomen": 0.2, "Femur": 0.0, "Thorax": 0.0, "Cervix": 0.0, "Other": 0.0}
    refiner = np.array([refiner_by_name[lab] for lab in refiner_labels])
    out = mapping.refine(primary, refiner)
    np.testing.assert_allclose(out[4:], primary[4:])                      # non-brain: the primary's
    assert out[:4].sum() == pytest.approx(0.6)                            # the plane's mass unchanged
    np.testing.assert_allclose(out[:4], 0.6 * np.array([0.1, 0.1, 0.6, 0.0]) / 0.8)
    assert LABELS[int(np.argmax(out))] == "Brain (Tv.)"                   # the refiner's sub-plane wins
    # A batch gives the same rows.
    batch = mapping.refine(np.stack([primary, primary]), np.stack([refiner, refiner]))
    np.testing.assert_allclose(batch, np.stack([out, out]))


def test_a_refiner_without_brain_mass_leaves_the_split_alone():
    mapping = SubplaneMapping(LABELS, COARSE, LABELS, COARSE)
    primary = np.array([0.3, 0.2, 0.1, 0.0, 0.1, 0.1, 0.1, 0.05, 0.05])
    refiner = np.array([0, 0, 0, 0, 1.0, 0, 0, 0, 0])
    np.testing.assert_allclose(mapping.refine(primary, refiner), primary)


def test_mismatched_brain_labels_are_refused():
    sononet_like = ["Brain (Cb.)", "Brain (Tv.)", "Femur"]
    with pytest.raises(ValueError, match="brain labels"):
        SubplaneMapping(LABELS, COARSE, sononet_like, {"Brain (Cb.)": "brain", "Brain (Tv.)": "brain",
                                                       "Femur": "femur"})
    with pytest.raises(ValueError, match="nothing to refine"):
        SubplaneMapping(["Brain", "Femur"], {"Brain": "brain", "Femur": "femur"}, LABELS, COARSE)
    assert brain_labels(LABELS, COARSE) == LABELS[:4]


def test_stage_on_a_real_frame_uses_the_second_models_own_prediction():
    """planes_lite0_128 keeps its plane probabilities; the brain split is planes_lite0's own on that crop."""
    from streamer.infer import PlaneClassifier
    from streamer.subplanes import SubplaneStage
    roi = cv2.cvtColor(cv2.imread(str(FIXTURES / "sononet" / "BRAIN-TV.jpg")), cv2.COLOR_BGR2GRAY)
    primary = PlaneClassifier("planes_lite0_128")
    refiner = PlaneClassifier("planes_lite0")
    stage = SubplaneStage("planes_lite0", primary.info, "onnxruntime", 1)
    p = primary.predict(roi).probs
    r = refiner.predict(roi).probs
    out = stage.refine(p, roi, roi, 0)
    brain = [primary.info.labels.index(lab) for lab in LABELS[:4]]
    rbrain = [refiner.info.labels.index(lab) for lab in LABELS[:4]]
    assert out[brain].sum() == pytest.approx(p[brain].sum(), abs=1e-5)
    np.testing.assert_allclose(out[brain] / out[brain].sum(), r[rbrain] / r[rbrain].sum(), atol=1e-5)
    rest = [i for i in range(len(p)) if i not in brain]
    np.testing.assert_allclose(out[rest], p[rest], atol=1e-7)


def _brain_labels_of(record):
    rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
    return rows, {r["frame"]: r["label"] for r in rows if r["plane"] == "brain"}


def test_run_with_a_subplane_model_shows_its_brain_view(tmp_path):
    """The bundled clip opens on a brain still: with `--model planes_lite0_128 --subplane-model planes_lite0`
    every brain frame's sub-plane label is the one planes_lite0 shows on that frame by itself."""
    runs = {}
    for name, extra in (("alone", ["--model", "planes_lite0"]),
                        ("pair", ["--model", "planes_lite0_128", "--subplane-model", "planes_lite0"])):
        record = tmp_path / f"{name}.jsonl"
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "110", *extra, "--no-frames",
                       "--publish", f"tcp://127.0.0.1:{free_port()}", "--record", record)
        assert proc.returncode == 0, proc.stderr
        runs[name] = _brain_labels_of(record)
    rows, pair = runs["pair"]
    _, alone = runs["alone"]
    assert all(r["model"]["id"] == "planes_lite0_128" and r["model"]["subplane_model"] == "planes_lite0"
               for r in rows)
    common = sorted(set(pair) & set(alone))
    assert len(common) >= 60, (len(pair), len(alone))
    assert all(pair[f] == alone[f] for f in common), [(f, pair[f], alone[f]) for f in common if pair[f] != alone[f]]


def test_a_subplane_model_with_other_brain_labels_is_one_clear_error():
    proc = run_cli("run", "--source", SAMPLE_CLIP, "--fast", "--max-frames", "5", "--subplane-model", "sononet16",
                   "--publish", f"tcp://127.0.0.1:{free_port()}", "--no-frames")
    assert proc.returncode == 2
    assert "--subplane-model sononet16" in proc.stderr and "Traceback" not in proc.stderr


@needs_shared
@pytest.mark.slow
def test_evaluate_with_a_subplane_model_changes_only_the_brain_split(tmp_path):
    """`python -m engines evaluate --subplane-model`: planes and coarse figures are the plane model's own; the
    brain sub-planes become the second model's split on the stills the plane model calls brain."""
    from engines.evaluate import evaluate
    data = SHARED / "data" / "fetal_planes"
    alone = evaluate("planes_lite0_128", data, None, tmp_path / "alone", threads=2)
    pair = evaluate("planes_lite0_128", data, None, tmp_path / "pair", threads=2, subplane_model="planes_lite0")
    reference = evaluate("planes_lite0", data, None, tmp_path / "ref", threads=2)
    for scope in ("four_planes", "coarse"):
        assert pair["scopes"][scope]["accuracy"] == alone["scopes"][scope]["accuracy"]
    assert pair["subplane_model"]["model"] == "planes_lite0"
    assert 80 <= pair["subplane_model"]["applied_to"] <= 100      # ~92 validation brain stills
    sub = {name: r["scopes"]["brain_subplanes"]["accuracy"] for name, r in
           (("alone", alone), ("pair", pair), ("reference", reference))}
    # planes_lite0_128 alone is weaker on sub-planes; with planes_lite0 splitting brain it matches planes_lite0's
    # own split up to the few images the two models disagree are brain at all.
    assert sub["pair"] > sub["alone"] and abs(sub["pair"] - sub["reference"]) <= 0.03, sub
    assert "second model, `planes_lite0`" in (tmp_path / "pair" / "README.md").read_text()
