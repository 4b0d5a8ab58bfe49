"""The catalog port's contract, for every catalog adapter: albums, images, shared
blobs (identical bytes stored once) and the outbox, each mutation with its event."""

import asyncio
import dataclasses
import json
import uuid

import pytest
from backends import BACKENDS

from store.backends import open_catalog
from store.errors import Conflict, NotFound
from store.ports import ImageRecord

# The contract tests run on every backend pair, postgresql+file too (the HTTP suite
# runs on tests/backends.py's HTTP_BACKENDS).
pytestmark = pytest.mark.parametrize("backend", sorted(BACKENDS), indirect=True)


def record(album: str, name: str, sha: str = "a" * 64, size: int = 10) -> ImageRecord:
    return ImageRecord(album, name, size, sha, "image/png", 1700000000.5, uuid.uuid4().hex)


def event(name: str) -> str:
    return json.dumps({"event": name, "message": name})


def added(stored: ImageRecord) -> str:
    return json.dumps({"event": "image.added", "album": stored.album, "message": stored.name})


@pytest.mark.gen_test
async def test_albums_are_created_listed_renamed_and_deleted(catalog):
    assert await catalog.album_names() == []
    await catalog.create_album("b", event("1"))
    await catalog.create_album("a", event("2"))
    assert await catalog.album_names() == ["a", "b"]
    with pytest.raises(Conflict, match="album a already exists"):
        await catalog.create_album("a", event("x"))
    await catalog.rename_album("a", "c", event("3"))
    assert await catalog.album_names() == ["b", "c"]
    with pytest.raises(Conflict, match="album b already exists"):
        await catalog.rename_album("c", "b", event("x"))
    with pytest.raises(NotFound, match="album a does not exist"):
        await catalog.rename_album("a", "d", event("x"))
    assert await catalog.delete_album("c", event("4")) == []
    with pytest.raises(NotFound):
        await catalog.delete_album("c", event("x"))
    assert await catalog.album_names() == ["b"]
    # Only the successful mutations recorded their events, in order.
    pending = await catalog.pending_events(0, 100)
    assert [json.loads(e.json)["message"] for e in pending] == ["1", "2", "3", "4"]


@pytest.mark.gen_test
async def test_album_ids_are_never_reused(catalog):
    await catalog.create_album("a", event("1"))
    first = await catalog.album_id("a")
    await catalog.delete_album("a", event("2"))
    await catalog.create_album("a", event("3"))
    assert await catalog.album_id("a") != first
    with pytest.raises(NotFound):
        await catalog.album_id("ghost")


@pytest.mark.gen_test
async def test_images_are_added_found_renamed_and_deleted(catalog):
    await catalog.create_album("pets", event("1"))
    album_id = await catalog.album_id("pets")
    cat = record("pets", "cat.png", "c" * 64)
    result = await catalog.add_image(album_id, cat, added)
    assert result.record == cat and result.redundant_blob is None
    assert await catalog.image_names("pets") == ["cat.png"]
    assert await catalog.image_exists("pets", "cat.png")
    assert not await catalog.image_exists("pets", "dog.png")
    assert await catalog.find_image("pets", "cat.png") == cat
    with pytest.raises(Conflict, match="image cat.png already exists in album pets"):
        await catalog.add_image(album_id, record("pets", "cat.png", "d" * 64), added)
    await catalog.rename_image("pets", "cat.png", "kitty.png", event("2"))
    assert (await catalog.find_image("pets", "kitty.png")).blob_key == cat.blob_key
    with pytest.raises(NotFound, match="image cat.png does not exist in album pets"):
        await catalog.find_image("pets", "cat.png")
    with pytest.raises(NotFound, match="album ghost does not exist"):
        await catalog.find_image("ghost", "cat.png")
    with pytest.raises(NotFound, match="album ghost does not exist"):
        await catalog.image_names("ghost")
    assert await catalog.delete_image("pets", "kitty.png", event("3")) == cat.blob_key
    assert await catalog.image_names("pets") == []
    assert await catalog.unreferenced([cat.blob_key]) == [cat.blob_key]


@pytest.mark.gen_test
async def test_an_image_lands_in_its_album_under_its_current_name(catalog):
    await catalog.create_album("pets", event("1"))
    album_id = await catalog.album_id("pets")
    await catalog.rename_album("pets", "animals", event("2"))
    result = await catalog.add_image(album_id, record("pets", "cat.png"), added)
    assert result.record.album == "animals"
    last = (await catalog.pending_events(0, 10))[-1]
    assert json.loads(last.json)["album"] == "animals", "the event carries the current name"
    await catalog.delete_album("animals", event("3"))
    with pytest.raises(NotFound):
        await catalog.add_image(album_id, record("pets", "dog.png", "d" * 64), added)


@pytest.mark.gen_test
async def test_identical_bytes_share_one_blob_until_the_last_image_goes(catalog):
    await catalog.create_album("a", event("1"))
    await catalog.create_album("b", event("2"))
    first = record("a", "x.png", "f" * 64)
    second = record("b", "y.png", "f" * 64)
    assert (
        await catalog.add_image(await catalog.album_id("a"), first, added)
    ).redundant_blob is None
    result = await catalog.add_image(await catalog.album_id("b"), second, added)
    assert result.record.blob_key == first.blob_key, "the same bytes point at one blob"
    assert result.redundant_blob == second.blob_key, "the new copy is the caller's to remove"
    assert await catalog.unreferenced([first.blob_key, second.blob_key]) == [second.blob_key]
    assert await catalog.delete_image("a", "x.png", event("3")) is None, "still referenced"
    assert (await catalog.find_image("b", "y.png")).blob_key == first.blob_key
    assert await catalog.delete_album("b", event("4")) == [first.blob_key]
    assert await catalog.unreferenced([first.blob_key]) == [first.blob_key]


@pytest.mark.gen_test
async def test_a_refused_image_leaves_no_blob_reference(catalog):
    await catalog.create_album("a", event("1"))
    album_id = await catalog.album_id("a")
    kept = record("a", "x.png", "1" * 64)
    await catalog.add_image(album_id, kept, added)
    refused = record("a", "x.png", "2" * 64)
    with pytest.raises(Conflict):
        await catalog.add_image(album_id, refused, added)
    assert await catalog.unreferenced([refused.blob_key]) == [refused.blob_key]
    assert len(await catalog.pending_events(0, 10)) == 2


@pytest.mark.gen_test
async def test_deleting_an_album_frees_only_its_unshared_blobs(catalog):
    await catalog.create_album("a", event("1"))
    await catalog.create_album("b", event("2"))
    a, b = await catalog.album_id("a"), await catalog.album_id("b")
    only_a = record("a", "1.png", "1" * 64)
    shared_a = record("a", "2.png", "2" * 64)
    await catalog.add_image(a, only_a, added)
    await catalog.add_image(a, shared_a, added)
    await catalog.add_image(b, record("b", "2.png", "2" * 64), added)
    assert sorted(await catalog.delete_album("a", event("3"))) == [only_a.blob_key]
    assert (await catalog.find_image("b", "2.png")).blob_key == shared_a.blob_key


@pytest.mark.gen_test
async def test_the_outbox_gives_rising_ids_in_commit_order_and_forgets_what_was_sent(catalog):
    for index in range(10):
        await catalog.create_album(f"a{index}", event(str(index)))
    pending = await catalog.pending_events(0, 4)
    assert [json.loads(e.json)["message"] for e in pending] == ["0", "1", "2", "3"]
    ids = [e.id for e in pending]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [json.loads(e.json)["id"] for e in pending] == ids
    assert [e.sentence for e in pending] == [b"0", b"1", b"2", b"3"]
    rest = await catalog.pending_events(ids[-1], 100)
    assert [json.loads(e.json)["message"] for e in rest] == [str(i) for i in range(4, 10)]
    assert rest[0].id > ids[-1]
    assert await catalog.events_pending() == 10
    await catalog.forget_events(ids[-1])
    assert await catalog.events_pending() == 6
    assert (await catalog.pending_events(0, 1))[0].id == rest[0].id
    await catalog.create_album("later", event("later"))
    newest = (await catalog.pending_events(rest[-1].id, 10))[0]
    assert newest.id > rest[-1].id
    assert await catalog.events_dropped() == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("outbox_limit", [3])
async def test_a_full_outbox_drops_the_oldest_and_counts_them(catalog, outbox_limit):
    for index in range(8):
        await catalog.create_album(f"a{index}", event(str(index)))
    pending = await catalog.pending_events(0, 100)
    assert [json.loads(e.json)["message"] for e in pending] == ["5", "6", "7"]
    assert await catalog.events_pending() == 3
    assert await catalog.events_dropped() == 5


@pytest.mark.gen_test
@pytest.mark.parametrize("outbox_limit", [None])
async def test_with_the_outbox_off_nothing_is_recorded(catalog, outbox_limit):
    await catalog.create_album("a", event("1"))
    assert await catalog.pending_events(0, 10) == []
    assert await catalog.events_pending() == 0


@pytest.mark.gen_test
async def test_the_change_token_moves_with_every_change(catalog):
    seen = [await catalog.change_token()]

    async def changed() -> None:
        token = await catalog.change_token()
        assert token not in seen
        seen.append(token)

    await catalog.create_album("a", event("1"))
    await changed()
    album_id = await catalog.album_id("a")
    await catalog.add_image(album_id, record("a", "x.png"), added)
    await changed()
    await catalog.rename_image("a", "x.png", "y.png", event("2"))
    await changed()
    await catalog.delete_image("a", "y.png", event("3"))
    await changed()
    await catalog.rename_album("a", "b", event("4"))
    await changed()
    await catalog.delete_album("b", event("5"))
    await changed()
    assert seen[-1] == await catalog.change_token(), "steady while nothing changes"


@pytest.mark.gen_test
async def test_dimensions_are_kept_with_the_image_and_backfilled_by_content(catalog):
    await catalog.create_album("a", event("1"))
    album_id = await catalog.album_id("a")
    sized = dataclasses.replace(record("a", "sized.png", "a" * 64), width=640, height=480)
    assert (await catalog.add_image(album_id, sized, added)).record == sized
    assert await catalog.find_image("a", "sized.png") == sized
    # Images stored without dimensions (older ones, or unreadable by libvips).
    for name, sha in (("b1.png", "b" * 64), ("b2.png", "b" * 64), ("c.bmp", "c" * 64)):
        await catalog.add_image(album_id, record("a", name, sha), added)
    unsized = await catalog.find_image("a", "b1.png")
    assert (unsized.width, unsized.height) == (None, None)

    contents = await catalog.without_dimensions("", 10)
    assert [(c.sha256, c.content_type) for c in contents] == [
        ("b" * 64, "image/png"),
        ("c" * 64, "image/png"),
    ]
    assert contents[0].blob_key == unsized.blob_key
    assert [c.sha256 for c in await catalog.without_dimensions("", 1)] == ["b" * 64]
    assert [c.sha256 for c in await catalog.without_dimensions("b" * 64, 10)] == ["c" * 64]

    token = await catalog.change_token()
    events_before = len(await catalog.pending_events(0, 100))
    await catalog.record_dimensions("b" * 64, 3, 4)
    for name in ("b1.png", "b2.png"):
        found = await catalog.find_image("a", name)
        assert (found.width, found.height) == (3, 4)
    assert await catalog.change_token() != token, "lists with dimensions must see the change"
    assert len(await catalog.pending_events(0, 100)) == events_before, "no event for it"
    # Recorded dimensions are never overwritten.
    await catalog.record_dimensions("a" * 64, 1, 1)
    assert await catalog.find_image("a", "sized.png") == sized
    assert [c.sha256 for c in await catalog.without_dimensions("", 10)] == ["c" * 64]


@pytest.mark.gen_test(timeout=60)
async def test_a_reader_of_the_outbox_skips_no_event_while_many_writers_commit(
    catalog, backend, outbox_limit
):
    """Writers on several connections (a second catalog adapter over the same backend
    too) commit concurrently; a reader that always asks for ids above the last one it
    saw gets every event once, in rising order: no event commits below an id already
    handed out."""
    other = open_catalog(backend.backends.catalog_url, outbox_limit)
    seen: list[int] = []
    messages: list[str] = []
    writing = True

    async def write(adapter, prefix: str) -> None:
        for index in range(40):
            await adapter.create_album(f"{prefix}-{index}", event(f"{prefix}-{index}"))

    async def read() -> None:
        while writing or await catalog.events_pending() > len(seen):
            for found in await catalog.pending_events(seen[-1] if seen else 0, 50):
                seen.append(found.id)
                messages.append(json.loads(found.json)["message"])
            await asyncio.sleep(0)

    try:
        reader = asyncio.ensure_future(read())
        await asyncio.gather(*(write(catalog if n % 2 else other, f"w{n}") for n in range(6)))
        writing = False
        await asyncio.wait_for(reader, 30)
    finally:
        other.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen), "rising, each once"
    assert sorted(messages) == sorted(f"w{n}-{i}" for n in range(6) for i in range(40))
    assert await catalog.events_pending() == 240
