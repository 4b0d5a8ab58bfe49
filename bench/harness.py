"""What the benchmarks drive: the service, nginx, the clients (keep-alive http.client
connections, wrk, dd), and the CPU time and RSS of a process tree. The service's
process, the broker and the set-up requests are the tests' (tests/process.py, mqtt.py)."""

import collections
import contextlib
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from images import png  # noqa: E402
from mqtt import Broker, wait_for_port  # noqa: E402,F401 (for the scripts)
from process import Proc, clean_env, create_album, free_port, path_of, request  # noqa: E402,F401

MIB = 1024 * 1024


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1]}


def at_once(count: int, work) -> float:
    """Seconds from the moment ``count`` threads start ``work(i)`` together to the last's end."""
    start = threading.Barrier(count + 1)
    threads = [threading.Thread(target=lambda i=i: (start.wait(), work(i))) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_measured() -> str:
    """HEAD, with "+changes" when the code (documentation and bench/ aside) differs."""
    status = git("status", "--porcelain", "--untracked-files=no").splitlines()
    changed = [line for line in status if not line.endswith(".md") and " bench/" not in line]
    return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")


@contextlib.contextmanager
def worktree(ref: str):
    """``ref`` checked out in a temporary git worktree: (its short commit, the folder)."""
    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    folder = tempfile.mkdtemp(prefix="imagestore-compare-")
    path = os.path.join(folder, commit)
    git("worktree", "add", "--detach", "--quiet", path, commit)
    try:
        yield commit, path
    finally:
        git("worktree", "remove", "--force", path)
        shutil.rmtree(folder, ignore_errors=True)


# --- a process tree: its members, CPU time and RSS -------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers; the executable's bootloader's child)."""
    found = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                for child in children.read().split():
                    found += tree(int(child))
    return found


def _sum(pid: int, read) -> float:
    total = 0.0
    for member in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += read(member)
    return total


def tree_cpu(pid: int) -> float:
    """Seconds of CPU, user + system, the tree's processes (all their threads) used."""

    def cpu(member: int) -> float:
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    return _sum(pid, cpu) / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> float:
    """The tree's summed RSS, in MiB."""
    page = os.sysconf("SC_PAGE_SIZE")
    return _sum(pid, lambda m: int(Path(f"/proc/{m}/statm").read_text().split()[1]) * page) / MIB


@contextlib.contextmanager
def rss_peak(pid: int):
    """``with rss_peak(pid) as peak:`` samples tree_rss every 50 ms; then ``peak[0]``."""
    peak, stop = [tree_rss(pid)], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], tree_rss(pid))

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


# --- the servers ------------------------------------------------------------------------


class Service:
    """imagestore (``command``: the source or an executable) on a free loopback port,
    its output in ``data``.log."""

    def __init__(self, command: list[str], data: str, env: dict[str, str], cwd: str) -> None:
        self.command = command
        for _ in range(3):  # another port should someone take this one meanwhile
            self.port = free_port()
            with open(data + ".log", "ab") as log:
                popen = subprocess.Popen(
                    [*command, "--port", str(self.port), "--address", "127.0.0.1", "--data", data],
                    **dict(env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log),
                )
            self.proc = Proc(popen, Path(data + ".log"))
            # At log level WARNING no start-up line names the port: check_log=False.
            if self.proc.wait_ready(self.port, port_taken_ok=True, check_log=False):
                self.pid = popen.pid
                return
        raise RuntimeError(f"imagestore could not listen:\n{self.proc.log()}")

    def ok(self, method: str, path: str, body: bytes | None = None) -> bytes:
        status, _, answer = request(self.port, method, path, body, timeout=120)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")
        return answer

    def stop(self) -> None:
        self.proc.popen.terminate()
        try:
            self.proc.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.popen.kill()
            self.proc.popen.wait()


NGINX_CONF = """\
{user}worker_processes auto;
daemon off;
pid {folder}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
    types {{ image/png png; application/json json; }}
    # A PUT's body goes to a temporary file, renamed into place: the same file system.
    client_body_temp_path {folder}/body; client_max_body_size 0; client_body_buffer_size 1m;
    proxy_temp_path t; fastcgi_temp_path t; uwsgi_temp_path t; scgi_temp_path t;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /put/ {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
"""


class Nginx:
    """Debian's nginx on a private port, its config and prefix in ``folder``: serves
    ``root`` (sendfile, no access log, a worker per core); PUT stores under /put/."""

    def __init__(self, root: str, folder: str) -> None:
        os.makedirs(folder)
        self.port = free_port()
        conf = os.path.join(folder, "nginx.conf")
        # As root, the workers would become "nobody", locked out of the private folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        Path(conf).write_text(
            NGINX_CONF.format(user=user, folder=folder, port=self.port, root=root)
        )
        command = ["nginx", "-c", conf, "-p", folder, "-e", os.path.join(folder, "error.log")]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_for_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the clients ------------------------------------------------------------------------


class Client:
    """One client: one keep-alive HTTP/1.1 connection. A body is a list of parts, each
    bytes (sent as they are) or a Path (sent with sendfile, from the page cache)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.conn.connect()
        self.buffer = memoryview(bytearray(MIB))

    def send(self, method: str, path: str, parts=(), headers=None) -> tuple[int, int, float]:
        """(status, bytes of the answer's body, seconds from the first byte sent to the
        last received)."""
        began, conn = time.perf_counter(), self.conn
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if parts:
            size = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in parts)
            conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for part in parts:
            if isinstance(part, Path):
                with open(part, "rb") as file:
                    conn.sock.sendfile(file)
            else:
                conn.sock.sendall(part)
        response, received = conn.getresponse(), 0
        while count := response.readinto(self.buffer):
            received += count
        return response.status, received, time.perf_counter() - began

    def upload(self, kind: str, path: str, data) -> tuple[int, int, float]:
        """A PUT of ``data`` (bytes or a Path) to ``path``, or a multipart POST (any other
        ``kind``) to the album of ``path``, the image named as ``path`` ends."""
        if kind == "PUT":
            return self.send("PUT", path, [data])
        album, name = path.rsplit("/", 1)
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        parts = [head, data, f"\r\n--{BOUNDARY}--\r\n".encode()]
        return self.send("POST", album, parts, {"Content-Type": f"{FORM}; boundary={BOUNDARY}"})

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()


FORM, BOUNDARY = "multipart/form-data", "bench7f3a9c0e"


def write_png(path: str, size: int) -> None:
    """A valid PNG of exactly ``size`` bytes (the tests' images.png, padded)."""
    Path(path).write_bytes(png(padding=size - len(png(padding=1)) + 1))


def dd(path: str, mib: int) -> float:
    """dd's own seconds to write ``mib`` MiB of zeros to a new file and fdatasync it."""
    command = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"]
    env = {**os.environ, "LC_ALL": "C"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    os.unlink(path)
    return float(re.search(r"copied, ([\d.]+) s", done.stderr).group(1))


def wrk(
    url: str, seconds: float, connections: int = 32, script: str | None = None
) -> tuple[float, float]:
    """(requests/s, p99 in ms) of ``wrk -t2 -c32 --latency`` (``script``: a Lua file
    that makes the requests); any error raises."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# Where an idle thread waits, in C (py-spy cannot always tell): not counted as work.
WAITS = ("_worker (concurrent/futures", "Runner.run (asyncio", "Client._loop (paho", "select (")


@contextlib.contextmanager
def profile(pid: int, out: str):
    """py-spy samples the tree meanwhile (collapsed stacks in ``out``), without stopping
    it; then prints the lines where the most working samples were taken."""
    spy = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--nonblocking"]
    proc = subprocess.Popen([*spy, "-p", str(pid), "-s", "-f", "raw", "-o", out])
    time.sleep(1)  # py-spy attaches
    yield
    proc.send_signal(2)  # SIGINT: py-spy writes its output
    proc.wait(60)
    lines: collections.Counter = collections.Counter()
    for line in Path(out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1].replace(ROOT + "/", "")
        lines[re.sub(r"/\S*/(site-packages|python3[.0-9]*)/", "", leaf)] += int(count)
    work = {leaf: n for leaf, n in lines.items() if not leaf.startswith(WAITS)}
    total = sum(work.values()) or 1
    print(f"    py-spy: {total} working samples (of {sum(lines.values())}) in {out}; the top:")
    for leaf, count in collections.Counter(work).most_common(15):
        print(f"    {count / total:6.1%}  {leaf}")
