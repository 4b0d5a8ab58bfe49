#!/usr/bin/env python3
"""How fast the one executable starts: exec to its first HTTP 200 (GET /healthz), over
cold starts, each in a new empty folder (so it creates ./image-db too), then SIGTERM
and the time to exit 0.

Usage: bench/startup.py [--runs N] [EXECUTABLE ...]   (default: dist/imagestore)
An argument ending in .py is run with this Python (e.g. imagestore.py, to compare).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from harness import ROOT, clean_env, free_port, request


def one_start(command: list[str]) -> tuple[float, float]:
    """(seconds from exec to the first 200, seconds from SIGTERM to exit 0)."""
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = clean_env(IMAGESTORE_PORT=str(port), IMAGESTORE_LOG_LEVEL="WARNING")
        began = time.perf_counter()
        null = subprocess.DEVNULL  # its complaint about a broker it cannot reach
        proc = subprocess.Popen(command, cwd=folder, env=env, stdin=null, stdout=null, stderr=null)
        try:
            while True:  # poll every millisecond
                if proc.poll() is not None or time.perf_counter() - began > 20:
                    raise RuntimeError(f"{command[-1]}: no 200 (exit code {proc.returncode})")
                try:
                    if request(port, "GET", "/healthz", timeout=5)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.001)
            ready, began = time.perf_counter() - began, time.perf_counter()
            proc.terminate()
            if proc.wait(30) != 0:
                raise RuntimeError(f"exit code {proc.returncode} after SIGTERM")
            return ready, time.perf_counter() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("programs", nargs="*", default=[os.path.join(ROOT, "dist", "imagestore")])
    args = parser.parse_args()
    for program in map(os.path.abspath, args.programs):
        command = [sys.executable, program] if program.endswith(".py") else [program]
        results = [one_start(command) for _ in range(args.runs)]
        print(f"{os.path.relpath(program, ROOT)}: {os.path.getsize(program) / 1e6:.1f} MB")
        labels = ("exec -> first HTTP 200", "SIGTERM -> exit 0")
        for label, values in zip(labels, zip(*results, strict=True), strict=True):
            ms = sorted(v * 1000 for v in values)
            median = statistics.median(ms)
            print(f"  {label:<23} median {median:4.0f} ms (min {ms[0]:.0f}, max {ms[-1]:.0f})")


if __name__ == "__main__":
    main()
