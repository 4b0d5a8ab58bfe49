"""Give freed memory back to the operating system, periodically.

A burst of large uploads and downloads leaves the heap full of freed chunks. CPython
returns small objects to its own pools and glibc keeps freed heap memory for reuse:
without help the process stays at its peak size for ever (the Go original's memory
trouble). `gc.collect()` frees what only cycles kept alive; glibc's `malloc_trim(0)`
then hands the free pages of every malloc arena back to the kernel.
"""

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback

log = logging.getLogger("imagestore.memory")

# A tick that hands back less than this is routine: logged at DEBUG only.
_WORTH_LOGGING_BYTES = 16 * 1024 * 1024
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (musl, macOS, Windows)."""
    try:
        # CDLL(None) is the running process: its libc is already loaded, whatever its
        # file name; find_library would run ldconfig/gcc, which costs start-up time.
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def rss_bytes() -> int | None:
    """This process's resident set size, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def release_memory() -> tuple[float, int | None, int | None]:
    """Collect garbage and trim the malloc heap. Returns (seconds it took, RSS before,
    RSS after); the RSS figures are None where they cannot be read."""
    before = rss_bytes()
    began = time.perf_counter()
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    took = time.perf_counter() - began
    return took, before, rss_bytes()


def _tick() -> None:
    took, before, after = release_memory()
    if before is not None and after is not None and before - after >= _WORTH_LOGGING_BYTES:
        level = logging.INFO
    else:
        level = logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "memory release: RSS %s -> %s MiB in %.1f ms",
            "?" if before is None else f"{before / 2**20:.0f}",
            "?" if after is None else f"{after / 2**20:.0f}",
            took * 1000,
        )


def start_memory_release(interval_seconds: float) -> PeriodicCallback | None:
    """Run release_memory() every ``interval_seconds`` on the current IOLoop (0: never).
    The caller stops the returned callback at shutdown."""
    if interval_seconds <= 0:
        log.info("memory release is off (IMAGESTORE_MEMORY_RELEASE_SECONDS=0)")
        return None
    if _malloc_trim is None:
        log.debug("no malloc_trim in this C library: memory release only collects garbage")
    # Everything alive now (modules, classes, the app, the store) lives as long as the
    # process: collect start-up's garbage once, then move the survivors out of the
    # collector's sight, so that each tick's full collection (and Python's own) walks
    # only what requests created since (README, The one executable: Memory).
    # Frozen objects are still freed by reference counting; only cycles among them
    # would stay, and start-up leaves none behind after this collect.
    gc.collect()
    gc.freeze()
    callback = PeriodicCallback(_tick, interval_seconds * 1000)
    callback.start()
    return callback
