"""Overlay: stale results are never drawn as current; MP4 output decodes; the web page in Chromium."""
import shutil
import subprocess
import threading
import time

import av
import numpy as np
import pytest

from streamer.overlay.recorder import Mp4Recorder, record_overlay
from streamer.overlay.render import is_stale, render_overlay
from streamer.publish import Publisher

from .conftest import free_port
from .test_schema import result_payload

IMAGE = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def test_stale_rules():
    r = result_payload()
    assert is_stale(None, 10.0, None, 0.5) == (True, "NO SIGNAL")
    assert not is_stale(r, 10.0, 9.8, 0.5)[0]
    assert is_stale(r, 10.0, 9.0, 0.5)[0]
    assert is_stale({**r, "source": {"state": "reconnecting"}}, 10.0, 9.9, 0.5)[0]


def test_stale_render_differs_from_fresh_and_greys_the_plane():
    r = result_payload()
    fresh = render_overlay(IMAGE, r, 10.0, 9.9)
    stale = render_overlay(IMAGE, r, 10.0, 8.0)
    assert not np.array_equal(fresh, stale)
    # The red STALE banner sits across the top of the image area only when stale.
    assert stale[5:40, 5:300, 2].mean() > 150 and fresh[5:40, 5:300, 2].mean() < 150
    # The plane's colour (femur green) appears in the panel only when fresh.
    panel_f, panel_s = fresh[:, 900:], stale[:, 900:]
    green = lambda img: ((img[:, :, 1] > 200) & (img[:, :, 0] < 150) & (img[:, :, 2] < 150)).sum()
    assert green(panel_f) > 500 and green(panel_s) < 50


def test_no_result_renders_black_canvas_with_banner():
    out = render_overlay(None, None, 1.0)
    assert out.shape == (720, 1280, 3) and out[5:40, 5:300, 2].mean() > 150


def test_mp4_recorder(tmp_path):
    path = tmp_path / "o.mp4"
    rec = Mp4Recorder(path, fps=25)
    for i in range(30):
        rec.write(render_overlay(IMAGE, result_payload(i), 1.0, 1.0))
    rec.close()
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and (frames[0].width, frames[0].height) == (1280, 720)


def test_record_overlay_from_publisher(tmp_path):
    addr = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(addr, "0")
    stop = threading.Event()
    out = tmp_path / "rec.mp4"
    t = threading.Thread(target=record_overlay, args=(addr, out, stop), kwargs={"fps": 20})
    t.start()
    time.sleep(0.3)
    for i in range(20):
        pub.result(result_payload(i))
        pub.frame(IMAGE, i, time.monotonic(), [0, 0, 640, 480])
        time.sleep(0.05)
    stop.set()
    t.join(timeout=10)
    pub.close()
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 10


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=1500", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_web_overlay_in_headless_chromium(tmp_path):
    from streamer.overlay.web import serve_web
    addr = f"tcp://127.0.0.1:{free_port()}"
    port = free_port()
    pub = Publisher(addr, "0")
    stop = threading.Event()
    server = threading.Thread(target=serve_web, args=(addr, f"127.0.0.1:{port}", stop), daemon=True)
    server.start()
    publishing = threading.Event()
    publishing.set()

    def feed():
        i = 0
        while publishing.is_set():
            pub.result(result_payload(i))
            pub.frame(IMAGE, i, time.monotonic(), [0, 0, 640, 480])
            i += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        time.sleep(1.0)
        dom = dump_dom(f"http://127.0.0.1:{port}/", tmp_path)
        assert 'id="plane" data-stale="false">femur<' in dom, dom[-1500:]
        assert ">LIVE<" in dom
        publishing.clear()          # the publisher goes silent: the page must say STALE
        feeder.join()
        time.sleep(1.0)
        dom = dump_dom(f"http://127.0.0.1:{port}/", tmp_path)
        assert 'data-stale="true"' in dom and "STALE" in dom, dom[-1500:]
    finally:
        stop.set()
        server.join(timeout=10)
        pub.close()
