"""tools/domain_shift.py on the committed SonoNet example frames (HC18 skipped: folder given as missing)."""
import json
import subprocess
import sys

from .conftest import ROOT


def test_domain_shift_reports_every_sononet_frame(tmp_path):
    out = tmp_path / "ds.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "domain_shift.py"), "--hc18", str(tmp_path / "none"),
                        "--json", str(out)], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    rows = {r["frame"]: r for r in rep["sononet"]}
    assert len(rows) == 13 and rep["hc18"] is None and "HC18" in p.stdout
    assert rows["BRAIN-TV"]["shown"] == "brain" and rows["4CH"]["shown"] == "thorax"
    assert rep["sononet_argmax_right"] == sum(r["argmax"] == r["expected"] for r in rows.values())
    # A view the model has no class for is never counted right when shown as a fetal plane.
    for r in rows.values():
        if r["expected"] in ("profile", "spine"):
            assert r["right_shown"] == (r["shown"] not in ("brain", "abdomen", "femur", "thorax"))
