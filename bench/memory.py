#!/usr/bin/env python3
"""Does imagestore give memory back after a burst of large transfers?

Runs imagestore (the one executable, or the source) on a free port with a private
mosquitto and a release interval of a few seconds, then reports its RSS, summed over
all its processes (the bootloader, the supervisor and the workers, with the default
IMAGESTORE_WORKERS; the largest single process in brackets):
  idle   after start-up, a small upload and download, and a release tick in every worker;
  peak   the highest RSS seen (sampled every 5 ms) during 16 concurrent 64 MiB
         uploads (multipart POST), then 16 concurrent 64 MiB downloads;
  after  once every worker has run its next release tick after the burst;
and how long the release ticks took (the time each holds its worker's IOLoop), from
the service's own log. Pass/fail: after <= 1.25 x idle.

Usage: bench/memory.py [--source] [--clients 16] [--mib 64] [--interval 5]
(default: dist/imagestore, built by `make`; --source runs imagestore.py instead)
"""

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from images import png  # noqa: E402
from mqtt import Broker  # noqa: E402
from process import clean_env, create_album, free_port, path_of, request  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = re.compile(r"memory release: RSS (\d+) -> (\d+) MiB in ([\d.]+) ms")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants: the one-file executable's bootloader runs the
    service as its child, which forks the workers."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                for child in listing.read().split():
                    found += tree(int(child))
    except FileNotFoundError:
        pass
    return found


def memory(pid: int) -> tuple[int, int]:
    """(RSS summed over the process tree, the largest RSS of one process in it)."""
    sizes = []
    for member in tree(pid):
        try:
            sizes.append(rss(member))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return sum(sizes), max(sizes)


class Sampler(threading.Thread):
    """Keeps the highest memory() of the service while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = (0, 0)
        self.running = True

    def run(self) -> None:
        while self.running:
            total, largest = memory(self.pid)
            self.peak = (max(self.peak[0], total), max(self.peak[1], largest))
            time.sleep(0.005)


def multipart(name: str, data: bytes) -> tuple[str, list]:
    boundary = "benchboundary7f3a9c"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    view = memoryview(data)
    chunks = [head] + [view[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)] + [tail]
    return f"multipart/form-data; boundary={boundary}", chunks


def upload(port: int, album: str, name: str, data: bytes) -> None:
    content_type, chunks = multipart(name, data)
    length = sum(len(chunk) for chunk in chunks)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(
            "POST",
            path_of(album, "images"),
            body=iter(chunks),
            headers={"Content-Type": content_type, "Content-Length": str(length)},
        )
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
    finally:
        conn.close()


def download(port: int, album: str, name: str, size: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path_of(album, "images", name))
        response = conn.getresponse()
        assert response.status == 200, response.status
        got = 0
        while chunk := response.read(1 << 20):
            got += len(chunk)
        assert got == size, (got, size)
    finally:
        conn.close()


def in_parallel(work, jobs: list[tuple]) -> float:
    errors = []

    def run(args: tuple) -> None:
        try:
            work(*args)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - began


def ticks_in(log_path: str) -> list[tuple[str, ...]]:
    with open(log_path, errors="replace") as log:
        return TICK.findall(log.read())


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def figures(label: str, values: tuple[int, int]) -> str:
    return f"RSS {label:<6}{mib(values[0]):>9}   (largest process {mib(values[1])})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="store_true", help="run imagestore.py, not dist/")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--interval", type=float, default=5.0, help="release interval, seconds")
    args = parser.parse_args()

    if args.source:
        command = [sys.executable, os.path.join(ROOT, "imagestore.py")]
    else:
        command = [os.path.join(ROOT, "dist", "imagestore")]
        if not os.path.exists(command[0]):
            sys.exit(f"{command[0]} is missing: run `make` first (or pass --source)")
    overhead = len(png(padding=1)) - 1
    data = png(padding=max(1, (args.mib << 20) - overhead))  # exactly --mib MiB
    size = len(data)
    with tempfile.TemporaryDirectory() as folder:
        broker = Broker(os.path.join(folder, "broker")).start()
        port = free_port()
        log_path = os.path.join(folder, "imagestore.log")
        env = clean_env(
            IMAGESTORE_PORT=str(port),
            IMAGESTORE_DATA=os.path.join(folder, "db"),
            IMAGESTORE_MQTT_PORT=str(broker.port),
            IMAGESTORE_MEMORY_RELEASE_SECONDS=str(args.interval),
            # DEBUG: every release tick is logged, however little it hands back.
            IMAGESTORE_LOG_LEVEL="DEBUG",
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if request(port, "GET", "/healthz", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"imagestore did not start:\n{open(log_path).read()}")
                time.sleep(0.05)
            processes = len(tree(proc.pid))

            # Idle: warmed up by one small transfer, then a tick in every worker
            # (each ticks once per interval: wait a little longer than one).
            create_album(port, "bench")
            small = png(padding=1 << 20)
            for _ in range(4):
                upload(port, "bench", "warm-up.png", small)
                download(port, "bench", "warm-up.png", len(small))
                request(port, "DELETE", path_of("bench", "images", "warm-up.png"))
            time.sleep(args.interval * 1.5)
            idle = memory(proc.pid)
            ticks_before = len(ticks_in(log_path))

            sampler = Sampler(proc.pid)
            sampler.start()
            names = [f"big-{i}.png" for i in range(args.clients)]
            up = in_parallel(upload, [(port, "bench", name, data) for name in names])
            down = in_parallel(download, [(port, "bench", name, size) for name in names])
            sampler.running = False
            sampler.join()
            end_of_burst = memory(proc.pid)
            burst_ticks = len(ticks_in(log_path)) - ticks_before

            time.sleep(args.interval * 1.5)
            after = memory(proc.pid)
            ticks = ticks_in(log_path)
        finally:
            proc.terminate()
            code = proc.wait(30)
            broker.stop()

    moved = args.clients * size
    print(f"imagestore: {' '.join(os.path.relpath(c, ROOT) for c in command[-1:])}")
    print(
        f"burst: {args.clients} x {args.mib} MiB uploads in {up:.1f} s "
        f"({moved / up / 2**20:.0f} MiB/s), then downloads in {down:.1f} s "
        f"({moved / down / 2**20:.0f} MiB/s)"
    )
    print(f"{processes} processes (bootloader, supervisor, workers)")
    print(figures("idle", idle))
    print(figures("peak", sampler.peak))
    print(figures("end", end_of_burst) + "   <- when the burst ended")
    print(figures("after", after))
    durations = sorted(float(t[2]) for t in ticks)
    after_burst = ticks[ticks_before + burst_ticks :]
    print(
        f"release ticks: {len(ticks)}, each {durations[0]:.1f} to {durations[-1]:.1f} ms "
        f"(median {durations[len(durations) // 2]:.1f}); the first after the burst: "
        + ", ".join(f"{t[0]} -> {t[1]} MiB in {t[2]} ms" for t in after_burst[:4])
    )
    ratio = after[0] / idle[0]
    verdict = "PASS" if ratio <= 1.25 else "FAIL"
    print(f"after / idle = {ratio:.2f} ({verdict}: must be <= 1.25); exit code {code}")
    return 0 if verdict == "PASS" and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
