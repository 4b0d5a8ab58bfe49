"""Memory given back to the OS: release_memory(), its periodic tick, its setting."""

import asyncio
import gc
import logging

import pytest
from process import run_to_end, serve

import memory
from settings import parse_settings


def test_the_interval_is_a_setting_of_60_seconds_by_default():
    assert parse_settings([], {}).memory_release_seconds == 60.0
    env = {"IMAGESTORE_MEMORY_RELEASE_SECONDS": "2.5"}
    assert parse_settings([], env).memory_release_seconds == 2.5
    assert parse_settings(["--memory-release-seconds", "0"], env).memory_release_seconds == 0
    result = run_to_end(env={"IMAGESTORE_MEMORY_RELEASE_SECONDS": "-1"})
    assert result.returncode == 2
    assert "IMAGESTORE_MEMORY_RELEASE_SECONDS='-1'" in result.stderr


def test_release_hands_a_fragmented_heap_back_to_the_os():
    assert memory._malloc_trim is not None, "Debian's glibc has malloc_trim"
    blocks = [bytes(4000) for _ in range(50_000)]  # ~200 MB, above pymalloc's 512 bytes
    pinned = blocks[::100]  # a few survivors: the heap cannot just shrink from its top
    del blocks
    took, before, after = memory.release_memory()
    assert before - after > 100 * 2**20, (before, after)
    assert took < 1.0
    del pinned


def test_release_works_without_malloc_trim(monkeypatch):
    """Where the C library has no malloc_trim (musl, macOS) a tick only collects."""
    monkeypatch.setattr(memory, "_malloc_trim", None)
    took, before, after = memory.release_memory()
    assert took >= 0 and before and after


def test_zero_turns_the_release_off():
    assert memory.start_memory_release(0) is None


@pytest.mark.gen_test
async def test_ticks_run_on_the_io_loop_and_are_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="imagestore.memory")
    callback = memory.start_memory_release(0.02)
    try:
        await asyncio.sleep(0.2)
    finally:
        callback.stop()
        gc.unfreeze()
    ticks = [r.getMessage() for r in caplog.records if "memory release: RSS" in r.getMessage()]
    assert len(ticks) >= 3, ticks


def test_the_service_runs_the_tick(run, tmp_path):
    proc, _port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db")),
            {"IMAGESTORE_MEMORY_RELEASE_SECONDS": "0.05", "IMAGESTORE_LOG_LEVEL": "DEBUG"},
        ),
    )
    assert proc.wait_for_log("memory release: RSS"), proc.log()
