"""Dimensions on record: each upload's width and height, read from its header by
libvips (no decode), kept in the catalog, carried by the image.added event; images
stored before get them from the backfill."""

import sqlite3
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from images import BMP, animated_gif, png, real

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
    "old.bmp": (BMP, (None, None)),  # libvips does not read BMP: unknown
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
        for name, data in (("cat.jpg", real(".jpg", 64, 48)), ("old.bmp", BMP)):
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

    # Every readable content once (twin.jpg shares photo.jpg's); the BMP is unreadable.
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
