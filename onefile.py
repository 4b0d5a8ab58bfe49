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
        if ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the bootloader died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
