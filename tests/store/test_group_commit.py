"""Writes that reach a catalog together (group commit in the SQLite adapter: one
transaction, one fsync for all of them) behave each as if it had committed alone: its
own result or refusal, its own event in the outbox in commit order with no gap, and a
failing member leaves nothing of itself and fails none of the others. Over every
catalog adapter; the SQLite one must also really batch them."""

import asyncio
import json
import sqlite3
import uuid

import pytest

from store.errors import Conflict, NotFound
from store.ports import ImageRecord
from store.sqlite_catalog import SqliteCatalog


def record(album: str, name: str, sha: str | None = None) -> ImageRecord:
    sha = sha or uuid.uuid4().hex * 2
    return ImageRecord(album, name, 10, sha, "image/png", 1700000000.5, uuid.uuid4().hex)


def added(stored: ImageRecord) -> str:
    return json.dumps({"event": "image.added", "album": stored.album, "message": stored.name})


async def outcomes(calls) -> list[object]:
    """Every call started at once; each one's result or exception."""
    return await asyncio.gather(*calls, return_exceptions=True)


async def events(catalog) -> list[tuple[int, str]]:
    return [(e.id, json.loads(e.json)["message"]) for e in await catalog.pending_events(0, 1000)]


@pytest.mark.gen_test(timeout=60)
async def test_uploads_that_finish_together_each_get_their_own_outcome(catalog):
    await catalog.create_album("a", json.dumps({"message": "a"}))
    await catalog.create_album("gone", json.dumps({"message": "gone"}))
    album_id, gone_id = await catalog.album_id("a"), await catalog.album_id("gone")
    await catalog.delete_album("gone", json.dumps({"message": "gone deleted"}))
    await catalog.add_image(album_id, record("a", "taken.png"), added)
    shared = "5" * 64  # two of them hold the same bytes: one blob, two references
    calls, expected, records = [], [], []
    for n in range(60):
        if n % 10 == 3:  # a name taken already
            records.append(record("a", "taken.png"))
            expected.append(Conflict)
        elif n % 10 == 7:  # into an album deleted meanwhile
            records.append(record("gone", f"{n}.png"))
            expected.append(NotFound)
        else:
            records.append(record("a", f"{n}.png", shared if n in (0, 1) else None))
            expected.append(None)
        calls.append(catalog.add_image(gone_id if n % 10 == 7 else album_id, records[-1], added))
    results = await outcomes(calls)
    for n, (result, wanted) in enumerate(zip(results, expected, strict=True)):
        if wanted is None:
            assert not isinstance(result, BaseException), f"upload {n}: {result!r}"
        else:
            assert isinstance(result, wanted), f"upload {n}: {result!r}, not {wanted.__name__}"
    stored = [f"{n}.png" for n, wanted in enumerate(expected) if wanted is None]
    assert await catalog.image_names("a") == sorted([*stored, "taken.png"])
    assert [results[0].redundant_blob, results[1].redundant_blob].count(None) == 1
    # Each stored image's event once; ids rising with no gap (commit order).
    recorded = await events(catalog)
    ids = [event_id for event_id, _ in recorded]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    messages = [message for _, message in recorded]
    assert messages[:4] == ["a", "gone", "gone deleted", "taken.png"]
    assert sorted(messages[4:]) == sorted(stored)
    # A refused upload's blob is referenced by nothing (the store removes it).
    refused = [rec.blob_key for rec, wanted in zip(records, expected, strict=True) if wanted]
    assert await catalog.unreferenced(refused) == refused


@pytest.mark.gen_test(timeout=60)
async def test_a_member_failing_midway_leaves_nothing_and_fails_no_other(catalog):
    """The event of one upload cannot be made after its rows are written: its rows go,
    the uploads committed beside it stay, each with its event."""
    await catalog.create_album("a", json.dumps({"message": "a"}))
    album_id = await catalog.album_id("a")

    def broken(stored: ImageRecord) -> str:
        raise RuntimeError("no event for this one")

    records = [record("a", f"{n}.png") for n in range(20)]
    results = await outcomes(
        catalog.add_image(album_id, rec, broken if n == 5 else added)
        for n, rec in enumerate(records)
    )
    assert isinstance(results[5], RuntimeError)
    assert all(not isinstance(r, BaseException) for n, r in enumerate(results) if n != 5)
    assert "5.png" not in await catalog.image_names("a")
    assert len(await catalog.image_names("a")) == 19
    assert await catalog.unreferenced([records[5].blob_key]) == [records[5].blob_key]
    messages = [m for _, m in await events(catalog)]
    assert messages[0] == "a"
    assert sorted(messages[1:]) == sorted(f"{n}.png" for n in range(20) if n != 5)


@pytest.mark.gen_test(timeout=60)
async def test_sqlite_batches_every_kind_of_write_in_the_order_they_were_made(tmp_path):
    """Album and image writes interleaved, all at once: the end state and the events
    are those of running them one by one in the order they were made (each depends on
    the one before)."""
    catalog = SqliteCatalog(str(tmp_path / "catalog.sqlite3"), outbox_limit=1000)
    try:
        await check_order(catalog)
        assert catalog._batch.writes > catalog._batch.batches
    finally:
        catalog.close()


async def check_order(catalog) -> None:
    await catalog.create_album("base", json.dumps({"message": "base"}))
    base = await catalog.album_id("base")
    calls = []
    for n in range(15):
        calls.append(catalog.create_album(f"al{n}", json.dumps({"message": f"create al{n}"})))
        calls.append(catalog.add_image(base, record("base", f"{n}.png"), added))
        calls.append(
            catalog.rename_album(f"al{n}", f"bl{n}", json.dumps({"message": f"rename al{n}"}))
        )
        calls.append(
            catalog.rename_image("base", f"{n}.png", f"r{n}.png", json.dumps({"message": f"r{n}"}))
        )
    results = await outcomes(calls)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert await catalog.album_names() == sorted(["base", *(f"bl{n}" for n in range(15))])
    assert await catalog.image_names("base") == sorted(f"r{n}.png" for n in range(15))
    messages = [m for _, m in await events(catalog)]
    assert messages == ["base"] + [
        m for n in range(15) for m in (f"create al{n}", f"{n}.png", f"rename al{n}", f"r{n}")
    ]


@pytest.mark.gen_test(timeout=60)
async def test_the_sqlite_catalog_commits_concurrent_writes_in_batches(tmp_path):
    catalog = SqliteCatalog(str(tmp_path / "catalog.sqlite3"), outbox_limit=1000)
    try:
        await catalog.create_album("a", json.dumps({"message": "a"}))
        album_id = await catalog.album_id("a")
        before = catalog._batch.batches
        results = await outcomes(
            catalog.add_image(album_id, record("a", f"{n}.png"), added) for n in range(64)
        )
        assert not [r for r in results if isinstance(r, BaseException)]
        transactions = catalog._batch.batches - before
        assert transactions < 64 / 4, f"{transactions} transactions for 64 concurrent writes"
        # Durable: a new connection (another process's view) sees every one of them.
        check = sqlite3.connect(tmp_path / "catalog.sqlite3")
        try:
            assert check.execute("SELECT count(*) FROM images").fetchone()[0] == 64
        finally:
            check.close()
    finally:
        catalog.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_storage_failure_in_one_member_fails_only_that_member(tmp_path):
    """SQLite itself refuses one member (a value over its length limit): the batch is
    rolled back and each member runs again alone; only that one fails."""
    catalog = SqliteCatalog(str(tmp_path / "catalog.sqlite3"), outbox_limit=1000)
    try:
        await catalog.create_album("a", json.dumps({"message": "a"}))
        album_id = await catalog.album_id("a")
        catalog._writer.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000)

        def huge(stored: ImageRecord) -> str:
            return json.dumps({"message": "x" * 200_000})

        results = await outcomes(
            catalog.add_image(album_id, record("a", f"{n}.png"), huge if n == 7 else added)
            for n in range(16)
        )
        assert isinstance(results[7], sqlite3.DataError)
        assert all(not isinstance(r, BaseException) for n, r in enumerate(results) if n != 7)
        assert await catalog.image_names("a") == sorted(f"{n}.png" for n in range(16) if n != 7)
        messages = [m for _, m in await events(catalog)]
        assert messages == ["a"] + [f"{n}.png" for n in range(16) if n != 7]
    finally:
        catalog.close()
