"""What differs when imagestore runs as the one-file executable (dist/imagestore).

There, PyInstaller's bootloader unpacks the bundle into a temporary folder and runs the
service as its child process, passing signals (SIGTERM, SIGINT) on to it and exiting
with its code.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def bundled(*parts: str) -> str:
    """A folder shipped with the program (static/...): beside the sources, or unpacked
    from the one-file executable."""
    root = getattr(sys, "_MEIPASS", os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, *parts)


def signal_on_parent_death(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (even by
    SIGKILL). False where it cannot (not Linux)."""
    try:
        return bool(ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def follow_the_bootloader() -> None:
    """Killed itself (kill -9, the OOM killer), the bootloader cannot pass anything on:
    ask the kernel to send this process SIGTERM then, so that it stops gracefully
    instead of living on as an orphan that keeps the port and the data folder's lock.
    Does nothing from source, or on a system without prctl."""
    if not getattr(sys, "frozen", False) or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        # The one-file child's parent is the same file; a one-folder build (or any
        # other launcher) is left alone.
        if os.readlink(f"/proc/{parent}/exe") != os.readlink("/proc/self/exe"):
            return
    except OSError:
        return
    if not signal_on_parent_death(signal.SIGTERM):
        return
    if os.getppid() != parent:  # the bootloader died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
