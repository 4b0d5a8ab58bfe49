"""bench/run.py --profile: where the service spends its time, by py-spy.

Runs the service from source (the same settings as the benchmark) and records it with
`py-spy record` (sampling, from outside: the service is not changed) during:
  albums     wrk -t2 -c32 on GET /api/v1/albums (20 albums)
  put-512    3 raw PUTs of a 512 MiB image (curl -T)
  post-512   3 multipart POSTs of it (curl -F)
  get-512    10 downloads of it (curl -o /dev/null)
For each it keeps py-spy's collapsed stacks (bench/results/profile/<phase>.txt, for
flame graph tools) and prints the functions with the most samples: "self" where the
sample was taken, "total" anywhere on the stack. Idle threads are not sampled, so the
share of wall time with a working sample (not a [wait]) says how busy each thread was.
"""

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import tools
from tools import Broker, Service

RATE = 250  # samples per second


def py_spy() -> str:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(found):
        sys.exit("bench: py-spy is missing; `make bench` installs it (requirements-bench.txt)")
    return found


class Recording:
    """py-spy record on ``pid`` (and its children) from __enter__ to __exit__."""

    def __init__(self, pid: int, out: str) -> None:
        self.out = out
        self.command = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--threads",
            "--output",
            out,
        ]

    def __enter__(self) -> "Recording":
        self.log = open(self.out + ".log", "wb")
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # py-spy attaches
        self.began = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self.began
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        self.proc.wait(60)
        self.log.close()


# The frames every sample of the IOLoop thread has: not worth a line in "total".
OUTER = {
    "<module>",
    "main",
    "run",
    "Runner.run",
    "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop._run_once",
    "Handle._run",
    "Thread._bootstrap",
    "Thread._bootstrap_inner",
    "Thread.run",
    "supervise",
    "supervise.<locals>.spawn",
}
# Lines where a thread waits in C (py-spy cannot always tell): not work, marked [wait].
# Under uvloop, Runner.run's own samples are uvloop's native loop: mostly epoll_wait.
WAITS = {
    ("_worker", "concurrent/futures/thread.py"): "an executor thread waiting for work",
    ("Client._loop", "paho/mqtt/client.py"): "paho's thread in select()",
    ("EpollSelector.select", "selectors.py"): "the event loop in epoll_wait",
    ("Runner.run", "asyncio/runners.py"): "uvloop's native loop (epoll_wait, C callbacks)",
}


def waiting(function: str) -> str | None:
    """Why ``function`` ('name (path:line)') is a wait, or None when it is work."""
    name, _, where = function.partition(" (")
    return WAITS.get((name, where.rsplit(":", 1)[0]))


def frame_name(frame: str, line: bool = False) -> str:
    """'write (/x/store/store.py:344)' -> 'write (store/store.py)', or with ``line``
    'write (store/store.py:344)': the line shows which call a C function was in."""
    name, _, where = frame.partition(" (")
    path, _, number = where.rstrip(")").rpartition(":")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1]
            break
    else:
        path = os.path.relpath(path, tools.ROOT) if path.startswith("/") else path
    return f"{name} ({path}:{number})" if line else f"{name} ({path})"


def hot_spots(raw_path: str, top: int = 12) -> tuple[int, list, list, dict]:
    """(samples, [(self count, function)], [(total count, function)], {thread: samples})."""
    own: collections.Counter = collections.Counter()
    anywhere: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    samples = 0
    with open(raw_path, errors="replace") as raw:
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue  # a stack py-spy could not read whole
            count = int(count)
            frames = stack.split(";")
            # With --threads and --subprocesses, leading frames name the process/thread.
            thread = ""
            while frames and (frames[0].startswith("process ") or frames[0].startswith("thread ")):
                if frames[0].startswith("thread "):
                    thread = frames[0]
                frames = frames[1:]
            if not frames:
                continue
            samples += count
            leaf = frame_name(frames[-1], line=True)
            own[leaf] += count
            if waiting(leaf):
                continue
            threads[thread] += count
            for name in {frame_name(frame) for frame in frames}:
                if name.split(" (")[0] not in OUTER:
                    anywhere[name] += count
    return samples, own.most_common(top), anywhere.most_common(top), dict(threads)


def print_profile(phase: str, recording: Recording, raw_path: str) -> None:
    samples, own, anywhere, threads = hot_spots(raw_path)
    wall = recording.seconds * RATE
    print(f"\n== {phase}: {samples} samples in {recording.seconds:.1f} s ({raw_path})")
    busiest = sorted(threads.items(), key=lambda item: -item[1])[:4]
    print(
        "   share of wall time working (not [wait]), by thread: "
        + ", ".join(f"{name.split(' ')[1]} {count / wall:.0%}" for name, count in busiest)
    )
    print("   self (the line running when sampled; C calls count in the line calling them):")
    for count, name in ((c, n) for n, c in own):
        why = waiting(name)
        print(f"     {count / samples:6.1%}  {name}" + (f"  [wait: {why}]" if why else ""))
    print("   total (anywhere on the stack; the event loop's own frames and waits left out):")
    for count, name in ((c, n) for n, c in anywhere):
        print(f"     {count / samples:6.1%}  {name}")


def main(args) -> int:
    out = os.path.join(args.out, "profile")
    os.makedirs(out, exist_ok=True)
    py_spy()
    with tempfile.TemporaryDirectory(prefix="imagestore-profile-", dir=args.workdir) as work:
        import run

        files = run.make_files(work)
        broker = Broker(os.path.join(work, "broker")).start()
        service = Service(
            [sys.executable, run.SOURCE],
            run.service_env(os.path.join(work, "data"), broker, args.env),
            work,
        )
        try:
            for album in run.album_names():
                tools.create_album(service.port, album)
            album = run.album_names()[0]
            path = files["512MiB"]
            size = os.path.getsize(path)
            tools.wrk(service.url(), seconds=1)

            raw = os.path.join(out, "albums.txt")
            with Recording(service.pid, raw) as recording:
                result = tools.wrk(service.url(), seconds=args.wrk_seconds or 5)
            print(f"GET /albums under py-spy: {result['rps']:.0f} req/s (slowed by sampling)")
            print_profile("GET /albums, wrk -t2 -c32", recording, raw)

            url = service.url(album, "images")
            phases = [
                # (file, what, how many times, one transfer -> seconds)
                ("put-512", "raw PUT of 512 MiB", 3, lambda i: tools.curl_put(f"{url}/p{i}", path)),
                (
                    "post-512",
                    "multipart POST of 512 MiB",
                    3,
                    lambda i: tools.curl_post_form(url, path, f"m{i}"),
                ),
                ("get-512", "download of 512 MiB", 10, lambda i: tools.curl_get(f"{url}/p0", size)),
            ]
            for name, what, times, transfer in phases:
                raw = os.path.join(out, name + ".txt")
                with Recording(service.pid, raw) as recording:
                    seconds = [transfer(i) for i in range(times)]
                rates = ", ".join(f"{size / s / 1e6:.0f}" for s in seconds)
                print(f"\n{times} x {what} under py-spy: {rates} MB/s")
                print_profile(f"{times} x {what}", recording, raw)
        finally:
            service.stop()
            broker.stop()
    print(f"\ncollapsed stacks (flame graph input) in {os.path.relpath(out, tools.ROOT)}/")
    return 0
