"""The blob store port's contract, for every blob store adapter: a writer streams in
and publishes or aborts; readers read byte ranges and outlive removal; the sweep's
listing and the unfinished uploads."""

import asyncio
import os
import uuid

import pytest
from backends import BACKENDS

from store.errors import NotFound

# The contract tests run on every backend pair, postgresql+file too (the HTTP suite
# runs on tests/backends.py's HTTP_BACKENDS).
pytestmark = pytest.mark.parametrize("backend", sorted(BACKENDS), indirect=True)

KiB = 1024
MiB = 1024 * KiB
# Over two of the S3 adapter's parts: S3 holds it as a multipart upload while it streams.
LARGE = 12 * MiB + 7


def key() -> str:
    return uuid.uuid4().hex


async def read(reader, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in reader.chunks(start, end)])


async def keys_of(blobs) -> list[str]:
    return sorted(key for batch in [b async for b in blobs.published_keys()] for key in batch)


async def until(condition, timeout: float = 20.0) -> None:
    """Until ``condition()`` holds (an S3 abort completes after abort() returns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def stream(writer, data: bytes, piece: int = 256 * KiB) -> None:
    for first in range(0, len(data), piece):
        await writer.write(data[first : first + piece])


@pytest.mark.gen_test
async def test_a_published_blob_reads_back_whole_and_by_ranges(blobs, backend):
    data = os.urandom(700 * KiB + 13)
    name = key()
    writer = await blobs.begin(name)
    for first in range(0, len(data), 64 * KiB):
        await writer.write(data[first : first + 64 * KiB])
    assert await keys_of(blobs) == [], "invisible before publish"
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


@pytest.mark.gen_test(timeout=60)
async def test_a_large_blob_streams_as_an_unfinished_upload_then_reads_back(blobs, backend):
    data = os.urandom(LARGE)
    name = key()
    writer = await blobs.begin(name)
    await stream(writer, data)
    assert backend.unfinished(), "an unfinished upload is held while it streams"
    assert await keys_of(blobs) == [] and backend.published() == [], "invisible before publish"
    await writer.publish()
    assert await keys_of(blobs) == [name]
    assert backend.unfinished() == []
    assert backend.blob_bytes() == [data]
    reader = await blobs.open(name)
    try:
        assert reader.size == len(data)
        assert await read(reader, 0, len(data)) == data
        assert await read(reader, 7 * MiB - 3, 11 * MiB) == data[7 * MiB - 3 : 11 * MiB]
    finally:
        reader.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("size", [100 * KiB, LARGE], ids=["small", "large"])
async def test_an_aborted_writer_leaves_nothing(blobs, backend, size):
    writer = await blobs.begin(key())
    await stream(writer, b"x" * size)
    writer.abort()
    writer.abort()  # more than once is fine
    await until(lambda: backend.unfinished() == [])
    assert await keys_of(blobs) == []
    assert backend.published() == []


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


@pytest.mark.gen_test(timeout=60)
async def test_unfinished_uploads_are_removed_by_the_start_up_sweep_or_left_to_s3(blobs, backend):
    """Files: the start-up sweep removes them. S3: none is removed, as another instance
    may be writing it: the bucket's lifecycle rule aborts them (README)."""
    writers = [await blobs.begin(key()) for _ in range(3)]
    for writer in writers:
        await stream(writer, os.urandom(6 * MiB))  # over one S3 part: a multipart upload
    assert len(backend.unfinished()) == 3
    if backend.name.endswith("+s3"):
        assert await blobs.remove_unfinished() == 0
        assert len(backend.unfinished()) == 3
        for writer in writers:
            writer.abort()
        await until(lambda: backend.unfinished() == [])
    else:
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
