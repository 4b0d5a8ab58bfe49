"""Dimensions on record: each upload's width and height, read from its header by
libvips (no decode), kept in the catalog, carried by the image.added event; images
stored before get them from the backfill."""

import sqlite3
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from images import BMP, HEIC, animated_gif, png, real

from store import open_store
from store.sqlite_catalog import MIGRATIONS, SqliteCatalog

IMAGES = {
    "photo.jpg": (real(".jpg", 33, 20), (33, 20)),
    "alpha.png": (real(".png", 7, 5, bands=4), (7, 5)),
    "tiny.png": (png(3, 2), (3, 2)),
    "pic.webp": (real(".webp", 40, 30), (40, 30)),
    "scan.tif": (real(".tif", 12, 34), (12, 34)),
    "pic.avif": (real(".avif", 16, 12), (16, 12)),
    "anim.gif": (animated_gif(10, 8, 3), (10, 8)),  # one frame's size
    "old.bmp": (BMP, (1, 1)),  # from its structure: libvips does not read BMP
    "phone.heic": (HEIC, (None, None)),  # no HEVC in this libvips: unknown
}


async def upload_all(store) -> None:
    await store.create_album("pets")
    for name, (data, _size) in IMAGES.items():
        upload = await store.begin_upload("pets", name)
        await upload.write(data)
        await upload.commit()


async def dimensions(store) -> dict:
    found = {}
    for name in IMAGES:
        record = await store.get_image("pets", name)
        found[name] = (record.width, record.height)
    return found


@pytest.mark.gen_test(timeout=60)
async def test_each_upload_records_its_width_and_height(store):
    await upload_all(store)
    assert await dimensions(store) == {name: size for name, (_data, size) in IMAGES.items()}


@pytest.mark.gen_test(timeout=60)
async def test_the_image_added_event_carries_the_dimensions(backend):
    store = open_store(backend.backends, 1 << 20, outbox_limit=100)
    try:
        await store.create_album("pets")
        for name, data in (("cat.jpg", real(".jpg", 64, 48)), ("phone.heic", HEIC)):
            upload = await store.begin_upload("pets", name)
            await upload.write(data)
            await upload.commit()
        added = [e for e in await store.pending_events(0, 10) if b'"image.added"' in e.json]
        assert b'"width":64,"height":48' in added[0].json
        assert b'"width"' not in added[1].json, "unknown dimensions are left out"
    finally:
        store.close()


async def forget_dimensions(backend) -> None:
    """Make the images look stored before dimensions were recorded."""
    url = backend.backends.catalog_url
    if url.startswith("sqlite:"):
        with sqlite3.connect(unquote(urlsplit(url).path)) as db:
            db.execute("UPDATE images SET width = NULL, height = NULL")
        return
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("UPDATE images SET width = NULL, height = NULL")
    finally:
        await connection.close()


@pytest.mark.gen_test(timeout=60)
async def test_images_stored_before_get_their_dimensions_from_the_backfill(store, backend):
    await upload_all(store)
    twin = await store.begin_upload("pets", "twin.jpg")  # the same bytes as photo.jpg
    await twin.write(IMAGES["photo.jpg"][0])
    await twin.commit()
    await forget_dimensions(backend)
    assert set((await dimensions(store)).values()) == {(None, None)}

    # Every readable content once (twin.jpg shares photo.jpg's); the HEIC is unreadable.
    assert await store.backfill_dimensions(batch=3) == (len(IMAGES) - 1, 1)
    assert await dimensions(store) == {name: size for name, (_data, size) in IMAGES.items()}
    twin_record = await store.get_image("pets", "twin.jpg")
    assert (twin_record.width, twin_record.height) == (33, 20)
    assert await store.backfill_dimensions() == (0, 1), "running it again is harmless"


def test_a_catalog_from_before_dimensions_migrates_with_them_unknown(tmp_path):
    path = str(tmp_path / "catalog.sqlite3")
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:5]:
            db.executescript(migration)
        db.executescript(
            "INSERT INTO albums (id, name, created_at) VALUES (1, 'pets', 1.0);"
            "INSERT INTO blobs VALUES ('k1', 'aa', 10, 1);"
            "INSERT INTO images (album_id, name, size, sha256, content_type, created_at, "
            "blob_key) VALUES (1, 'cat.png', 10, 'aa', 'image/png', 2.0, 'k1');"
            "PRAGMA user_version=5;"
        )
    catalog = SqliteCatalog(path)
    try:
        import asyncio

        record = asyncio.run(catalog.find_image("pets", "cat.png"))
        assert (record.name, record.size, record.width, record.height) == (
            "cat.png",
            10,
            None,
            None,
        )
        contents = asyncio.run(catalog.without_dimensions("", 10))
        assert [c.blob_key for c in contents] == ["k1"]
    finally:
        catalog.close()


# --- the upload check: the sniffed type confirmed by the header ---------------------

HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>" * 20
FAKES = {
    "png.png": b"\x89PNG\r\n\x1a\n" + HTML,
    "ico.ico": b"\x00\x00\x01\x00\x01\x00" + HTML,
    "jpeg.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + HTML,
    "gif.gif": b"GIF89a" + HTML,
    "webp.webp": b"RIFF\x00\x10\x00\x00WEBPVP8 " + HTML,
    "tiff.tif": b"II*\x00\x08\x00\x00\x00" + HTML,
    "bmp.bmp": b"BM" + HTML,
    "avif.avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + HTML,
}


@pytest.mark.gen_test(timeout=60)
async def test_a_magic_number_followed_by_anything_else_gets_415_and_leaves_nothing(api, backend):
    assert (await api.create_album("pets")).code == 200
    for name, data in FAKES.items():
        for response in (
            await api.put_image("pets", name, data),
            await api.upload("pets", name, data),
        ):
            assert response.code == 415, (name, response.body)
            assert b"it is not an image" in response.body, response.body
    assert backend.published() == [] and backend.unfinished() == []
    assert (await api.list_images("pets")).body == b'{"imageList": []}'


@pytest.mark.gen_test(timeout=60)
async def test_bmp_and_ico_get_their_dimensions_from_their_structure(store):
    from images import ICO

    await store.create_album("pets")
    for name, data in (("old.bmp", BMP), ("fav.ico", ICO)):
        upload = await store.begin_upload("pets", name)
        await upload.write(data)
        await upload.commit()
    assert (await store.get_image("pets", "old.bmp")).width == 1
    icon = await store.get_image("pets", "fav.ico")
    assert (icon.width, icon.height) == (16, 16)


@pytest.mark.gen_test(timeout=60)
async def test_a_header_past_its_read_budget_is_accepted_with_dimensions_unknown(store, backend):
    await store.create_album("pets")
    # A 6 MiB text chunk between IHDR and the pixels: valid, if odd.
    upload = await store.begin_upload("pets", "chatty.png")
    await upload.write(png(3, 2, padding=6 * 1024 * 1024))
    record = await upload.commit()
    assert (record.width, record.height) in ((3, 2), (None, None))
