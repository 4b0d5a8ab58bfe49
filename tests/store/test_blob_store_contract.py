"""The blob store port's contract, for every blob store adapter: a writer streams in
and publishes or aborts; readers read byte ranges and outlive removal; the sweep's
listing and the unfinished uploads."""

import os
import uuid

import pytest

from store.errors import NotFound

KiB = 1024


def key() -> str:
    return uuid.uuid4().hex


async def read(reader, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in reader.chunks(start, end)])


async def keys_of(blobs) -> list[str]:
    return sorted(key for batch in [b async for b in blobs.published_keys()] for key in batch)


@pytest.mark.gen_test
async def test_a_published_blob_reads_back_whole_and_by_ranges(blobs, backend):
    data = os.urandom(700 * KiB + 13)
    name = key()
    writer = await blobs.begin(name)
    for first in range(0, len(data), 64 * KiB):
        await writer.write(data[first : first + 64 * KiB])
    assert await keys_of(blobs) == [], "invisible before publish"
    assert backend.unfinished(), "an unfinished upload is held while it streams"
    await writer.publish()
    assert await keys_of(blobs) == [name]
    assert backend.unfinished() == []
    reader = await blobs.open(name)
    try:
        assert reader.size == len(data)
        assert await read(reader, 0, len(data)) == data
        assert await read(reader, 5, 6) == data[5:6]
        assert await read(reader, 300 * KiB, len(data)) == data[300 * KiB :]
        assert await read(reader, 10, 10) == b""
        pieces = [chunk async for chunk in reader.chunks(0, len(data))]
        assert max(len(piece) for piece in pieces) <= 1024 * KiB, "read in bounded pieces"
    finally:
        reader.close()


@pytest.mark.gen_test
async def test_an_aborted_writer_leaves_nothing(blobs, backend):
    writer = await blobs.begin(key())
    await writer.write(b"x" * 100 * KiB)
    writer.abort()
    writer.abort()  # more than once is fine
    assert backend.unfinished() == []
    assert await keys_of(blobs) == []


@pytest.mark.gen_test
async def test_a_reader_outlives_the_removal_of_its_blob(blobs):
    name = key()
    writer = await blobs.begin(name)
    await writer.write(b"kept while open")
    await writer.publish()
    reader = await blobs.open(name)
    await blobs.remove([name])
    try:
        assert await read(reader, 0, reader.size) == b"kept while open"
    finally:
        reader.close()
    with pytest.raises(NotFound):
        await blobs.open(name)
    await blobs.remove([name])  # removing what is gone is fine
    assert await keys_of(blobs) == []


@pytest.mark.gen_test
async def test_unfinished_uploads_are_removed_by_the_start_up_sweep(blobs, backend):
    writers = [await blobs.begin(key()) for _ in range(3)]
    for writer in writers:
        await writer.write(b"half an image")
    assert len(backend.unfinished()) == 3
    assert await blobs.remove_unfinished() == 3
    assert backend.unfinished() == []


@pytest.mark.gen_test
async def test_the_listing_names_every_published_blob(blobs):
    names = sorted(key() for _ in range(25))
    for name in names:
        writer = await blobs.begin(name)
        await writer.write(name.encode())
        await writer.publish()
    assert await keys_of(blobs) == names
    await blobs.remove(names[:10])
    assert await keys_of(blobs) == names[10:]


@pytest.mark.gen_test
async def test_free_bytes_is_a_number_or_unknown(blobs):
    free = await blobs.free_bytes()
    assert free is None or (isinstance(free, int) and free >= 0)
