"""imagestore as a real subprocess, and HTTP with the standard library only."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = os.path.join(ROOT, "imagestore.py")


# --- the service as a subprocess ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**settings: str) -> dict[str, str]:
    """The test's environment without the service's settings, plus ``settings``.
    MQTT points at a loopback port where no broker listens: nothing reaches anybody's
    real broker."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IMAGESTORE_") and name not in ("HOSTIP", "PRODMODE", "COLUMNS")
    }
    env.update(IMAGESTORE_MQTT_HOST="127.0.0.1", IMAGESTORE_MQTT_PORT=str(free_port()))
    env.update(settings)
    return env


# The log of every service process started, module-wide ones included: conftest
# fails the test during which one of them shows a traceback.
SERVICE_LOGS: list[Path] = []


class Proc:
    """One imagestore process, its output (stdout and stderr) in a file."""

    def __init__(self, popen: subprocess.Popen, log_path) -> None:
        self.popen = popen
        self.log_path = log_path
        SERVICE_LOGS.append(Path(log_path))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.popen.poll() is not None:
                return text in self.log()
            time.sleep(0.02)
        return False

    def wait_ready(
        self, port: int, timeout: float = 20.0, port_taken_ok: bool = False, check_log: bool = True
    ) -> bool:
        """True once this process answers GET /albums with 200 on ``port`` (and, with
        ``check_log``, its own start-up line names that port: the 200 is its own);
        False if it could not listen there, the port being taken (``port_taken_ok``)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                if port_taken_ok and "cannot listen" in self.log():
                    return False
                raise AssertionError(
                    f"imagestore exited with {self.popen.returncode} before answering:\n{self.log()}"
                )
            try:
                if (not check_log or f":{port}/api/v1" in self.log()) and request(
                    port, "GET", "/api/v1/albums", timeout=2
                )[0] == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"imagestore did not answer on :{port} in {timeout}s:\n{self.log()}"
                )
            time.sleep(0.05)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"imagestore still running after {timeout}s:\n{self.log()}"
            ) from None


class Service:
    """One data folder, served by successive processes (a fresh port each start), for
    tests that kill the service and start it again."""

    def __init__(self, data, log_dir, *args: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.log_dir = log_dir
        self.args = args
        self.env = env or {}
        self.proc: Proc | None = None
        self.port = 0
        self.starts = 0

    def start(self, attempts: int = 3) -> None:
        """Start and wait until it answers; on another free port should some other
        process on this machine have taken the chosen one in the meantime."""
        assert self.proc is None or self.proc.popen.poll() is not None, "already running"
        for attempt in range(attempts):
            self.starts += 1
            self.port = free_port()
            log_path = self.log_dir / f"service-{self.starts}.log"
            with open(log_path, "wb") as log:
                popen = subprocess.Popen(
                    [sys.executable, SERVICE, "--port", str(self.port), "--data", str(self.data)]
                    + list(self.args),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=clean_env(**self.env),
                )
            self.proc = Proc(popen, log_path)
            if self.proc.wait_ready(self.port, port_taken_ok=attempt + 1 < attempts):
                return

    def kill(self) -> None:
        """SIGKILL: no handler, no clean-up, the closest thing to a power cut for a process."""
        if self.proc is not None and self.proc.popen.poll() is None:
            self.proc.popen.kill()
            self.proc.popen.wait(timeout=10)

    def log(self) -> str:
        return self.proc.log() if self.proc else ""


def serve(run, make, cwd=None, attempts: int = 3) -> tuple[Proc, int]:
    """Start imagestore as ``make(port)`` says (-> (args, env)) on a free port, and
    wait until it answers; again on another port should some other process on this
    machine have taken that one in the meantime."""
    for attempt in range(attempts):
        port = free_port()
        args, env = make(port)
        proc = run(*args, env=env, cwd=cwd)
        if proc.wait_ready(port, port_taken_ok=attempt + 1 < attempts):
            return proc, port
    raise AssertionError("unreachable")


def serve_data(run, data, *more: str) -> tuple[Proc, int]:
    """imagestore on a free port (flag) over ``data``."""
    return serve(run, lambda port: (("--port", str(port), "--data", str(data), *more), {}))


def run_to_end(*args: str, env: dict[str, str] | None = None, cwd=None, timeout: float = 15.0):
    """Run imagestore to its exit (for --help, --version, bad settings)."""
    return subprocess.run(
        [sys.executable, SERVICE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        cwd=cwd,
        timeout=timeout,
    )


# --- HTTP with the standard library ------------------------------------------------


def path_of(*names: str) -> str:
    return "/api/v1/albums" + "".join("/" + quote(name, safe="") for name in names)


def request(
    port, method, path, body=None, headers=None, timeout=30.0, chunk=0, pause=0.0, on_progress=None
):
    """One request on a fresh connection: (status, lower-cased headers, body).

    ``chunk``/``pause`` send the body in pieces with a sleep between them (so that an
    upload takes long enough for a kill to land in the middle of it); ``on_progress``
    is told (sent, total) after each piece."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            view = memoryview(body)
            step = chunk or len(body)
            for start in range(0, len(body), step):
                conn.send(view[start : start + step])
                if on_progress:
                    on_progress(min(start + step, len(body)), len(body))
                if pause:
                    time.sleep(pause)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def json_request(port, method, path, payload):
    return request(
        port, method, path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )


def create_album(port, album: str) -> None:
    status, _, body = json_request(port, "POST", path_of(), {"albumName": album})
    assert status == 200, body
