"""tools/soak_mappings.py: finds the spawned capture-like children of a process and sums their
resident memory by kind of mapping (docs/soak/README.md, Session 7)."""
import multiprocessing as mp
import sys
from multiprocessing import shared_memory
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import soak_mappings  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc only")


def _child(shm_name, ready, done):
    import numpy as np
    big = np.ones(8 << 20, np.uint8)                 # 8 MB, touched: an anonymous mapping
    shm = shared_memory.SharedMemory(name=shm_name)
    shm.buf[:] = b"\1" * shm.size                    # the slot, touched
    ready.set()
    done.wait(20)
    del big
    shm.close()


def test_spawned_child_memory_is_found_and_split_by_kind():
    ctx = mp.get_context("spawn")
    shm = shared_memory.SharedMemory(create=True, size=4 << 20)
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_child, args=(shm.name, ready, done), daemon=True)
    proc.start()
    try:
        assert ready.wait(30)
        assert proc.pid in soak_mappings.capture_processes(mp.current_process().pid)
        kinds = soak_mappings.resident_by_kind(proc.pid)
        assert kinds["anon>=1MB"] >= 8 << 10         # KB
        assert kinds["shm"] >= 4 << 10
        assert kinds["files"] > 0                     # the interpreter and libraries
    finally:
        done.set()
        proc.join(10)
        shm.close()
        shm.unlink()
    assert soak_mappings.resident_by_kind(proc.pid) is None      # gone: None, no exception
