"""Backends that go away: the service answers 503 with a sentence (never a traceback),
keeps nothing half-done, and recovers by itself when they come back."""

import json
import socket
import time

import pytest
from engines import Postgres, SeaweedFS
from images import png
from process import create_album, path_of, request, serve
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def postgres():
    """A cluster of this test's own: it is stopped and started again."""
    cluster = Postgres().start()
    yield cluster
    cluster.remove()


def backend_errors(port) -> dict[str, float]:
    """imagestore_backend_errors_total by backend, and imagestore_catalog_up as
    "catalog_up", from the live service's /metrics."""
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "imagestore_backend_errors_total":
                found[sample.labels["backend"]] = sample.value
            elif sample.name == "imagestore_catalog_up":
                found["catalog_up"] = sample.value
    return found


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
    # Counted by backend, over both workers: the five refused above, at least.
    # /metrics still answers, saying the catalog is down.
    until(lambda: backend_errors(port).get("catalog", 0) >= 5)
    errors = backend_errors(port)
    assert errors.get("blobs", 0) == 0 and errors["catalog_up"] == 0

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


@pytest.fixture
def seaweed():
    """A SeaweedFS of this test's own: it is stopped and started again."""
    weed = SeaweedFS().start()
    yield weed
    weed.remove()


def send_upload(port: int, path: str, data: bytes, first: int, before_the_rest):
    """PUT ``data``: ``first`` bytes, then ``before_the_rest()``, then the rest (as far
    as the service still reads); the response (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:first]
        )
        before_the_rest()
        try:
            sock.sendall(data[first:])
        except OSError:
            pass  # the service answered and closed before taking it all
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        return int(head.split(b" ")[1]), body


def test_seaweedfs_stopped_mid_upload_gives_503_with_a_sentence_and_the_service_recovers(
    run, tmp_path, postgres_cluster, seaweed
):
    bucket = seaweed.new_bucket()
    env = {
        **seaweed.env(),
        "IMAGESTORE_CATALOG": postgres_cluster.new_database(),
        "IMAGESTORE_BLOBS": f"s3://{bucket}/images",
        "IMAGESTORE_WORKERS": "2",
    }
    proc, port = serve(
        run, lambda port: (("--port", str(port), "--data", str(tmp_path / "db")), env)
    )
    create_album(port, "pets")
    cat = png(padding=5000)
    assert request(port, "PUT", path_of("pets", "images", "cat.png"), cat)[0] == 200

    big = png(padding=16 * 1024 * 1024)
    s3 = seaweed.client()

    def stop_seaweedfs_once_the_upload_is_under_way():
        until(lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))
        seaweed.stop()

    status, answer = send_upload(
        port,
        path_of("pets", "images", "big.png"),
        big,
        12 * 1024 * 1024,
        stop_seaweedfs_once_the_upload_is_under_way,
    )
    assert status == 503, answer
    assert json.loads(answer)["error"].startswith("the blob store is unavailable")
    for method, path, body in [
        ("GET", path_of("pets", "images", "cat.png"), None),
        ("PUT", path_of("pets", "images", "dog.png"), png(padding=10)),
    ]:
        status, headers, answer = request(port, method, path, body)
        assert status == 503, (method, path, status, answer)
        assert headers["content-type"].startswith("application/json")
        assert json.loads(answer)["error"].startswith("the blob store is unavailable")
    # What the catalog alone answers still works.
    status, _, answer = request(port, "GET", path_of("pets", "images"))
    assert status == 200 and json.loads(answer) == {"imageList": ["cat.png"]}
    status, _, answer = request(port, "GET", "/healthz")
    assert status == 503
    health = json.loads(answer)
    assert health["error"].startswith("the blob store is unreachable")
    assert health["blobs"]["reachable"] is False and health["catalog"]["reachable"] is True

    seaweed.start()
    until(lambda: request(port, "GET", "/healthz")[0] == 200)
    for _ in range(10):  # every worker's client works again
        status, _, answer = request(port, "GET", path_of("pets", "images", "cat.png"))
        assert status == 200 and answer == cat
    assert request(port, "PUT", path_of("pets", "images", "dog.png"), png(padding=10))[0] == 200
    assert request(port, "PUT", path_of("pets", "images", "big.png"), big)[0] == 200
    assert request(port, "GET", path_of("pets", "images", "big.png"))[2] == big
    # Nothing half-visible: the refused upload left no image and no object; its
    # multipart upload, which could not be aborted while S3 was down, is left to the
    # bucket's lifecycle rule (README).
    status, _, answer = request(port, "GET", path_of("pets", "images"))
    assert json.loads(answer) == {"imageList": ["big.png", "cat.png", "dog.png"]}
    objects = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    assert len(objects) == 3
