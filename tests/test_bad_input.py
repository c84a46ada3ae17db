"""Bad input: a one-line error naming the problem, non-zero exit, no traceback, nothing left running."""
import pytest

from .conftest import SAMPLE_CLIP, free_port, run_cli, tagged_processes

TAG = "bad-input"


def no_capture_left():
    return tagged_processes(TAG) == []


def check(proc, *words):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize("source,words", [
    ("/nonexistent/clip.mp4", ("not found", "/nonexistent/clip.mp4")),
    ("foo://x", ("unsupported", "foo://")),
    ("/dev/video99", ("/dev/video99",)),
])
def test_bad_sources(source, words):
    # A live source (the V4L2 device) is waited for forever by default: --open-timeout bounds it.
    check(run_cli("run", "--source", source, "--publish", f"tcp://127.0.0.1:{free_port()}",
                  "--open-timeout", "1", tag=TAG), *words)
    assert no_capture_left()


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 1000)
    check(run_cli("run", "--source", garbage, "--publish", f"tcp://127.0.0.1:{free_port()}", tag=TAG),
          "garbage.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(SAMPLE_CLIP.read_bytes()[:200_000])
    check(run_cli("run", "--source", truncated, "--publish", f"tcp://127.0.0.1:{free_port()}", tag=TAG),
          "truncated.mp4")
    assert no_capture_left()


def test_wrong_model_file(tmp_path):
    fake = tmp_path / "x.onnx"
    fake.write_text("hello")
    check(run_cli("run", "--source", SAMPLE_CLIP, "--model", fake), "x.onnx")
    check(run_cli("run", "--source", SAMPLE_CLIP, "--model", "no_such_model"), "no_such_model")
    check(run_cli("classify", "--model", fake, SAMPLE_CLIP), "x.onnx")


def test_unreadable_image_in_classify(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    proc = run_cli("classify", "--json", bad)
    check(proc, "bad.png")
