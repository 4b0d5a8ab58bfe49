"""Backends that go away: the service answers 503 with a sentence (never a traceback),
keeps nothing half-done, and recovers by itself when they come back."""

import json
import time

import pytest
from engines import Postgres
from images import png
from process import create_album, path_of, request, serve


@pytest.fixture
def postgres():
    """A cluster of this test's own: it is stopped and started again."""
    cluster = Postgres().start()
    yield cluster
    cluster.remove()


def until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_postgresql_stopped_gives_503_with_a_sentence_and_the_service_recovers(
    run, tmp_path, postgres
):
    url = postgres.new_database()
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db")),
            {"IMAGESTORE_CATALOG": url, "IMAGESTORE_WORKERS": "2"},
        ),
    )
    create_album(port, "pets")
    cat = png(padding=5000)
    assert request(port, "PUT", path_of("pets", "images", "cat.png"), cat)[0] == 200

    postgres.stop()
    for method, path, body in [
        ("GET", path_of(), None),
        ("GET", path_of("pets", "images"), None),
        ("GET", path_of("pets", "images", "cat.png"), None),
        ("PUT", path_of("pets", "images", "dog.png"), png(padding=10)),
        ("POST", path_of(), json.dumps({"albumName": "more"}).encode()),
    ]:
        status, headers, answer = request(port, method, path, body)
        assert status == 503, (method, path, status, answer)
        assert headers["content-type"].startswith("application/json")
        assert json.loads(answer)["error"].startswith("the catalog is unavailable")
    status, _, answer = request(port, "GET", "/healthz")
    assert status == 503
    health = json.loads(answer)
    assert health["error"].startswith("the catalog is unreachable")
    assert health["catalog"]["reachable"] is False and health["blobs"]["reachable"] is True

    postgres.start()
    until(lambda: request(port, "GET", "/healthz")[0] == 200)
    # Every worker's pool has reconnected: several requests, every one a 200.
    for _ in range(10):
        status, _, answer = request(port, "GET", path_of("pets", "images"))
        assert status == 200 and json.loads(answer) == {"imageList": ["cat.png"]}
    assert request(port, "PUT", path_of("pets", "images", "dog.png"), png(padding=10))[0] == 200
    assert request(port, "GET", path_of("pets", "images", "cat.png"))[2] == cat
    health = json.loads(request(port, "GET", "/healthz")[2])
    assert health["catalog"]["reachable"] and health["catalog"]["latencyMs"] >= 0
    # Nothing half-done: the refused upload left no image and no file.
    status, _, answer = request(port, "GET", path_of("pets", "images"))
    assert json.loads(answer) == {"imageList": ["cat.png", "dog.png"]}
    assert list((tmp_path / "db" / "blobs" / "tmp").iterdir()) == []
