"""What bench/run.py drives: the service, nginx, a private broker, and the clients
(curl, wrk, dd) whose figures it reads; RSS of a process tree; test files."""

import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import zlib
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from mqtt import Broker, free_port, wait_for_port  # noqa: E402,F401 (run.py uses Broker)

MIB = 1024 * 1024


# --- figures -----------------------------------------------------------------------


def summary(values: list[float]) -> dict:
    """Median and spread of repeated measurements."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    return {
        "median": median,
        "min": ordered[0],
        "max": ordered[-1],
        # (max - min) / median: how far apart the runs were.
        "spread": (ordered[-1] - ordered[0]) / median if median else 0.0,
        "runs": list(values),
    }


# --- the machine ---------------------------------------------------------------------


def _run_text(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(folder: str) -> dict:
    """nproc, CPU model, memory, kernel, and the disk and file system under ``folder``."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    source, fstype = (
        _run_text("findmnt", "-no", "SOURCE,FSTYPE", "-T", folder).split() + ["", ""]
    )[:2]
    disk = source
    device = os.path.basename(source)
    if device:
        model = _read(f"/sys/block/{device}/device/model")
        size = _run_text("lsblk", "-dno", "SIZE", source)
        driver = os.path.basename(os.path.realpath(f"/sys/block/{device}/device/driver"))
        if driver in ("", "driver", device):
            driver = ""
        disk = ", ".join(part for part in (source, driver, model, size) if part)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "disk": disk,
        "filesystem": fstype,
        "python": platform.python_version(),
        "nginx": _stderr("nginx", "-v").removeprefix("nginx version: "),
        "wrk": (_stderr("wrk", "--version").splitlines() or [""])[0].split(" Copyright")[0],
        "curl": (_run_text("curl", "--version").splitlines() or [""])[0].split(" (")[0],
    }


def git_commit() -> str:
    """The commit measured, with "+changes" when the work tree's code differs from it
    (documentation and the bench aside)."""
    commit = _run_text("git", "-C", ROOT, "rev-parse", "--short", "HEAD")
    if not commit:
        return ""
    status = _run_text("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no")
    changed = [
        line[3:]
        for line in status.splitlines()
        if not line[3:].endswith(".md") and not line[3:].startswith("bench/")
    ]
    return commit + ("+changes" if changed else "")


def shown(path: str) -> str:
    """A path as the table shows it: relative to the repository when inside it."""
    relative = os.path.relpath(path, ROOT)
    return path if relative.startswith("..") else relative


@contextlib.contextmanager
def quiet():
    """Send this process's stdout and stderr (and its children's) to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return ""


def _stderr(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return (done.stderr or done.stdout).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --- test files ----------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def write_png(path: str, size: int) -> None:
    """A valid 1x1 PNG of exactly ``size`` bytes: a private ancillary chunk ("bnCh")
    of incompressible bytes pads it. Written in 1 MiB blocks, never held whole."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", bytes.fromhex("0000000100000001080200000000"))
    tail = _chunk(b"IDAT", zlib.compress(b"\x00\x80\x40\x20")) + _chunk(b"IEND", b"")
    padding = size - len(head) - len(tail) - 12
    if padding < 0:
        raise ValueError(f"a PNG cannot be as small as {size} bytes")
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        out.write(head + padding.to_bytes(4, "big") + b"bnCh")
        crc = zlib.crc32(b"bnCh")
        left = padding
        while left:
            piece = block[: min(left, MIB)]
            out.write(piece)
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
        out.write(crc.to_bytes(4, "big") + tail)


# --- memory of a process tree --------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, and so on (worker processes, or the
    service under the one-file executable's bootloader)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            text = _read(f"/proc/{parent}/task/{task}/children")
            for child in text.split():
                found.append(int(child))
                todo.append(int(child))
    return found


def vm_rss(pid: int) -> int:
    """VmRSS of one process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """The summed VmRSS of ``pid`` and all its descendants, in bytes."""
    return sum(vm_rss(p) for p in [pid, *descendants(pid)])


class RssSampler:
    """``with RssSampler(pid) as sampler:`` samples the tree's RSS every ``interval``
    seconds in a thread; ``sampler.peak`` is the highest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


# --- processes -----------------------------------------------------------------------


def wait_for_http(port: int, path: str, proc: subprocess.Popen, log_path: str, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode}:\n{_read(log_path)[-3000:]}"
            )
        try:
            if request(port, "GET", path, timeout=2)[0] == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on :{port}{path} in {timeout:.0f} s")
        time.sleep(0.05)


class Service:
    """imagestore as a real process on a free loopback port, its output in a log."""

    def __init__(self, command: list[str], env: dict[str, str], folder: str) -> None:
        self.port = free_port()
        self.log_path = os.path.join(folder, f"imagestore-{self.port}.log")
        env = {**env, "IMAGESTORE_PORT": str(self.port), "IMAGESTORE_ADDRESS": "127.0.0.1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                env=env,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_http(self.port, "/healthz", self.proc, self.log_path)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, *names: str) -> str:
        return f"http://127.0.0.1:{self.port}{api_path(*names)}"

    def log(self) -> str:
        return _read(self.log_path)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


NGINX_CONF = """\
{user}worker_processes auto;
daemon off;
master_process on;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    # As many requests per connection as imagestore allows (nginx's default is 1000).
    keepalive_requests 1000000;
    types {{ image/png png; application/json json; }}
    default_type application/octet-stream;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class Nginx:
    """Debian's nginx serving ``root`` on a private loopback port: sendfile on, no
    access log, its worker count left to nginx (one per core)."""

    def __init__(self, root: str, folder: str) -> None:
        self.port = free_port()
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w") as out:
            out.write(
                NGINX_CONF.format(
                    # As root, workers would otherwise become "nobody" and could not read
                    # the private temporary folder.
                    user="user root;\n" if os.geteuid() == 0 else "",
                    folder=folder,
                    port=self.port,
                    root=root,
                )
            )
        self.log_path = os.path.join(folder, "error.log")
        with open(os.path.join(folder, "stdout.log"), "wb") as log:
            self.proc = subprocess.Popen(
                ["nginx", "-c", conf, "-p", folder, "-e", self.log_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.proc.returncode}: {_read(self.log_path)}")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{quote(name)}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- HTTP with the standard library (set-up, not measured) -----------------------------


def api_path(*names: str) -> str:
    return "/api/v1/albums" + "".join("/" + quote(name, safe="") for name in names)


def request(port, method, path, body=None, headers=None, timeout=60.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expect_ok(port, method, path, body=None, headers=None) -> bytes:
    status, answer = request(port, method, path, body, headers)
    if status != 200:
        raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
    return answer


def create_album(port: int, album: str) -> None:
    body = json.dumps({"albumName": album}).encode()
    expect_ok(port, "POST", api_path(), body, {"Content-Type": "application/json"})


def delete_album(port: int, album: str) -> None:
    expect_ok(port, "DELETE", api_path(album))


def delete_image(port: int, album: str, image: str) -> None:
    expect_ok(port, "DELETE", api_path(album, "images", image))


# --- the measuring clients -----------------------------------------------------------

_CURL_OUT = "%{http_code} %{time_total} %{size_upload} %{size_download}\\n"


def _curl(*args: str) -> tuple[int, float, int, int]:
    """One curl transfer: (status, seconds, bytes sent, bytes received) as curl itself
    timed it (from the start of the transfer to its last byte)."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w", _CURL_OUT, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: {done.stderr.strip()}")
    code, seconds, sent, received = done.stdout.split()
    return int(code), float(seconds), int(float(sent)), int(float(received))


def _checked(what: str, result: tuple[int, float, int, int]) -> float:
    if result[0] != 200:
        raise RuntimeError(f"{what}: HTTP {result[0]}")
    return result[1]


def curl_put(url: str, path: str) -> float:
    """Seconds for a raw PUT of the file (curl -T streams it)."""
    return _checked(f"PUT {url}", _curl("-T", path, url))


def curl_post_form(url: str, path: str, name: str) -> float:
    """Seconds for a multipart POST of the file in the field "file" (curl -F streams it)."""
    return _checked(f"POST {url}", _curl("-F", f"file=@{path};filename={name}", url))


def curl_get(url: str, size: int) -> float:
    """Seconds to download ``url`` to /dev/null; checks that ``size`` bytes came."""
    code, seconds, _, received = _curl(url)
    if code != 200 or received != size:
        raise RuntimeError(f"GET {url}: HTTP {code}, {received} of {size} bytes")
    return seconds


def curl_many(transfers: list[list[str]], parallel: int) -> tuple[float, list[int]]:
    """Run the transfers (each a list of curl options ending with its URL) from ONE curl
    process, ``parallel`` at a time, each on its own connection. Returns the wall time
    and every transfer's status."""
    config = []
    for i, options in enumerate(transfers):
        if i:
            config.append("next")
        config.append('output = "/dev/null"')
        config.append('header = "Expect:"')
        config.append('write-out = "%{http_code}\\n"')
        for option in options:
            config.append(option)
    began = time.perf_counter()
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            str(parallel),
            "-K",
            "-",
        ],
        input="\n".join(config) + "\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - began
    codes = [int(code) for code in done.stdout.split()]
    if done.returncode != 0 and not codes:
        raise RuntimeError(f"curl --parallel: {done.stderr.strip()[:500]}")
    return elapsed, codes


_DD_SECONDS = re.compile(r"copied, ([\d.]+) s")


def dd_write(path: str, mib: int) -> float:
    """Seconds for dd to write ``mib`` MiB into a new file and fdatasync it (dd's own
    figure: from its first write to the end of fdatasync)."""
    done = subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=600,
    )
    try:
        if done.returncode != 0:
            raise RuntimeError(f"dd: {done.stderr.strip()}")
        return float(_DD_SECONDS.search(done.stderr).group(1))
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, threads: int = 2, connections: int = 32, seconds: float = 5) -> dict:
    """wrk's requests/s and latency percentiles (ms) for GET ``url``."""
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = done.stdout
    match = _WRK_RPS.search(out)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"wrk {url}: {done.stderr.strip() or out.strip()}")
    latency = {f"p{p}_ms": float(v) * _TO_MS[unit] for p, v, unit in _WRK_LATENCY.findall(out)}
    non_2xx = _WRK_NON_2XX.search(out)
    socket_errors = _WRK_SOCKET_ERRORS.search(out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    )
    if errors:
        raise RuntimeError(f"wrk {url}: {errors} errors:\n{out}")
    return {"rps": float(match.group(1)), **latency}


def need(*commands: str) -> None:
    missing = [command for command in commands if shutil.which(command) is None]
    if missing:
        sys.exit(
            f"bench: missing {', '.join(missing)}; `make bench` installs them "
            "(Debian packages wrk, nginx, curl, mosquitto)"
        )
