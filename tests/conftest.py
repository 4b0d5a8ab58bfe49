"""Fixtures: a real imagestore listening on a free port, over a real data folder."""

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPResponse
from tornado.httpserver import HTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from process import SERVICE, SERVICE_LOGS, Proc, clean_env  # noqa: E402

# The backend fixtures (each adapter pair in turn): tests/backends.py.
pytest_plugins = ["backends"]

from handlers import make_app  # noqa: E402
from handlers.limits import UploadLimits  # noqa: E402
from store import open_store  # noqa: E402


class _TracebackCatcher(logging.Handler):
    """Keeps every log record of the in-process service that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.caught: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info or "Traceback" in text:
            self.caught.append(text)


# How far each service log has been read: a traceback is blamed on the test during
# which it appeared, and only once (module-wide services outlive their first test).
_LOG_READ: dict[Path, int] = {}


def _new_tracebacks(logs: set[Path]) -> list[str]:
    found = []
    for log_file in sorted(logs):
        try:
            with open(log_file, "rb") as log:
                log.seek(_LOG_READ.get(log_file, 0))
                new = log.read()
        except FileNotFoundError:
            continue
        _LOG_READ[log_file] = _LOG_READ.get(log_file, 0) + len(new)
        text = new.decode(errors="replace")
        if "Traceback" in text:
            start = max(0, text.index("Traceback") - 200)
            found.append(f"{log_file}:\n{text[start:][:3000]}")
    return found


@pytest.fixture(autouse=True)
def no_traceback_in_the_service_log(request):
    """No test may leave a traceback in the service's log: neither the in-process
    service's (pytest-tornado) nor any subprocess's (its *.log under tmp_path, or
    any log of tests/process.py's Proc).
    Nothing a client sends may produce one; the rare test whose point is a crash
    says so with @pytest.mark.allow_traceback("why")."""
    catcher = _TracebackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    yield
    root.removeHandler(catcher)
    logs = set(SERVICE_LOGS)
    # funcargs is None for some items (doctests, and tests whose set-up failed).
    tmp_path = (request.node.funcargs or {}).get("tmp_path")  # torn down, still on disk
    if tmp_path is not None:
        logs.update(tmp_path.rglob("*.log"))  # test_crash.py's own runner writes there too
    found = catcher.caught + _new_tracebacks(logs)
    if found and not request.node.get_closest_marker("allow_traceback"):
        pytest.fail("a traceback in the service log:\n" + "\n---\n".join(found), pytrace=False)


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "image-db"


@pytest.fixture
def max_upload_bytes():
    return 1 << 30


@pytest.fixture
def store(backend, max_upload_bytes):
    """The store over each backend pair in turn: the HTTP suite runs on every one."""
    image_store = open_store(backend.backends, max_upload_bytes)
    yield image_store
    image_store.close()


@pytest.fixture
def upload_limits():
    """Tests start many uploads at once; the back-pressure tests set their own limit."""
    return UploadLimits(max_concurrent_uploads=256)


@pytest.fixture
def http_server(request, io_loop, _unused_port, app):
    """pytest-tornado's server, given the app statically rather than looked up by name:
    so the app's backend (a fixture parameter) is known when tests are collected."""
    server = HTTPServer(app)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=request.config.option.async_test_timeout)


@pytest.fixture
def app(store, upload_limits):
    return make_app(store, limits=upload_limits)


def multipart_body(
    filename: str,
    data: bytes,
    field: str = "file",
    boundary: str | None = None,
    extra_fields: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/form-data request carrying one file."""
    boundary = boundary or uuid.uuid4().hex
    parts = []
    for name, value in (extra_fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    escaped = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{escaped}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


class Api:
    """A thin client of the live service: every call returns the real response."""

    def __init__(self, http_client, base_url: str) -> None:
        self.http = http_client
        self.base = base_url + "/api/v1"

    @staticmethod
    def path(*names: str) -> str:
        return "/".join(quote(name, safe="") for name in names)

    async def request(
        self, method: str, path: str, body=None, headers=None, **kwargs
    ) -> HTTPResponse:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        return await self.http.fetch(
            self.base + path,
            method=method,
            body=body,
            headers=headers,
            raise_error=False,
            allow_nonstandard_methods=True,
            request_timeout=120,
            **kwargs,
        )

    async def create_album(self, album: str) -> HTTPResponse:
        return await self.request("POST", "/albums", {"albumName": album})

    async def upload(self, album: str, filename: str, data: bytes, **kwargs) -> HTTPResponse:
        content_type, body = multipart_body(filename, data, **kwargs)
        return await self.request(
            "POST",
            f"/albums/{self.path(album)}/images",
            body,
            headers={"Content-Type": content_type},
        )

    async def put_image(self, album: str, image: str, data: bytes, headers=None) -> HTTPResponse:
        return await self.request(
            "PUT", f"/albums/{self.path(album, 'images', image)}", data, headers=headers
        )

    async def download(self, album: str, image: str, headers=None, method="GET") -> HTTPResponse:
        return await self.request(
            method, f"/albums/{self.path(album, 'images', image)}", headers=headers
        )

    async def list_images(self, album: str) -> HTTPResponse:
        return await self.request("GET", f"/albums/{self.path(album)}/images")


def body_json(response: HTTPResponse):
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return json.loads(response.body)


@pytest.fixture
def api(http_client, base_url):
    return Api(http_client, base_url)


def blob_files(data_dir) -> list[str]:
    """The published blobs of the data folder's file blob store, relative to it
    (its unfinished uploads and its lock aside)."""
    return [
        name
        for name in files_under(data_dir / "blobs")
        if name != "lock" and not name.startswith("tmp/")
    ]


def files_under(folder) -> list[str]:
    """Every file below ``folder``, relative, sorted."""
    found = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            found.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return sorted(found)


@pytest.fixture
def run(tmp_path):
    """run(*args, env={...}, cwd=...) starts imagestore; every process is SIGKILLed
    at teardown if it is still running."""
    procs: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd=None) -> Proc:
        log_path = tmp_path / f"imagestore-{len(procs) + 1}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, SERVICE, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(**(env or {})),
                cwd=cwd or tmp_path,
            )
        proc = Proc(popen, log_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=10)
