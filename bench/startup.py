#!/usr/bin/env python3
"""How big the one executable is and how fast it starts: the time from exec to its
first HTTP 200 (GET /healthz), over several cold starts, each in a new empty folder
(so it creates ./image-db too), then SIGTERM and the time to exit 0.

Usage: bench/startup.py [--runs N] [EXECUTABLE ...]   (default: dist/imagestore)
An argument ending in .py is run with this Python (e.g. imagestore.py, to compare).
"""

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from process import clean_env, free_port  # noqa: E402


def first_200(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Poll GET /healthz every millisecond until it answers 200."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before answering")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.001)
        finally:
            conn.close()
    raise RuntimeError(f"no 200 in {timeout}s")


def one_start(command: list[str]) -> tuple[float, float, float]:
    """(seconds to the first 200, seconds from SIGTERM to exit, seconds for --version)."""
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = clean_env(IMAGESTORE_PORT=str(port), IMAGESTORE_LOG_LEVEL="WARNING")
        began = time.perf_counter()
        proc = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL)
        try:
            first_200(port, proc)
            ready = time.perf_counter() - began
            began = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            stopped = time.perf_counter() - began
            if code != 0:
                raise RuntimeError(f"exit code {code} after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        began = time.perf_counter()
        subprocess.run(
            [*command, "--version"], cwd=folder, env=env, check=True, capture_output=True
        )
        version = time.perf_counter() - began
    return ready, stopped, version


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):6.0f} ms  (min {ms[0]:.0f}, max {ms[-1]:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("programs", nargs="*", default=[os.path.join(ROOT, "dist", "imagestore")])
    args = parser.parse_args()
    for program in args.programs:
        program = os.path.abspath(program)
        command = [sys.executable, program] if program.endswith(".py") else [program]
        results = [one_start(command) for _ in range(args.runs)]
        print(f"{os.path.relpath(program, ROOT)}: {os.path.getsize(program) / 1e6:.1f} MB")
        print(f"  exec -> first HTTP 200  {summary([r[0] for r in results])}")
        print(f"  SIGTERM -> exit 0       {summary([r[1] for r in results])}")
        print(f"  --version               {summary([r[2] for r in results])}")


if __name__ == "__main__":
    main()
