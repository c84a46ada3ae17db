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


def _stage_and_probs(every_s=0.25):
    from streamer.infer import PlaneClassifier
    from streamer.subplanes import SubplaneStage
    roi = cv2.cvtColor(cv2.imread(str(FIXTURES / "sononet" / "BRAIN-TV.jpg")), cv2.COLOR_BGR2GRAY)
    primary = PlaneClassifier("planes_lite0_128")
    stage = SubplaneStage("planes_lite0", primary.info, "onnxruntime", 1, every_s=every_s)
    return stage, roi, primary.predict(roi).probs


def test_cadence_runs_the_refiner_once_per_cell_and_holds_its_split_from_a_fixed_media_delay():
    """--subplane-every 0.25 on a file at 30 fps: one refiner call per 0.25 s cell while brain, its split
    applied from the first frame >= 0.1 s (APPLY_AFTER_S) after its input, the same split as the
    every-frame path gives on that input; nothing held across a non-brain frame."""
    from streamer.subplanes import APPLY_AFTER_S
    stage, roi, p = _stage_and_probs()
    every_frame = stage.refine(p, roi, roi, 0)
    stage.runs = 0
    try:
        shown = []
        for k in range(16):                          # t = 0 .. 0.5 s at 30 fps
            shown.append(stage.step(p, True, roi, roi, 0, None, k / 30, wait=True))
        assert stage.runs == 3                       # cells [0, .25), [.25, .5), [.5, .75): inputs at k=0, 8, 15
        first = [k for k in range(16) if not np.array_equal(shown[k], p)][0]
        assert first == round(APPLY_AFTER_S * 30)    # k=3: nothing before the verdict is due
        np.testing.assert_allclose(shown[first], every_frame, atol=1e-6)
        assert all(np.allclose(s, every_frame, atol=1e-6) for s in shown[first:])
        # Not brain: the split is dropped; the next brain frame starts over (a new input, no split yet).
        assert stage.step(p, False, roi, roi, 0, None, 0.6, wait=True) is p
        np.testing.assert_array_equal(stage.step(p, True, roi, roi, 0, None, 0.62, wait=True), p)
        assert stage.runs == 4
        # Time going backwards (a file restarted) voids the verdict in flight instead of waiting for it.
        np.testing.assert_array_equal(stage.step(p, True, roi, roi, 0, None, 0.0, wait=True), p)
    finally:
        stage.close()


def test_live_cadence_takes_a_verdict_when_it_is_ready_and_never_waits():
    stage, roi, p = _stage_and_probs(every_s=1.0)
    try:
        np.testing.assert_array_equal(stage.step(p, True, roi, roi, 0, None, 100.0, wait=False), p)
        stage._pending[0].result(timeout=30)          # the worker finished: the next frame takes it
        refined = stage.step(p, True, roi, roi, 0, None, 100.01, wait=False)
        assert not np.array_equal(refined, p) and stage.runs == 1
    finally:
        stage.close()


@pytest.mark.slow
def test_cadence_gives_the_same_labels_at_native_rate_and_fast(tmp_path):
    """Files: the refiner's inputs and verdict points are media times, so native replay and --fast show the
    same fine labels (same frames when native skipped none), and the sub-plane is the refiner's."""
    runs = {}
    for name, extra in (("fast", ["--fast"]), ("native", []), ("alone", ["--fast", "--model", "planes_lite0"])):
        record = tmp_path / f"{name}.jsonl"
        model = [] if name == "alone" else ["--model", "planes_lite0_128", "--subplane-model", "planes_lite0",
                                            "--subplane-every", "0.25"]
        proc = run_cli("run", "--source", SAMPLE_CLIP, "--max-frames", "110", *model, *extra, "--no-frames",
                       "--publish", f"tcp://127.0.0.1:{free_port()}", "--record", record, timeout=300)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
        runs[name] = ({r["frame"]: r["label"] for r in rows}, rows[-1]["skipped_total"])
    (fast, _), (native, skipped), (alone, _) = runs["fast"], runs["native"], runs["alone"]
    common = sorted(set(fast) & set(native))
    assert len(fast) == 110 and len(common) >= 0.5 * len(fast)
    if skipped == 0:
        assert all(fast[f] == native[f] for f in common)
    else:   # a skipped frame may move a label change by one classified frame (docs/smoothing.md)
        assert sum(fast[f] != native[f] for f in common) <= 2
    brain = [f for f in fast if fast[f] and fast[f].startswith("Brain") and alone.get(f, "").startswith("Brain")]
    assert len(brain) >= 60
    assert np.mean([fast[f] == alone[f] for f in brain]) >= 0.9    # planes_lite0's sub-plane, held between calls
