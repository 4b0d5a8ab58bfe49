"""The catalog's pages and kept counts, for every catalog adapter: keyset pages on the
name index (prefix, after, limit), each album's image count, bytes and last change
kept in the change's own transaction, and the totals /metrics reports."""

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
import uuid

import pytest
from backends import BACKENDS

from store.errors import Conflict, NotFound
from store.listing import NameRange
from store.ports import ImageRecord

# Every backend pair, postgresql+file too (as the other contract tests).
pytestmark = pytest.mark.parametrize("backend", sorted(BACKENDS), indirect=True)


def record(album: str, name: str, size: int = 10, sha: str = "") -> ImageRecord:
    sha = sha or hashlib.sha256(f"{album}/{name}".encode()).hexdigest()
    return ImageRecord(album, name, size, sha, "image/png", 1700000000.25, uuid.uuid4().hex)


def event(name: str) -> str:
    return json.dumps({"event": name, "message": name})


def added(stored: ImageRecord) -> str:
    return json.dumps({"event": "image.added", "album": stored.album, "message": stored.name})


def everything() -> NameRange:
    return NameRange.of("", None)


async def add(catalog, album: str, name: str, size: int = 10, sha: str = "") -> ImageRecord:
    result = await catalog.add_image(
        await catalog.album_id(album), record(album, name, size, sha), added
    )
    return result.record


@pytest.mark.gen_test
async def test_album_pages_follow_the_name_order_with_prefix_after_and_limit(catalog):
    names = ["a", "a b", "ab", "abc", "b", "é", "éa", "ê", "\U0010ffff", "\U0010ffffz", "z"]
    for name in random.Random(4).sample(names, len(names)):
        await catalog.create_album(name, event(name))

    async def page(prefix="", after=None, limit=None):
        return [a.name for a in await catalog.album_page(NameRange.of(prefix, after), limit)]

    assert await page() == sorted(names)
    assert await page(limit=3) == ["a", "a b", "ab"]
    assert await page(after="ab", limit=2) == ["abc", "b"]
    assert await page(after="aa") == sorted(names)[2:]
    assert await page("a") == ["a", "a b", "ab", "abc"]
    assert await page("ab") == ["ab", "abc"]
    assert await page("ab", after="ab") == ["abc"]
    assert await page("é") == ["é", "éa"]
    assert await page("\U0010ffff") == ["\U0010ffff", "\U0010ffffz"]
    assert await page("q") == []
    assert await page(after="\U0010ffffz") == []
    assert await page("a", after="b") == []


@pytest.mark.gen_test
async def test_image_pages_of_one_album_only(catalog):
    await catalog.create_album("pets", event("1"))
    await catalog.create_album("petz", event("2"))
    for name in ["dog.png", "cat.png", "cow.jpg", "ant.gif"]:
        await add(catalog, "pets", name)
    await add(catalog, "petz", "cat2.png")

    async def page(prefix="", after=None, limit=None):
        return [
            i.name for i in await catalog.image_page("pets", NameRange.of(prefix, after), limit)
        ]

    assert await page() == ["ant.gif", "cat.png", "cow.jpg", "dog.png"]
    assert await page("c") == ["cat.png", "cow.jpg"]
    assert await page(after="cat.png", limit=1) == ["cow.jpg"]
    assert await page("c", after="cow.jpg") == []
    stored = (await catalog.image_page("pets", NameRange.of("dog", None), 1))[0]
    assert stored == await catalog.find_image("pets", "dog.png"), "the whole record"
    with pytest.raises(NotFound, match="album ghost does not exist"):
        await catalog.image_page("ghost", everything(), 10)
    await catalog.create_album("empty", event("3"))
    assert await catalog.image_page("empty", everything(), 10) == []


@pytest.mark.gen_test
async def test_album_counts_and_bytes_follow_every_change(catalog):
    async def summary(name: str):
        found = [
            a for a in await catalog.album_page(NameRange.of(name, None), None) if a.name == name
        ]
        return found[0]

    before = time.time()
    await catalog.create_album("a", event("1"))
    await catalog.create_album("b", event("2"))
    created = await summary("a")
    assert (created.images, created.bytes) == (0, 0)
    assert before <= created.created_at == created.updated_at <= time.time()

    await add(catalog, "a", "x.png", 100)
    await add(catalog, "a", "y.png", 20)
    await add(catalog, "b", "x.png", 100, sha=(await catalog.find_image("a", "x.png")).sha256)
    a = await summary("a")
    assert (a.images, a.bytes) == (2, 120)
    assert a.created_at == created.created_at and a.updated_at >= created.updated_at
    assert ((await summary("b")).images, (await summary("b")).bytes) == (1, 100), (
        "shared bytes count in each"
    )

    with pytest.raises(Conflict):
        await add(catalog, "a", "x.png", 5)
    assert ((await summary("a")).images, (await summary("a")).bytes) == (2, 120), (
        "a refused add counts nothing"
    )

    stamp = (await summary("a")).updated_at
    await asyncio.sleep(0.01)
    await catalog.rename_image("a", "y.png", "z.png", event("3"))
    renamed = await summary("a")
    assert (renamed.images, renamed.bytes) == (2, 120) and renamed.updated_at > stamp

    await catalog.delete_image("a", "x.png", event("4"))
    assert ((await summary("a")).images, (await summary("a")).bytes) == (1, 20)
    with pytest.raises(NotFound):
        await catalog.delete_image("a", "x.png", event("x"))
    assert ((await summary("a")).images, (await summary("a")).bytes) == (1, 20)

    stamp = (await summary("a")).updated_at
    await asyncio.sleep(0.01)
    await catalog.rename_album("a", "c", event("5"))
    moved = await summary("c")
    assert (moved.images, moved.bytes, moved.created_at) == (1, 20, created.created_at)
    assert moved.updated_at > stamp

    totals = await catalog.totals()
    assert (totals.albums, totals.images, totals.bytes) == (2, 2, 120)
    await catalog.delete_album("c", event("6"))
    totals = await catalog.totals()
    assert (totals.albums, totals.images, totals.bytes) == (1, 1, 100)


@pytest.mark.gen_test(timeout=60)
async def test_counts_stay_exact_under_concurrent_adds_and_deletes(catalog, backend, outbox_limit):
    """Writers on two adapters (two connections; for PostgreSQL, concurrent
    transactions) add and delete images of one album at once."""
    from store.backends import open_catalog

    other = open_catalog(backend.backends.catalog_url, outbox_limit)
    try:
        await catalog.create_album("a", event("1"))

        async def work(adapter, lane: int) -> None:
            for index in range(30):
                await add(adapter, "a", f"{lane}-{index}", size=lane + 1)
            for index in range(0, 30, 3):
                await adapter.delete_image("a", f"{lane}-{index}", event("d"))

        await asyncio.gather(*(work(catalog if lane % 2 else other, lane) for lane in range(4)))
    finally:
        other.close()
    summary = (await catalog.album_page(everything(), None))[0]
    assert summary.images == 4 * 20
    assert summary.bytes == sum(20 * (lane + 1) for lane in range(4))
    assert len(await catalog.image_page("a", everything(), None)) == 80


@pytest.mark.gen_test(timeout=300)
async def test_walks_of_10000_images_skip_none_that_existed_throughout(catalog):
    """Keyset pages of 1000, then of 7, over 10,000 images while others are added and
    deleted between pages: every name that existed throughout comes once, in order."""
    await catalog.create_album("big", event("1"))
    album_id = await catalog.album_id("big")
    names = [f"img-{index:05d}.png" for index in range(10_000)]
    await asyncio.gather(
        *(catalog.add_image(album_id, record("big", name), added) for name in names)
    )
    rng = random.Random(15)
    extra = 0
    for page_size in (1000, 7):
        present = [image.name for image in await catalog.image_page("big", everything(), None)]
        doomed = set(rng.sample(present, 300))
        steady = [name for name in present if name not in doomed]
        seen: list[str] = []
        after = None
        while True:
            page = await catalog.image_page("big", NameRange.of("", after), page_size + 1)
            seen += [image.name for image in page[:page_size]]
            if len(page) <= page_size:
                break
            after = page[page_size - 1].name
            # Between pages: an image deleted anywhere, one added anywhere (before or
            # after the cursor).
            if doomed:
                await catalog.delete_image("big", doomed.pop(), event("d"))
            extra += 1
            name = f"img-{rng.randrange(10_000):05d}-{extra}.png"
            await catalog.add_image(album_id, record("big", name), added)
        assert seen == sorted(seen) and len(set(seen)) == len(seen), "in order, each once"
        assert set(steady) <= set(seen), "no name that existed throughout is skipped"


@pytest.mark.gen_test(timeout=60)
async def test_the_counts_migration_fills_them_from_what_is_there(backend, outbox_limit):
    """A catalog from before the kept counts: its albums' counts, bytes and last
    change are filled from their images by the migration."""
    from store import postgres_catalog, sqlite_catalog
    from store.backends import local_path, open_catalog

    url = backend.backends.catalog_url
    rows = [
        "INSERT INTO albums (id, name, created_at) VALUES (1, 'a', 100), (2, 'b', 200)",
        "INSERT INTO blobs (key, sha256, size, refs) VALUES ('k1', 's1', 10, 2), ('k2', 's2', 7, 1)",
        "INSERT INTO images (album_id, name, size, sha256, content_type, created_at, blob_key) "
        "VALUES (1, 'x', 10, 's1', 'image/png', 150, 'k1'), (1, 'y', 7, 's2', 'image/png', 300, 'k2'), "
        "(2, 'z', 10, 's1', 'image/png', 120, 'k1')",
    ]
    if url.startswith("sqlite"):
        import sqlite3

        path = local_path(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        before = len(sqlite_catalog.MIGRATIONS) - 1
        with contextlib.closing(sqlite3.connect(path)) as db:
            for migration in sqlite_catalog.MIGRATIONS[:before]:
                db.executescript(migration)
            for statement in rows:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={before}")
            db.commit()
    else:
        import asyncpg

        before = len(postgres_catalog.MIGRATIONS) - 1
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for number, migration in enumerate(postgres_catalog.MIGRATIONS[:before], 1):
                await connection.execute(migration)
                await connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", number
                )
            for statement in rows:
                await connection.execute(statement)
        finally:
            await connection.close()
    catalog = open_catalog(url, outbox_limit)
    try:
        albums = {album.name: album for album in await catalog.album_page(everything(), None)}
    finally:
        catalog.close()
    assert (albums["a"].images, albums["a"].bytes, albums["a"].updated_at) == (2, 17, 300)
    assert (albums["b"].images, albums["b"].bytes, albums["b"].updated_at) == (1, 10, 200)
    assert albums["a"].created_at == 100
