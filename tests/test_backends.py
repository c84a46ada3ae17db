import numpy as np
import pytest

from engines.backends import create_backend
from engines.tensorrt_build import engine_key
from engines.zoo import resolve

from .conftest import SHARED, run_cli


@pytest.mark.skipif(not (SHARED / "data" / "sononet").is_dir(), reason="needs ../shared (SonoNet16 npz)")
def test_torch_backend_matches_onnxruntime_on_cpu():
    pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(0, 255, (1, 1, 224, 288)).astype(np.float32)
    a = create_backend("onnxruntime", resolve("sononet16")).infer(x)
    b = create_backend("torch", resolve("sononet16")).infer(x)
    assert np.abs(a.logits - b.logits).max() < 1e-3 and np.abs(a.cam - b.cam).max() < 1e-3


def test_engine_key_names_everything_that_invalidates_an_engine():
    k = engine_key("sononet16", "NVIDIA H100 80GB HBM3", (9, 0), "10.3.0", "int8", "a" * 64, "b" * 64)
    assert k == "sononet16.nvidia-h100-80gb-hbm3.sm90.trt10.3.0.int8.aaaaaaaaaaaa.bbbbbbbbbbbb"
    with pytest.raises(ValueError):
        engine_key("m", "gpu", (8, 0), "10", "int4", "a" * 64)


def test_engine_build_without_tensorrt_is_a_clear_error():
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    proc = run_cli("engine", "build", "sononet16", "--precision", "fp16")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "TensorRT is not installed" in proc.stderr
