"""A really full disk: the data folder on a 24 MiB tmpfs, filled by uploads or by a
filler file. Uploads that do not fit get 507 and leave nothing; what was stored
before stays whole; catalog writes that cannot be recorded answer 507 and never
corrupt the catalog; the service keeps serving reads and recovers when room
returns. Mounting needs root (the tests skip otherwise, saying so)."""

import errno
import hashlib
import json
import os
import signal
import sqlite3
import subprocess

import pytest
from conftest import blob_files
from images import png
from process import create_album, path_of, request, serve
from wire import Wire, chunk, request_bytes

MiB = 1024 * 1024


@pytest.fixture
def disk(tmp_path):
    """A fresh 24 MiB tmpfs, unmounted at teardown."""
    if os.geteuid() != 0:
        # Never skipped: make test runs as root (README), and a skipped test proves nothing.
        pytest.fail("mounting a small tmpfs to fill it needs root: run the tests as root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)  # a process still inside


def serve_on(run, data, *flags: str):
    return serve(run, lambda port: (("--port", str(port), "--data", str(data), *flags), {}))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(port, album: str, name: str, data: bytes, multipart: bool = False, declared=False):
    """Upload ``data`` (chunked unless ``declared``), stopping when the service answers."""
    headers = {"Content-Type": "image/png"}
    path = path_of(album, "images", name)
    body = data
    if multipart:
        boundary = "enospc-boundary"
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        path = path_of(album, "images")
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
    pieces = [body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]
    if declared:
        headers["Content-Length"] = str(len(body))
    else:
        headers["Transfer-Encoding"] = "chunked"
        pieces = [chunk(piece) for piece in pieces] + [chunk(b"")]
    with Wire(port, timeout=30) as wire:
        wire.send(request_bytes("POST" if multipart else "PUT", path, headers))
        wire.send_until_answered(pieces)
        return wire.read_response()


def refused_before_the_body(port, method: str, path: str, headers: dict):
    """Send only the head, with Expect: 100-continue; the answer must not be a 100."""
    with Wire(port) as wire:
        wire.send(request_bytes(method, path, {**headers, "Expect": "100-continue"}))
        return wire.read_response(skip_continue=False)


def blob_hashes(data) -> list[str]:
    """The SHA-256 of every published blob (unfinished uploads and the lock aside)."""
    hashes = []
    for name in blob_files(data):
        with open(data / "blobs" / name, "rb") as handle:
            hashes.append(sha(handle.read()))
    return sorted(hashes)


def listed(port, album: str) -> list[str]:
    status, _, body = request(port, "GET", path_of(album, "images"))
    assert status == 200, body
    return json.loads(body)["imageList"]


def albums(port) -> list[str]:
    status, _, body = request(port, "GET", path_of())
    assert status == 200, body
    return json.loads(body)["albumList"]


def health(port) -> dict:
    status, _, body = request(port, "GET", "/healthz")
    assert status == 200, body
    return json.loads(body)


def assert_intact(port, data, album: str, stored: dict[str, bytes]) -> None:
    """Every stored image downloads whole, and the disk holds exactly these."""
    assert listed(port, album) == sorted(stored)
    for name, image in stored.items():
        status, headers, body = request(port, "GET", path_of(album, "images", name))
        assert status == 200, (name, status)
        assert headers["etag"] == f'"{sha(image)}"' and sha(body) == sha(image), name
    assert os.listdir(data / "blobs" / "tmp") == []
    assert blob_hashes(data) == sorted(sha(image) for image in stored.values())  # no orphan


def fill(path) -> None:
    """Write zeros to ``path`` until the disk refuses one more byte."""
    with open(path, "wb", buffering=0) as filler:
        for size in (MiB, 4096, 1):
            while True:
                try:
                    filler.write(b"\0" * size)
                except OSError as err:
                    assert err.errno == errno.ENOSPC, err
                    break
    assert os.statvfs(path).f_bavail == 0


def assert_storage_full(status: int, body: bytes, says: str = "disk is full") -> None:
    assert status == 507, (status, body)
    assert says in json.loads(body)["error"], body


# --- filled by uploads ---------------------------------------------------------------


def test_uploads_fill_the_disk_then_507_and_everything_stored_is_intact(disk, run):
    data = disk / "data"
    proc, port = serve_on(run, data, "--min-free-bytes", "0")
    create_album(port, "a")
    stored: dict[str, bytes] = {}
    for i in range(40):
        image = png(width=1 + i, padding=(1 + i % 3) * MiB - 7919 * i)  # 1-3 MiB each
        answer = upload(port, "a", f"img{i}.png", image, multipart=bool(i % 2))
        if answer.status != 200:
            break
        stored[f"img{i}.png"] = image
    else:
        raise AssertionError("24 MiB never filled up")
    assert_storage_full(answer.status, answer.body)
    assert answer.header("x-content-type-options") == "nosniff"
    failed_name, failed_image = f"img{i}.png", image
    assert len(stored) >= 5, "the disk filled up too early to tell anything"

    # Nothing of the failed upload is left, and every earlier image is whole.
    assert_intact(port, data, "a", stored)
    assert albums(port) == ["a"]
    assert health(port)["status"] == "ok"
    answer = upload(port, "a", failed_name, failed_image, multipart=True)
    assert_storage_full(answer.status, answer.body)  # still no room
    assert_intact(port, data, "a", stored)

    # A delete makes room: the refused image now fits.
    largest = sorted(stored, key=lambda name: len(stored[name]))[-2:]
    for name in largest:
        status, _, body = request(port, "DELETE", path_of("a", "images", name))
        assert status == 200, body
        del stored[name]
    answer = upload(port, "a", failed_name, failed_image)
    assert answer.status == 200, answer
    stored[failed_name] = failed_image
    assert_intact(port, data, "a", stored)
    assert proc.popen.poll() is None


def test_below_the_free_space_floor_uploads_are_refused_before_the_body(disk, run):
    data = disk / "data"
    image = png(padding=100_000)
    proc, port = serve_on(run, data, "--min-free-bytes", "1MiB")
    create_album(port, "a")
    assert upload(port, "a", "kept.png", image, declared=True).status == 200
    assert health(port)["storage"]["uploadsRefused"] is False
    # A declared length that would not leave the floor free: refused up front.
    answer = refused_before_the_body(
        port, "PUT", path_of("a", "images", "big.png"), {"Content-Length": str(30 * MiB)}
    )
    assert_storage_full(answer.status, answer.body, "not enough disk space")
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0

    # Restarted with a floor above the free space of the whole 24 MiB disk.
    proc, port = serve_on(run, data, "--min-free-bytes", "30MiB")
    storage = health(port)["storage"]
    assert storage["uploadsRefused"] is True
    assert storage["minFreeBytes"] == 30 * MiB and storage["freeBytes"] < 30 * MiB
    attempts = [
        ("PUT", path_of("a", "images", "x.png"), {"Content-Length": str(len(image))}),
        ("PUT", path_of("a", "images", "y.png"), {"Transfer-Encoding": "chunked"}),
        (
            "POST",
            path_of("a", "images"),
            {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "200000"},
        ),
    ]
    for method, path, headers in attempts:
        answer = refused_before_the_body(port, method, path, headers)
        assert_storage_full(answer.status, answer.body, "not enough disk space")
    # An upload sent whole anyway is refused too, and leaves nothing.
    assert upload(port, "a", "z.png", image, multipart=True).status == 507
    assert_intact(port, data, "a", {"kept.png": image})
    assert albums(port) == ["a"]


# --- a full disk under the catalog ---------------------------------------------------


def fill_catalog(port, limit: int = 3000) -> tuple[list[str], list[tuple[int, bytes]]]:
    """Create albums until the catalog cannot record one more (and a few beyond):
    (the albums acknowledged, the refusals)."""
    acknowledged, refusals = [], []
    for i in range(limit):
        name = f"album-{i:05d}-" + "x" * 180
        body = json.dumps({"albumName": name}).encode()
        status, _, answer = request(port, "POST", path_of(), body)
        if status == 200:
            acknowledged.append(name)
        else:
            refusals.append((status, answer))
            if len(refusals) == 5:
                break
    return acknowledged, refusals


def test_a_full_disk_under_the_catalog_answers_507_and_corrupts_nothing(disk, run):
    data = disk / "data"
    image = png(padding=50_000)
    proc, port = serve_on(run, data, "--min-free-bytes", "0")
    create_album(port, "keep")
    assert upload(port, "keep", "keep.png", image).status == 200
    fill(disk / "filler")

    acknowledged, refusals = fill_catalog(port)
    assert len(refusals) == 5, f"{len(acknowledged)} albums fitted on a full disk"
    for status, answer in refusals:
        assert_storage_full(status, answer)
    expected = sorted(["keep", *acknowledged])
    assert albums(port) == expected  # reads go on
    assert_intact(port, data, "keep", {"keep.png": image})
    answer = upload(port, "keep", "more.png", image)
    assert_storage_full(answer.status, answer.body)
    # Room for the image's bytes but not for its catalog row: its blob goes too.
    pages = -(-len(image) // 4096)
    os.truncate(disk / "filler", os.path.getsize(disk / "filler") - pages * 4096)
    answer = upload(port, "keep", "more.png", image)
    assert_storage_full(answer.status, answer.body, "the catalog cannot record")
    assert_intact(port, data, "keep", {"keep.png": image})
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0

    with sqlite3.connect(data / "catalog.sqlite3") as catalog:
        assert catalog.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = sorted(row[0] for row in catalog.execute("SELECT name FROM albums"))
    catalog.close()
    assert names == expected  # every acknowledged album, and nothing else

    os.unlink(disk / "filler")
    proc, port = serve_on(run, data, "--min-free-bytes", "0")
    assert albums(port) == expected
    assert_intact(port, data, "keep", {"keep.png": image})
    create_album(port, "after")
    assert upload(port, "keep", "more.png", image).status == 200


def test_the_service_recovers_without_a_restart_once_room_returns(disk, run):
    data = disk / "data"
    image = png(padding=50_000)
    proc, port = serve_on(run, data, "--min-free-bytes", "0")
    create_album(port, "keep")
    fill(disk / "filler")
    acknowledged, refusals = fill_catalog(port)
    assert refusals and all(status == 507 for status, _ in refusals), refusals
    os.unlink(disk / "filler")
    create_album(port, "after")
    assert upload(port, "keep", "more.png", image).status == 200
    for name in acknowledged[:3]:
        status, _, body = request(port, "DELETE", path_of(name))
        assert status == 200, body
    assert albums(port) == sorted(["after", "keep", *acknowledged[3:]])
    assert_intact(port, data, "keep", {"more.png": image})
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    with sqlite3.connect(data / "catalog.sqlite3") as catalog:
        assert catalog.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    catalog.close()
