"""The process an operator runs: its settings (flags over environment over defaults),
its start-up, its refusal to share a data folder, and its graceful shutdown on
SIGTERM and SIGINT. The service runs as a subprocess; HTTP is spoken with the
standard library only.
"""

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import time

import pytest
from conftest import blob_files, multipart_body
from images import png
from process import (
    create_album,
    free_port,
    path_of,
    request,
    run_to_end,
    serve,
    serve_data,
)

FLAGS = [
    "--port",
    "--address",
    "--data",
    "--max-upload-bytes",
    "--host-ip",
    "--shutdown-grace-seconds",
    "--log-level",
]
ENV_NAMES = [
    "IMAGESTORE_PORT",
    "IMAGESTORE_ADDRESS",
    "IMAGESTORE_DATA",
    "IMAGESTORE_MAX_UPLOAD_BYTES",
    "HOSTIP",
]


def refuses_connections(port: int, timeout: float = 5.0) -> bool:
    """True once a new TCP connection to ``port`` is refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def png_of_size(size: int) -> bytes:
    """A valid PNG of exactly ``size`` bytes."""
    base = len(png(padding=1)) - 1
    data = png(padding=size - base)
    assert len(data) == size
    return data


def wait_for_partial_file(data_dir, timeout: float = 10.0) -> None:
    """Wait until the service has started writing an upload under tmp/."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir(data_dir / "blobs" / "tmp"):
            if entry.stat().st_size > 0:
                return
        time.sleep(0.01)
    raise AssertionError("the upload never reached tmp/")


def start_slow_put(port, album: str, image: str, data: bytes, sent: int) -> socket.socket:
    """Headers and the first ``sent`` bytes of a PUT; the rest is the caller's to send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(
        f"PUT {path_of(album, 'images', image)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data[:sent]
    )
    return sock


# --- command line ------------------------------------------------------------------


def test_help_lists_every_setting_and_touches_nothing(tmp_path):
    result = run_to_end("--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for name in FLAGS + ENV_NAMES + ["--version"]:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (
            f"{name} not in --help:\n{text}"
        )
    assert os.listdir(tmp_path) == [], "--help created files"


def test_version_prints_the_version(tmp_path):
    from settings import VERSION

    result = run_to_end("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imagestore {VERSION}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert os.listdir(tmp_path) == []


# --- configuration -----------------------------------------------------------------


def test_environment_configures_port_data_and_upload_limit(run, tmp_path):
    data = tmp_path / "env-data"
    proc, port = serve(
        run,
        lambda port: (
            (),
            {
                "IMAGESTORE_PORT": str(port),
                "IMAGESTORE_DATA": str(data),
                "IMAGESTORE_MAX_UPLOAD_BYTES": "1KiB",
            },
        ),
    )
    assert (data / "catalog.sqlite3").is_file()
    assert f"serving http://127.0.0.1:{port}/api/v1" in proc.log()
    assert "uploads up to 1024 bytes" in proc.log()
    create_album(port, "pets")

    # 2 KiB is over the 1 KiB limit, whether declared (PUT) or counted (multipart POST)
    status, headers, body = request(
        port, "PUT", path_of("pets", "images", "big.png"), png_of_size(2048)
    )
    assert status == 413, body
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "the image is larger than the limit of 1024 bytes"}
    content_type, form = multipart_body("big2.png", png_of_size(2048))
    status, _, body = request(
        port, "POST", path_of("pets", "images"), form, {"Content-Type": content_type}
    )
    assert status == 413, body

    # exactly at the limit is fine, one byte more is not
    status, _, body = request(port, "PUT", path_of("pets", "images", "edge.png"), png_of_size(1024))
    assert status == 200, body
    status, _, body = request(port, "PUT", path_of("pets", "images", "over.png"), png_of_size(1025))
    assert status == 413, body
    status, _, body = request(port, "GET", path_of("pets", "images"))
    assert json.loads(body) == {"imageList": ["edge.png"]}
    assert os.listdir(data / "blobs" / "tmp") == []


def test_flags_win_over_environment(run, tmp_path):
    env_port = free_port()
    env_data, flag_data = tmp_path / "env-data", tmp_path / "flag-data"
    proc, flag_port = serve(
        run,
        lambda port: (
            (
                "--port",
                str(port),
                "--data",
                str(flag_data),
                "--max-upload-bytes",
                "1MiB",
                "--host-ip",
                "203.0.113.9",
            ),
            {
                "IMAGESTORE_PORT": str(env_port),
                "IMAGESTORE_DATA": str(env_data),
                "IMAGESTORE_MAX_UPLOAD_BYTES": "1KiB",
                "HOSTIP": "198.51.100.1",
            },
        ),
    )
    assert (flag_data / "catalog.sqlite3").is_file()
    assert not env_data.exists()
    log = proc.log()
    assert f":{env_port}/" not in log, log
    assert f"serving http://203.0.113.9:{flag_port}/api/v1" in log, log
    assert "uploads up to 1048576 bytes" in log, log
    create_album(flag_port, "pets")
    status, _, body = request(
        flag_port, "PUT", path_of("pets", "images", "two-kib.png"), png_of_size(2048)
    )
    assert status == 200, body


def test_without_data_setting_it_creates_image_db_in_the_working_folder(run, tmp_path):
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    proc, port = serve(run, lambda port: (("--port", str(port)), {}), cwd=cwd)
    assert sorted(os.listdir(cwd)) == ["image-db"]
    assert (cwd / "image-db" / "catalog.sqlite3").is_file()
    assert f"data in {cwd / 'image-db'}" in proc.log()
    create_album(port, "pets")
    status, _, body = request(port, "PUT", path_of("pets", "images", "a.png"), png())
    assert status == 200, body
    assert len(blob_files(cwd / "image-db")) == 1


def test_hostip_is_advertised_in_the_start_up_line(run, tmp_path):
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db")),
            {"HOSTIP": "192.0.2.44"},
        ),
    )
    lines = [line for line in proc.log().splitlines() if "serving" in line]
    assert len(lines) == 1, proc.log()
    assert f"serving http://192.0.2.44:{port}/api/v1" in lines[0]


def test_address_setting_binds_only_that_address(run, tmp_path):
    proc, port = serve(
        run,
        lambda port: (
            ("--data", str(tmp_path / "db")),
            {"IMAGESTORE_PORT": str(port), "IMAGESTORE_ADDRESS": "127.0.0.1"},
        ),
    )
    assert f"serving http://127.0.0.1:{port}/api/v1" in proc.log()
    if socket.has_ipv6:
        with pytest.raises(OSError):  # refused, or no IPv6 here at all: not served
            socket.create_connection(("::1", port), timeout=2).close()


def test_log_level_setting_is_honoured(run, tmp_path):
    port = free_port()
    proc = run("--port", str(port), "--data", str(tmp_path / "db"), "--log-level", "warning")
    proc.wait_ready(port, check_log=False)  # the start-up line is INFO: not shown
    create_album(port, "pets")
    assert request(port, "GET", path_of("nope", "images"))[0] == 404
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    assert " INFO " not in proc.log(), proc.log()


@pytest.mark.parametrize(
    ("args", "env", "mentions"),
    [
        ((), {"IMAGESTORE_PORT": "abc"}, ["IMAGESTORE_PORT", "abc"]),
        (("--port", "abc"), {}, ["--port", "abc"]),
        ((), {"IMAGESTORE_MAX_UPLOAD_BYTES": "lots"}, ["IMAGESTORE_MAX_UPLOAD_BYTES", "lots"]),
        ((), {"IMAGESTORE_SHUTDOWN_GRACE_SECONDS": "-1"}, ["IMAGESTORE_SHUTDOWN_GRACE_SECONDS"]),
        ((), {"IMAGESTORE_SHUTDOWN_GRACE_SECONDS": "nan"}, ["IMAGESTORE_SHUTDOWN_GRACE_SECONDS"]),
        ((), {"IMAGESTORE_LOG_LEVEL": "loud"}, ["IMAGESTORE_LOG_LEVEL", "loud"]),
        ((), {"IMAGESTORE_PORT": "70000"}, ["IMAGESTORE_PORT", "70000"]),
    ],
    ids=[
        "env-port-abc",
        "flag-port-abc",
        "env-size-lots",
        "env-grace-negative",
        "env-grace-nan",
        "env-log-level-loud",
        "env-port-70000",
    ],
)
def test_a_bad_setting_stops_start_up_with_a_clear_message(run, tmp_path, args, env, mentions):
    data = tmp_path / "db"
    setting = " ".join([*(f"{k}={v}" for k, v in env.items()), *args])
    if "IMAGESTORE_PORT" not in env and "--port" not in args:
        args = (*args, "--port", str(free_port()))  # should it serve anyway, not on 3333
    proc = run(*args, "--data", str(data), env=env)
    # a bad value must never get as far as serving: fail fast if it does
    deadline = time.monotonic() + 15
    while proc.popen.poll() is None and time.monotonic() < deadline:
        if "serving" in proc.log():
            break
        time.sleep(0.02)
    log = proc.log()
    assert proc.popen.poll() is not None, (
        f"imagestore accepted the bad setting {setting} and started serving:\n{log}"
    )
    assert proc.popen.returncode != 0, log
    assert "Traceback" not in log, f"a stack trace instead of a message:\n{log}"
    for word in mentions:
        assert word.lower() in log.lower(), f"{word!r} not in the message:\n{log}"
    assert not (data / "catalog.sqlite3").exists()


# --- one process per data folder ---------------------------------------------------


def test_a_second_instance_on_the_same_data_folder_refuses_to_start(run, tmp_path):
    data = tmp_path / "db"
    first, first_port = serve_data(run, data)
    create_album(first_port, "pets")

    second = run("--port", str(free_port()), "--data", str(data))
    assert second.wait_exit(timeout=15) == 1, second.log()
    message = second.log()
    assert "in use" in message and str(data) in message, message
    assert "Traceback" not in message and "serving" not in message, message

    # the first one never noticed
    status, _, body = request(first_port, "GET", path_of())
    assert status == 200 and json.loads(body) == {"albumList": ["pets"]}
    assert first.popen.poll() is None


# --- graceful shutdown -------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_accepting_and_lets_the_upload_in_flight_finish(run, tmp_path, signum):
    data = tmp_path / "db"
    proc, port = serve_data(run, data, "--shutdown-grace-seconds", "20")
    create_album(port, "pets")
    image = png(padding=3 * 1024 * 1024)
    half = len(image) // 2

    sock = start_slow_put(port, "pets", "cat.png", image, half)
    try:
        wait_for_partial_file(data)
        proc.popen.send_signal(signum)
        assert proc.wait_for_log("shutting down", timeout=10), proc.log()
        assert refuses_connections(port), "new connections still accepted after the signal"
        time.sleep(0.3)
        assert proc.popen.poll() is None, "exited without waiting for the upload in flight"

        sock.sendall(image[half:])  # the rest of the body, well within the grace period
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    finally:
        sock.close()
    assert response.status == 200, body
    assert json.loads(body) == {"message": "cat.png image added to album pets"}

    assert proc.wait_exit(timeout=15) == 0, proc.log()
    log = proc.log()
    assert log.rstrip().splitlines()[-1].endswith("stopped"), log
    assert "still running after the grace period" not in log
    assert os.listdir(data / "blobs" / "tmp") == []

    # what was answered 200 during the shutdown is really stored
    again, port = serve_data(run, data)
    status, headers, stored = request(port, "GET", path_of("pets", "images", "cat.png"))
    assert status == 200 and stored == image
    assert headers["etag"] == f'"{hashlib.sha256(image).hexdigest()}"'


def test_an_upload_stalled_past_the_grace_period_is_cut_and_leaves_nothing(run, tmp_path):
    data = tmp_path / "db"
    proc, port = serve_data(run, data, "--shutdown-grace-seconds", "1")
    create_album(port, "pets")
    image = png(padding=1024 * 1024)
    sock = start_slow_put(port, "pets", "stalled.png", image, len(image) // 2)
    try:
        wait_for_partial_file(data)
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit(timeout=15) == 0, proc.log()
        assert 0.9 <= time.monotonic() - started < 8, "the grace period was not honoured"
        sock.settimeout(5)
        try:
            leftover = sock.recv(65536)
        except ConnectionResetError:
            leftover = b""
        assert not leftover.startswith(b"HTTP/1.1 200"), leftover
    finally:
        sock.close()
    log = proc.log()
    assert "1 request(s) still running after the grace period" in log, log
    assert log.rstrip().splitlines()[-1].endswith("stopped"), log
    assert os.listdir(data / "blobs" / "tmp") == [], "the cut upload left its partial file"

    again, port = serve_data(run, data)
    assert "start-up sweep removed" not in again.log()
    status, _, body = request(port, "GET", path_of("pets", "images"))
    assert json.loads(body) == {"imageList": []}


def test_draining_serves_no_new_request_on_a_kept_alive_connection(run, tmp_path):
    """Stopping to accept means every new request, also one sent on a keep-alive
    connection opened before the signal: it must be refused (connection closed), or
    at least answered with ``Connection: close``, so that clients move elsewhere."""
    data = tmp_path / "db"
    proc, port = serve_data(run, data, "--shutdown-grace-seconds", "20")
    create_album(port, "pets")
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    image = png(padding=512 * 1024)
    upload = None
    try:
        idle.request("GET", path_of())
        first = idle.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("Connection", "").lower() != "close"

        # an upload in flight keeps the process draining
        upload = start_slow_put(port, "pets", "slow.png", image, 1000)
        wait_for_partial_file(data)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_for_log("shutting down", timeout=10), proc.log()
        assert refuses_connections(port)

        try:
            idle.request("GET", path_of())
            late = idle.getresponse()
            late.read()
            served = (late.status, late.getheader("Connection"))
        except (OSError, http.client.HTTPException):
            served = None  # refused: the right answer
        assert served is None or (served[0] == 503 and (served[1] or "").lower() == "close"), (
            f"after SIGTERM a new request on a kept-alive connection was served {served[0]} "
            "without 'Connection: close': the process still accepts work while draining"
        )
    finally:
        idle.close()
        if upload is not None:
            try:
                upload.sendall(image[1000:])
                response = http.client.HTTPResponse(upload)
                response.begin()
                response.read()
            except (OSError, http.client.HTTPException):
                pass
            upload.close()
    assert proc.wait_exit(timeout=25) == 0, proc.log()
