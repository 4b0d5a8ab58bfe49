"""Smoke test of the one executable, dist/imagestore, as an operator runs it.

`make test` builds it first (the Makefile's test target depends on the build). Built
by nobody, or older than its sources, it fails here: it is never skipped.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import pyvips
from conftest import multipart_body
from images import png
from mqtt import Broker, Subscriber
from process import ROOT, SERVICE, Proc, clean_env, create_album, free_port, path_of, request

# Needs the built dist/imagestore: `make test` runs it, `make check` leaves it out.
pytestmark = pytest.mark.exe

EXECUTABLE = os.path.join(ROOT, "dist", "imagestore")
# What the executable is made of (as the Makefile's EXE_SOURCES).
SOURCES = ["build.spec", *glob.glob("*.py", root_dir=ROOT)] + [
    os.path.relpath(path, ROOT)
    for pattern in ("handlers/*.py", "store/*.py", "notify/*.py", "cli/*.py", "static/**/*")
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True)
    if os.path.isfile(path)
]


@pytest.fixture(scope="module")
def executable() -> str:
    if not os.path.isfile(EXECUTABLE):
        pytest.fail("dist/imagestore is missing: build it with `make` (`make test` does)")
    built = os.path.getmtime(EXECUTABLE)
    newer = [p for p in SOURCES if os.path.getmtime(os.path.join(ROOT, p)) > built]
    if newer:
        pytest.fail(f"dist/imagestore is older than {', '.join(sorted(newer))}: run `make`")
    return EXECUTABLE


@pytest.fixture
def run_exe(executable, tmp_path):
    """run_exe(*args, env={...}, cwd=..., stdout=path) starts dist/imagestore in a clean
    environment (plus ``env``), its output in a log (stdout apart if ``stdout`` names a
    file); the one-file bootloader unpacks into tmp_path/unpack. Every process is
    SIGKILLed at teardown if it is still running."""
    procs: list[Proc] = []
    unpack = tmp_path / "unpack"
    unpack.mkdir()

    def start(*args: str, env: dict[str, str] | None = None, cwd=None, stdout=None) -> Proc:
        log_path = tmp_path / f"exe-{len(procs) + 1}.log"
        with open(log_path, "wb") as log, open(stdout or os.devnull, "wb") as out:
            popen = subprocess.Popen(
                [executable, *args],
                stdin=subprocess.DEVNULL,
                stdout=out if stdout else log,
                stderr=log,
                env=clean_env(TMPDIR=str(unpack), **(env or {})),
                cwd=cwd or tmp_path,
            )
        proc = Proc(popen, log_path)
        procs.append(proc)
        return proc

    start.unpack = unpack
    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=10)


def run_both(*args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    def run(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            command + list(args), capture_output=True, text=True, env=clean_env(), timeout=30
        )

    return run([EXECUTABLE]), run([sys.executable, SERVICE])


def lines_of(path, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form)."""
    with open(os.path.join(ROOT, "Dockerfile")) as dockerfile:
        text = dockerfile.read().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    return json.loads(match.group(1))


def test_help_and_version_are_the_source_versions(executable):
    outputs = {}
    for args in (["--help"], ["--version"], ["watch", "--help"]):
        frozen, source = run_both(*args)
        assert (frozen.returncode, frozen.stdout) == (source.returncode, source.stdout), args
        assert frozen.returncode == 0
        outputs[args[0]] = frozen.stdout
    assert "--memory-release-seconds" in outputs["--help"]
    assert "--mqtt-host" in outputs["watch"] and "--memory-release" not in outputs["watch"]
    frozen, source = run_both("--port", "nonsense")
    assert frozen.returncode == source.returncode == 2
    assert frozen.stderr == source.stderr


def test_the_executable_serves_stores_notifies_documents_and_stops(run_exe, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    try:
        folder = tmp_path / "anywhere"
        folder.mkdir()
        port = free_port()
        env = {
            "IMAGESTORE_PORT": str(port),
            "IMAGESTORE_MQTT_HOST": "127.0.0.1",
            "IMAGESTORE_MQTT_PORT": str(broker.port),
            "HOSTIP": "127.0.0.1",
        }
        watched = tmp_path / "watch.out"
        watcher = run_exe("watch", env=env, cwd=folder, stdout=watched)
        assert watcher.wait_for_log("watching imagestore/events"), watcher.log()
        proc = run_exe(env=env, cwd=folder)
        assert proc.wait_ready(port)
        assert (folder / "image-db" / "catalog.sqlite3").is_file(), "./image-db is the default"
        assert f"http://127.0.0.1:{port}/api/v1" in proc.log()

        # upload, list, download
        create_album(port, "pets")
        image = png(40, 30, padding=300_000)
        content_type, body = multipart_body("cat.png", image)
        status, _, answer = request(
            port, "POST", path_of("pets", "images"), body, {"Content-Type": content_type}
        )
        assert (status, json.loads(answer)) == (
            200,
            {"message": "cat.png image added to album pets"},
        )
        status, _, answer = request(port, "GET", path_of("pets", "images"))
        assert (status, json.loads(answer)) == (200, {"imageList": ["cat.png"]})
        status, headers, answer = request(port, "GET", path_of("pets", "images", "cat.png"))
        assert status == 200 and headers["content-type"] == "image/png"
        assert answer == image

        # a rendition, by the libvips bundled in the executable
        status, headers, answer = request(
            port, "GET", path_of("pets", "images", "cat.png") + "?width=64&format=webp"
        )
        assert status == 200, answer
        assert (headers["content-type"], headers["x-image-width"]) == ("image/webp", "64")
        rendered = pyvips.Image.new_from_buffer(answer, "")
        assert (rendered.width, rendered.height) == (64, 48)
        assert "pyvips: VIPS:" not in proc.log(), "libvips' chatter stays out of the log"

        # the MQTT events, to a subscriber and to `imagestore watch`
        events = subscriber.wait_for(2)
        assert [e["event"] for e in events] == ["album.created", "image.added"]
        assert events[1]["message"] == "cat.png image added to album pets"
        assert events[1]["size"] == len(image)
        assert (events[1]["width"], events[1]["height"]) == (40, 30), "dimensions on record"
        lines = lines_of(watched, 2)
        assert [json.loads(line)["event"] for line in lines] == ["album.created", "image.added"]
        watcher.popen.send_signal(signal.SIGINT)
        assert watcher.wait_exit() == 0

        # the Swagger UI page and the OpenAPI document, unpacked from the executable
        status, headers, page = request(port, "GET", "/swagger/index.html")
        assert status == 200 and headers["content-type"].startswith("text/html"), headers
        assert b"swagger-ui" in page
        status, headers, answer = request(port, "GET", "/swagger/swagger-ui-bundle.js")
        assert status == 200 and len(answer) > 1_000_000
        status, headers, answer = request(port, "GET", "/swagger/openapi.json")
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert "/albums" in json.loads(answer)["paths"]

        # the Docker image's health check, run as Docker would, against the executable
        check = {**os.environ, "IMAGESTORE_PORT": str(port)}
        assert subprocess.run(healthcheck_command(), env=check, timeout=10).returncode == 0

        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit() == 0, proc.log()
        assert "stopped" in proc.log()
        assert subprocess.run(healthcheck_command(), env=check, timeout=10).returncode != 0
        assert os.listdir(run_exe.unpack) == [], "the bootloader left its unpacked files"
    finally:
        subscriber.close()
        broker.stop()


def test_the_executable_serves_from_postgresql_and_s3(
    run_exe, tmp_path, postgres_cluster, seaweedfs
):
    """The scale-out backends from the executable, with forked workers: a hidden import
    missing from the bundle (asyncpg's, obstore's) fails here, not on an operator's host."""
    bucket = seaweedfs.new_bucket()
    port = free_port()
    proc = run_exe(
        env={
            **seaweedfs.env(),
            "IMAGESTORE_PORT": str(port),
            "IMAGESTORE_CATALOG": postgres_cluster.new_database(),
            "IMAGESTORE_BLOBS": f"s3://{bucket}/images",
            "IMAGESTORE_WORKERS": "2",
        }
    )
    assert proc.wait_ready(port), proc.log()
    create_album(port, "pets")
    small, large = png(padding=3000), png(padding=7 * 1024 * 1024)  # one PUT; multipart
    for name, image in (("small.png", small), ("large.png", large)):
        assert request(port, "PUT", path_of("pets", "images", name), image)[0] == 200
    for name, image in (("small.png", small), ("large.png", large)):
        status, _, answer = request(port, "GET", path_of("pets", "images", name))
        assert status == 200 and answer == image
    status, _, answer = request(port, "GET", "/healthz")
    health = json.loads(answer)
    assert status == 200 and health["catalog"]["reachable"] and health["blobs"]["reachable"]
    objects = seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="images/")
    assert sorted(item["Size"] for item in objects["Contents"]) == [len(small), len(large)]
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.log()


def test_prodmode_and_settings_from_the_environment(run_exe, tmp_path):
    port = free_port()
    data = tmp_path / "elsewhere"
    proc = run_exe(
        env={
            "PRODMODE": "1",
            "IMAGESTORE_PORT": str(port),
            "IMAGESTORE_DATA": str(data),
            "IMAGESTORE_MQTT": "off",
            "IMAGESTORE_MAX_UPLOAD_BYTES": "1KiB",
        }
    )
    assert proc.wait_ready(port)
    assert (data / "catalog.sqlite3").is_file()
    assert request(port, "GET", "/swagger/index.html")[0] == 404
    create_album(port, "a")
    status, _, _ = request(port, "PUT", path_of("a", "images", "big.png"), png(padding=2000))
    assert status == 413
    assert json.loads(request(port, "GET", "/healthz")[2])["mqtt"] == {"enabled": False}
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0


def test_the_executable_holds_the_service_and_nothing_from_tests_or_dev_tools(executable):
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(executable)
    files = set(archive.toc)
    modules = set(archive.open_embedded_archive("PYZ.pyz").toc)
    assert "imagestore" in files  # the entry script
    assert {"handlers.docs", "store.store", "notify.publisher", "memory", "settings"} <= modules
    assert "static/swagger/index.html" in files
    assert "static/swagger/swagger-ui-bundle.js" in files
    dev = ("pytest", "_pytest", "hypothesis", "ruff", "pip", "setuptools", "pkg_resources")
    dev += ("PyInstaller", "tests", "bench", "playwright", "schemathesis", "conftest")
    leaked = [m for m in modules | files if m.split(".")[0].split("/")[0] in dev]
    assert leaked == []
    assert os.path.getsize(executable) < 30 * 10**6


def test_the_service_stops_when_its_bootloader_is_killed(run_exe, tmp_path):
    """kill -9 of the process an operator sees (the bootloader) leaves no orphan that
    keeps serving: the service gets SIGTERM from the kernel and stops gracefully."""
    port = free_port()
    proc = run_exe(
        "--port", str(port), "--data", str(tmp_path / "db"), env={"IMAGESTORE_MQTT": "off"}
    )
    assert proc.wait_ready(port)
    with open(f"/proc/{proc.popen.pid}/task/{proc.popen.pid}/children") as children:
        (service,) = (int(pid) for pid in children.read().split())
    proc.popen.kill()
    proc.popen.wait(10)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{service}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{service}"), "the service outlived its bootloader"
    assert proc.wait_for_log("stopped"), proc.log()


def test_the_executables_push_pull_and_ls_against_the_executables_service(run_exe, tmp_path):
    port = free_port()
    proc = run_exe(
        "--port", str(port), "--data", str(tmp_path / "db"), env={"IMAGESTORE_MQTT": "off"}
    )
    assert proc.wait_ready(port)
    folder = tmp_path / "trip"
    (folder / "day2").mkdir(parents=True)
    images = {"a.png": png(3, 2, padding=400_000), "b.png": png(5, 1, padding=10)}
    (folder / "a.png").write_bytes(images["a.png"])
    (folder / "day2" / "b.png").write_bytes(images["b.png"])
    (folder / "notes.txt").write_text("not an image")
    env = {"IMAGESTORE_URL": f"http://127.0.0.1:{port}"}

    def client(*args: str) -> tuple[int, str]:
        out = tmp_path / "client.out"
        command = run_exe(*args, env=env, stdout=out)
        code = command.wait_exit(60)
        return code, out.read_text() + command.log()

    code, output = client("push", str(folder), "--recursive", "--jobs", "8")
    assert code == 0, output
    assert "push: 2 sent, 0 already there, 1 not images, 0 failed" in output
    code, output = client("push", str(folder), "--recursive")
    assert code == 0 and "push: 0 sent, 2 already there" in output, output
    code, output = client("ls")
    assert (code, output.splitlines()[0]) == (0, "trip"), output
    code, output = client("ls", "trip")
    assert code == 0 and " image/png " in output and output.splitlines()[1].endswith(" b.png")
    back = tmp_path / "back"
    code, output = client("pull", "trip", str(back))
    assert code == 0 and "pull: 2 received" in output, output
    assert {p.name: p.read_bytes() for p in back.iterdir()} == images
    code, output = client("push")
    assert code == 2 and "the following arguments are required: DIR" in output
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
