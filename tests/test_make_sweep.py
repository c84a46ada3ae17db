"""tools/make_sweep.py on synthetic stills (no ../shared): video, ground truth, frozen and blank stretches."""
import csv
import subprocess
import sys

import av
import cv2
import numpy as np

from .conftest import ROOT, SAMPLE_CLIP


def make_stills(tmp_path):
    rows = []
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for i, plane in enumerate(["Fetal brain", "Fetal abdomen", "Fetal femur"]):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (300, 420)).astype(np.uint8), (0, 0), 3 + i)
        name = f"images/P{i}.png"
        cv2.imwrite(str(tmp_path / name), img)
        rows.append({"file": name, "Image_name": f"P{i}", "Patient_num": str(i), "Plane": plane,
                     "Brain_plane": "Trans-thalamic" if i == 0 else "Not A Brain", "Operator": "x",
                     "US_Machine": "x", "Train": "1", "copy": "original"})
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return tmp_path / "labels.csv"


def test_sweep_video_and_ground_truth(tmp_path):
    labels = make_stills(tmp_path)
    out = tmp_path / "sweep.mp4"
    cmd = [sys.executable, str(ROOT / "tools" / "make_sweep.py"), "--images", str(labels),
           "--planes", "Fetal brain", "Fetal abdomen", "Fetal femur", "--size", "320x240", "--fps", "20",
           "--hold", "1", "--transition", "0.25", "--frozen", "0.5", "--blank", "0.5", "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert list(rows[0]) == ["frame", "t_s", "kind", "plane", "brain_plane", "source"]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("stable") == 60 and kinds.count("frozen") == 10 and kinds.count("blank") == 10
    assert kinds.count("transition") == 2 * 5
    assert all(r["plane"] == "" for r in rows if r["kind"] in ("transition", "blank"))
    assert {r["plane"] for r in rows if r["kind"] == "stable"} == {"Fetal brain", "Fetal abdomen", "Fetal femur"}
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == len(rows) and frames[0].shape == (240, 320) and float(s.average_rate) == 20
    fz = [i for i, r in enumerate(rows) if r["kind"] == "frozen"]
    assert np.abs(frames[fz[1]].astype(int) - frames[fz[-1]].astype(int)).mean() < 1.0   # frozen: still
    st = [i for i, r in enumerate(rows) if r["kind"] == "stable"]
    assert np.abs(frames[st[1]].astype(int) - frames[st[5]].astype(int)).mean() > 1.0    # live: moving
    bl = [i for i, r in enumerate(rows) if r["kind"] == "blank"]
    assert frames[bl[3]][40:220, 60:250].mean() < 15                                     # probe lifted


def test_bundled_sample_clip():
    assert SAMPLE_CLIP.stat().st_size <= 6_000_000
    rows = list(csv.DictReader(open(SAMPLE_CLIP.with_suffix(".csv"))))
    with av.open(str(SAMPLE_CLIP)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(rows)
    assert {"stable", "transition", "frozen", "blank"} == {r["kind"] for r in rows}


def test_planes_accept_short_names_for_other_and_cervix_and_reject_unknown_ones(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from make_sweep import plane_name
    assert plane_name("other") == "Other" and plane_name("Cervix") == "Maternal cervix"
    assert plane_name("Fetal brain") == "Fetal brain"
    cmd = [sys.executable, str(ROOT / "tools" / "make_sweep.py"), "--images", "x.csv", "--planes", "kidney",
           "--out", str(tmp_path / "x.mp4")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown plane 'kidney'" in p.stderr and "Traceback" not in p.stderr
