"""Renditions in the real service process: its settings, `imagestore sign` and
`imagestore dimensions`, and several worker processes (forked after libvips loaded)."""

import sqlite3

import pyvips
from images import real
from process import Service, create_album, path_of, request, run_to_end


def test_the_service_renders_with_its_settings_and_signed_urls_from_imagestore_sign(tmp_path):
    env = {
        "IMAGESTORE_URL_SIGNING_KEY": "fresh-key,retired-key",
        "IMAGESTORE_RENDITION_WIDTHS": "100,50",
        "IMAGESTORE_WORKERS": "2",
        "IMAGESTORE_MQTT": "off",
    }
    service = Service(tmp_path / "data", tmp_path, env=env)
    service.start()
    try:
        port = service.port
        create_album(port, "pets")
        status, _, _ = request(
            port, "PUT", path_of("pets", "images", "cat.jpg"), real(".jpg", 400, 200)
        )
        assert status == 200
        for _ in range(4):  # whichever worker answers
            status, headers, body = request(
                port, "GET", path_of("pets", "images", "cat.jpg") + "?width=60"
            )
            assert status == 200, body
            assert pyvips.Image.new_from_buffer(body, "").width == 100, "the next allowed size up"
            assert headers["x-image-width"] == "100"
        status, _, body = request(port, "GET", path_of("pets", "images", "cat.jpg") + "?width=101")
        assert status == 400 and b"up to 100 pixels" in body

        url = path_of("pets", "images", "cat.jpg") + "?width=333&format=webp"
        signed = run_to_end("sign", url, env={"IMAGESTORE_URL_SIGNING_KEY": "fresh-key"})
        assert signed.returncode == 0, signed.stderr
        status, headers, body = request(port, "GET", signed.stdout.strip())
        assert status == 200, body
        assert headers["content-type"] == "image/webp"
        assert pyvips.Image.new_from_buffer(body, "").width == 333
        old = run_to_end("sign", url, env={"IMAGESTORE_URL_SIGNING_KEY": "retired-key"})
        assert request(port, "GET", old.stdout.strip())[0] == 200, "rotation: old key verifies"
        other = run_to_end("sign", url, env={"IMAGESTORE_URL_SIGNING_KEY": "someone-else"})
        assert request(port, "GET", other.stdout.strip())[0] == 403
        assert "Traceback" not in service.log()
    finally:
        service.kill()


def test_imagestore_sign_refuses_without_a_key():
    result = run_to_end("sign", "/api/v1/albums/a/images/b.jpg?width=3")
    assert result.returncode == 2
    assert "no key: set IMAGESTORE_URL_SIGNING_KEY" in result.stderr
    result = run_to_end("sign", "no-path", env={"IMAGESTORE_URL_SIGNING_KEY": "k"})
    assert result.returncode == 2 and "give the URL with its path" in result.stderr


def test_bad_rendition_settings_stop_the_service_with_a_sentence(tmp_path):
    for name, value, sentence in (
        ("IMAGESTORE_RENDITION_WIDTHS", "64,huge", "a list of sizes in pixels"),
        ("IMAGESTORE_RENDITION_WIDTHS", "", "a list of sizes in pixels"),
        ("IMAGESTORE_RENDITION_WIDTHS", "9000", "each from 1 to 8192"),
        ("IMAGESTORE_MAX_PIXELS", "0", "a whole number"),
        ("IMAGESTORE_RENDITION_CACHE_BYTES", "lots", "a size"),
        ("IMAGESTORE_RENDITIONS_ON_UPLOAD", "256,x", "a list of sizes in pixels"),
    ):
        result = run_to_end("--data", str(tmp_path / "d"), env={name: value})
        assert result.returncode == 2, (name, value)
        assert name in result.stderr and sentence in result.stderr, result.stderr


def test_imagestore_dimensions_backfills_images_stored_before(tmp_path):
    data = tmp_path / "data"
    service = Service(data, tmp_path, env={"IMAGESTORE_MQTT": "off"})
    service.start()
    try:
        create_album(service.port, "pets")
        for name, size in (("a.jpg", (30, 20)), ("b.png", (7, 9))):
            image = real("." + name.split(".")[1], *size)
            assert request(service.port, "PUT", path_of("pets", "images", name), image)[0] == 200
    finally:
        service.kill()
    with sqlite3.connect(data / "catalog.sqlite3") as db:
        db.execute("UPDATE images SET width = NULL, height = NULL")
    result = run_to_end("dimensions", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert "recorded the dimensions of 2 image content(s); 0 left unknown" in result.stdout
    with sqlite3.connect(data / "catalog.sqlite3") as db:
        rows = db.execute("SELECT name, width, height FROM images ORDER BY name").fetchall()
    assert rows == [("a.jpg", 30, 20), ("b.png", 7, 9)]
