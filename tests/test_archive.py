"""GET /albums/{album}/archive: the album as a ZIP (stored entries, zip64), streamed
as it is built, with memory flat at any album size."""

import hashlib
import http.client
import io
import os
import subprocess
import threading
import time
import zipfile

import pytest
from conftest import body_json
from images import GIF, JPEG, png
from process import create_album, path_of, request, serve


@pytest.mark.gen_test(timeout=60)
async def test_the_archive_holds_every_image_byte_for_byte(api, tmp_path):
    album = "vacances d'été"
    await api.create_album(album)
    images = {"cat.png": png(4, 4), "dog.jpg": JPEG, "ünïcode 🐈.gif": GIF, "same.png": png(4, 4)}
    for name, data in images.items():
        assert (await api.put_image(album, name, data)).code == 200
    response = await api.request("GET", f"/albums/{api.path(album)}/archive")
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/zip"
    disposition = response.headers["Content-Disposition"]
    assert (
        disposition.startswith("attachment;")
        and "UTF-8''vacances%20d%27%C3%A9t%C3%A9.zip" in disposition
    )
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == sorted(images)
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert archive.read(info) == images[info.filename]
    saved = tmp_path / "album.zip"
    saved.write_bytes(response.body)
    result = subprocess.run(["unzip", "-t", str(saved)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.gen_test
async def test_an_empty_album_is_an_empty_zip_and_a_missing_one_404(api):
    await api.create_album("empty")
    response = await api.request("GET", "/albums/empty/archive")
    assert response.code == 200
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        assert archive.namelist() == []
    missing = await api.request("GET", "/albums/ghost/archive")
    assert missing.code == 404 and body_json(missing) == {"error": "album ghost does not exist"}


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


IMAGE_BYTES = 256 * 1024**2
COPIES = 18  # 4.5 GiB: past 4 GiB, so the archive's offsets need zip64


def test_a_4_5_gib_album_streams_with_flat_memory_as_a_valid_zip64(run, tmp_path):
    """18 images of 256 MiB (identical bytes: stored once, archived 18 times). The
    worker's RSS while it streams the 4.5 GiB archive stays within 64 MiB of what it
    was before, and the archive passes unzip -t and zipfile's CRC checks."""
    data = tmp_path / "db"
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(data), "--workers", "1"),
            {"IMAGESTORE_MQTT": "off", "IMAGESTORE_MIN_FREE_BYTES": "0"},
        ),
    )
    create_album(port, "big")
    image = png(padding=IMAGE_BYTES - len(png()) - 16)
    assert len(image) == IMAGE_BYTES
    digest = hashlib.sha256(image).hexdigest()
    for index in range(COPIES):
        status, _, body = request(
            port, "PUT", path_of("big", "images", f"{index:02d}.png"), image, timeout=120
        )
        assert status == 200, body
    del image
    worker = proc.popen.pid  # one worker: the service is this process
    request(port, "GET", path_of("big", "images"))
    before = rss_of(worker)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_of(worker))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    saved = tmp_path / "big.zip"
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", path_of("big") + "/archive")
        response = conn.getresponse()
        assert response.status == 200
        with open(saved, "wb") as out:
            while chunk := response.read(1024 * 1024):
                out.write(chunk)
        conn.close()
    finally:
        done.set()
        sampler.join()
    assert peak - before < 64 * 1024**2, (before, peak)
    assert os.path.getsize(saved) > COPIES * IMAGE_BYTES > 4 * 1024**3
    result = subprocess.run(["unzip", "-tq", str(saved)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(saved) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == [f"{index:02d}.png" for index in range(COPIES)]
        assert all(info.file_size == IMAGE_BYTES for info in infos)
        assert infos[-1].header_offset > 4 * 1024**3, "zip64 offsets"
        sha = hashlib.sha256()
        with archive.open(infos[-1]) as entry:
            while chunk := entry.read(1024 * 1024):
                sha.update(chunk)
        assert sha.hexdigest() == digest
