"""The S3 blob store (scale-out): ``IMAGESTORE_BLOBS=s3://bucket/prefix``.

Any S3-compatible object store (AWS S3, Ceph RGW, SeaweedFS, Garage, MinIO...), over
obstore (Rust, async). Its settings are the AWS SDKs' own environment variables, read
by obstore: ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``...; an ``http://`` endpoint is
allowed because it was given (no TLS to a store on loopback or a private network).

Layout: ``<prefix>/<key>``, one object per blob, keys made by the store (uuid4 hex).

- An upload is buffered up to one part; a blob that fits is sent by one PUT at
  publish. A bigger one becomes a multipart upload as it arrives (parts of
  PART_BYTES, at most PARTS_IN_FLIGHT sent at once, so an upload holds at most a few
  parts in memory), completed at publish, aborted by abort.
- Objects are visible only once published, and clients see them only once the catalog
  row commits (the store publishes, then records): an object no row references is an
  upload between those two steps on some instance, or an orphan a crash left. The
  sweep cannot tell them apart by name, so ``published_keys`` lists only objects older
  than ``sweep_min_age`` (an hour by default; ``s3://bucket/prefix?sweep_min_age=S``).
- Unfinished multipart uploads (a worker killed mid-upload) cannot be listed through
  obstore and may belong to another instance: a bucket lifecycle rule aborts them
  (AbortIncompleteMultipartUpload, README); ``remove_unfinished`` removes none.

obstore's runtime (tokio threads) does not survive fork(): a store is made in the
process that uses it, after the service forks its workers.
"""

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from store.errors import NotFound, StorageUnavailable

log = logging.getLogger("imagestore.store")

# S3's smallest part (but the last); a few of them per upload in memory at most.
PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
# Chunks of the request body waiting for obstore to take them (of ~256 KiB each).
QUEUED_CHUNKS = 4
READ_CHUNK_BYTES = 256 * 1024
DEFAULT_SWEEP_MIN_AGE_SECONDS = 3600.0
_KEY = re.compile(r"[0-9a-f]{32}")


class _Aborted(Exception):
    """Raised into obstore's read of an upload's chunks: it aborts the multipart upload."""


# What obstore raises: its own errors, and builtin ones for some (FileNotFoundError
# for a missing object, PermissionError, TimeoutError, ConnectionError...).
S3_ERRORS = (BaseError, OSError)
MISSING = (NotFoundError, FileNotFoundError)

_END = object()
_ABORT = object()


def unavailable(err: BaseException) -> StorageUnavailable:
    """The domain error for a failed S3 call, a sentence without obstore's debug dump."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return StorageUnavailable(f"the blob store is unavailable: {first_line[:300]}")


def parse_s3_url(url: str) -> tuple[str, str, float]:
    """(bucket, prefix, sweep_min_age) of ``s3://bucket/prefix?sweep_min_age=S``;
    ValueError for a URL without a bucket or with an unknown parameter."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"{url!r} names no bucket: s3://bucket/prefix")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"sweep_min_age"})
    if unknown:
        raise ValueError(f"{url!r}: unknown parameter {unknown[0]!r} (known: sweep_min_age)")
    age = DEFAULT_SWEEP_MIN_AGE_SECONDS
    if "sweep_min_age" in options:
        try:
            age = float(options["sweep_min_age"][-1])
        except ValueError:
            raise ValueError(f"{url!r}: sweep_min_age must be a number of seconds") from None
        if not age >= 0:
            raise ValueError(f"{url!r}: sweep_min_age must be a number of seconds")
    return parts.netloc, parts.path.strip("/"), age


def make_client(bucket: str, prefix: str) -> S3Store:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
    return S3Store(
        bucket,
        prefix=prefix or None,
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=5),
            # A download streams for as long as its client reads: no overall limit,
            # but a stalled store is noticed.
            "timeout": timedelta(hours=6),
            "read_timeout": timedelta(seconds=30),
        },
        # Fail within seconds when the store is down (the client gets a 503), rather
        # than retrying for obstore's default three minutes.
        retry_config={
            "max_retries": 2,
            "retry_timeout": timedelta(seconds=10),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )


class S3BlobWriter:
    """One blob arriving: a buffer up to one part, then a multipart upload that obstore
    pulls chunks into (``_chunks``) as fast as S3 takes them."""

    def __init__(self, client: S3Store, key: str, running: "set[S3BlobWriter]") -> None:
        self._client = client
        self._key = key
        self._running = running
        running.add(self)
        self._buffer = bytearray()
        self._queue: asyncio.Queue[Any] | None = None
        self._upload: asyncio.Future[Any] | None = None
        self._closed = False

    async def write(self, chunk: bytes) -> None:
        if self._closed:
            raise StorageUnavailable("the upload is closed")
        if self._queue is None:
            self._buffer += chunk
            if len(self._buffer) > PART_BYTES:
                self._start_multipart()
            return
        await self._hand_over(chunk)

    def _start_multipart(self) -> None:
        self._queue = asyncio.Queue(QUEUED_CHUNKS)
        self._queue.put_nowait(bytes(self._buffer))
        self._buffer = bytearray()
        self._upload = asyncio.ensure_future(
            obstore.put_async(
                self._client,
                self._key,
                _Chunks(self._queue),
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        )
        # Abort leaves it failed and unawaited: its exception is expected.
        self._upload.add_done_callback(_retrieve)

    async def _hand_over(self, item: object) -> None:
        """Queue ``item`` for obstore; wait while the queue is full (so a fast client
        waits for S3), but not once the upload has failed."""
        assert self._queue is not None and self._upload is not None
        if self._upload.done():
            raise self._failure()
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        putting = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait([putting, self._upload], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not putting.done():
                putting.cancel()
                with suppress(asyncio.CancelledError):
                    await putting
        if not putting.done() or putting.cancelled():
            raise self._failure()

    def _failure(self) -> StorageUnavailable:
        assert self._upload is not None
        err = self._upload.exception() if self._upload.done() else None
        return unavailable(err) if err else StorageUnavailable("the upload was aborted")

    async def publish(self) -> None:
        if self._closed:
            raise StorageUnavailable("the upload is closed")
        self._closed = True
        try:
            if self._upload is None:
                data, self._buffer = bytes(self._buffer), bytearray()
                await obstore.put_async(self._client, self._key, data, use_multipart=False)
                return
            await self._hand_over(_END)
            await self._upload
        except S3_ERRORS as err:
            raise unavailable(err) from err
        except BaseException:
            self._abort_upload()
            raise
        finally:
            self._running.discard(self)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer = bytearray()
            self._abort_upload()
            self._running.discard(self)

    def _abort_upload(self) -> None:
        if self._queue is not None and self._upload is not None and not self._upload.done():
            while not self._queue.empty():  # what was queued will not be sent
                self._queue.get_nowait()
            self._queue.put_nowait(_ABORT)

    def settled(self) -> "asyncio.Future[Any] | None":
        """The multipart upload while obstore still runs it (for close)."""
        return self._upload if self._upload is not None and not self._upload.done() else None


class _Chunks:
    """What obstore reads an upload from: the queued chunks, until the end or an abort.
    (A class rather than an async generator: obstore asks for each chunk from its own
    thread, where no event loop would finalize a generator left suspended.)"""

    def __init__(self, queue: "asyncio.Queue[Any]") -> None:
        self._queue = queue

    def __aiter__(self) -> "_Chunks":
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if item is _ABORT:
            raise _Aborted("the upload was aborted")
        return item  # type: ignore[no-any-return]


def _retrieve(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


class S3BlobReader:
    """A blob's bytes. The GET starts at open (so a blob removed meanwhile still
    streams, as far as the store serves an open response); a range that does not start
    at the beginning gets its own ranged GET."""

    def __init__(self, client: S3Store, key: str, result: Any) -> None:
        self._client = client
        self._key = key
        self._opened: Any = result
        self.size: int = int(result.meta["size"])

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        if start >= end:
            return
        result, self._opened = self._opened, None
        try:
            if result is None or start != 0:
                result = await obstore.get_async(
                    self._client, self._key, options={"range": (start, end)}
                )
            position = start
            async for piece in result.stream(min_chunk_size=READ_CHUNK_BYTES):
                data = bytes(piece)  # one copy, out of obstore's buffer
                if len(data) > end - position:
                    data = data[: end - position]
                yield data
                position += len(data)
                if position >= end:
                    return
        except MISSING:
            raise NotFound("the image's bytes are gone") from None
        except S3_ERRORS as err:
            raise unavailable(err) from err
        if position < end:
            raise StorageUnavailable("the image's object is shorter than its catalog record")

    def close(self) -> None:
        self._opened = None


class S3BlobStore:
    def __init__(self, url: str) -> None:
        self.bucket, self.prefix, self.sweep_min_age = parse_s3_url(url)
        self._client: S3Store | None = None
        self._writers: set[S3BlobWriter] = set()

    @property
    def client(self) -> S3Store:
        # Made on first use, in the process (worker) that uses it: see the module's doc.
        if self._client is None:
            try:
                self._client = make_client(self.bucket, self.prefix)
            except S3_ERRORS as err:
                raise unavailable(err) from err
        return self._client

    def close(self) -> None:
        """Abort the uploads still running; if the event loop is not running any more,
        let obstore finish aborting them first (nothing left pending on it)."""
        running = []
        for writer in list(self._writers):
            writer.abort()
            upload = writer.settled()
            if upload is not None:
                running.append(upload)
        if running:
            loop = running[0].get_loop()
            if not loop.is_running() and not loop.is_closed():
                loop.run_until_complete(asyncio.wait(running, timeout=10))

    async def begin(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self.client, key, self._writers)

    async def open(self, key: str) -> S3BlobReader:
        try:
            result = await obstore.get_async(self.client, key)
        except MISSING:
            raise NotFound("the image's bytes are gone") from None
        except S3_ERRORS as err:
            raise unavailable(err) from err
        return S3BlobReader(self.client, key, result)

    async def remove(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            await obstore.delete_async(self.client, keys)
        except S3_ERRORS as err:
            log.warning("could not remove %d blob(s) (%s); the next sweep will", len(keys), err)

    async def published_keys(self) -> AsyncIterator[list[str]]:
        """The published blobs old enough for the sweep (see the module's doc)."""
        cutoff = time.time() - self.sweep_min_age
        try:
            async for batch in obstore.list(self.client, chunk_size=1000):
                keys = [
                    meta["path"].rsplit("/", 1)[-1]
                    for meta in batch
                    if meta["last_modified"].timestamp() < cutoff
                ]
                keys = [key for key in keys if _KEY.fullmatch(key)]
                if keys:
                    yield keys
        except S3_ERRORS as err:
            raise unavailable(err) from err

    async def remove_unfinished(self) -> int:
        # A bucket lifecycle rule aborts them (see the module's doc).
        return 0

    async def free_bytes(self) -> int | None:
        return None

    async def ping(self) -> None:
        try:
            await obstore.head_async(self.client, "imagestore-ping")
        except MISSING:
            return  # the store answered
        except S3_ERRORS as err:
            raise unavailable(err) from err
