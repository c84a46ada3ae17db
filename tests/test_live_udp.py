"""A live source: ffmpeg streams the clip as MPEG-TS to udp://127.0.0.1, `sonoplane run` consumes it."""
import json
import shutil
import subprocess
import time

import pytest

from .conftest import SAMPLE_CLIP, free_port, run_cli

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def test_udp_mpegts_stream(tmp_path):
    port = free_port()
    record = tmp_path / "udp.jsonl"
    # Start the receiver first (UDP has no handshake), then the sender at native rate.
    import os
    import sys
    from .conftest import ROOT
    recv = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--source",
                             f"udp://127.0.0.1:{port}?timeout=3000000", "--no-reconnect", "--no-frames",
                             "--publish", f"tcp://127.0.0.1:{free_port()}", "--record", str(record)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    send = subprocess.run(["ffmpeg", "-loglevel", "error", "-re", "-i", str(SAMPLE_CLIP), "-t", "5",
                           "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                          timeout=60)
    assert send.returncode == 0
    out, err = recv.communicate(timeout=60)
    assert recv.returncode == 0, err
    assert "Traceback" not in err
    rows = [json.loads(x) for x in record.read_text().splitlines() if '"result"' in x]
    assert len(rows) >= 30, err
    assert all(r["source"]["url"].startswith("udp://") for r in rows)
    last = rows[-1]
    assert len(rows) + last["skipped_total"] <= last["frame"] + 1
    # The first 5 s of the clip: a brain still, then an abdomen still.
    assert {r["plane"] for r in rows} <= {"brain", "abdomen", "uncertain"}
    assert {"brain", "abdomen"} & {r["plane"] for r in rows}
