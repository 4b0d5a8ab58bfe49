"""libvips (pyvips, with the self-contained pyvips-binary wheel), set up once for the
store: only the loaders of the accepted formats may run, and images are read from the
blob store port, never from a path.

Every other loader is blocked (SVG, PDF, ImageMagick, matrix, CSV, vips' own format...):
what a client uploads is parsed only by the loaders of the formats the store accepts.
libvips' operation cache is off (each image is read once per request: caching would
only hold memory), and each operation runs on one thread: the store's own bounded
pool decides how many run at once.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pyvips

from store.errors import Deadline, StorageUnavailable, StoreError
from store.ports import BlobReader

log = logging.getLogger("imagestore.store")

# The libvips loaders allowed (class, nickname), by the content type the store sniffed.
LOADERS = {
    "image/jpeg": ("VipsForeignLoadJpeg", "jpegload"),
    "image/png": ("VipsForeignLoadPng", "pngload"),
    "image/apng": ("VipsForeignLoadPng", "pngload"),
    "image/gif": ("VipsForeignLoadNsgif", "gifload"),
    "image/webp": ("VipsForeignLoadWebp", "webpload"),
    "image/tiff": ("VipsForeignLoadTiff", "tiffload"),
    "image/avif": ("VipsForeignLoadHeif", "heifload"),
}
# Bytes fetched from the blob store per round trip to the IOLoop.
READ_AHEAD_BYTES = 256 * 1024
# How long a libvips thread waits for the blob store to hand over the next bytes.
READ_TIMEOUT_SECONDS = 30.0


def _configure() -> None:
    # libvips' own messages (which vector path, threadpool sizes...) are not news.
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader, _nickname in set(LOADERS.values()):
        pyvips.operation_block_set(loader, False)


_configure()


def readable(content_type: str) -> bool:
    """Whether libvips may read images of this (sniffed) type."""
    return content_type in LOADERS


class BlobSource:
    """A libvips source over a BlobReader: libvips runs on a worker thread and asks
    for bytes; each ask is handed to the IOLoop, which reads the blob store port (any
    backend) in READ_AHEAD_BYTES pieces. Seeks (TIFF, HEIF) start a new read there.

    libvips calls these handlers from C: they must not raise. A failure ends the
    stream (libvips then reports a truncated image) and is kept in ``error``, raised
    by ``check`` once the operation returns."""

    def __init__(
        self,
        reader: BlobReader,
        loop: asyncio.AbstractEventLoop,
        deadline: float | None = None,
        budget: int | None = None,
    ) -> None:
        self._reader = reader
        # Bytes libvips may read at most (headers); past them the stream ends early
        # and ``exhausted`` tells so.
        self._budget = reader.size if budget is None else min(budget, reader.size)
        self.exhausted = False
        self._loop = loop
        self._deadline = deadline
        self._position = 0  # of the next byte handed to libvips
        self._buffer = b""
        self._taken = 0  # of the buffer, handed to libvips (no copy of what is left)
        self._chunks: AsyncIterator[bytes] | None = None
        self._fetched = 0  # the position just after the bytes fetched so far
        self.error: StoreError | None = None
        self.source = pyvips.SourceCustom()
        self.source.on_read(self._read)
        self.source.on_seek(self._seek)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _read(self, size: int) -> bytes | None:
        try:
            if self._taken >= len(self._buffer):
                if self._position >= self._budget or self.error is not None:
                    self.exhausted = self._budget < self._reader.size
                    return None
                if self._deadline is not None and self._loop.time() > self._deadline:
                    raise Deadline("the image took too long to process")
                future = asyncio.run_coroutine_threadsafe(self._fetch(), self._loop)
                try:
                    self._buffer = future.result(READ_TIMEOUT_SECONDS)
                    self._taken = 0
                except FutureTimeout:
                    future.cancel()
                    raise StorageUnavailable("the blob store did not hand over the image") from None
            size = min(size, self._budget - self._position)
            # libvips asks a few KiB at a time: slicing off the rest of a 256 KiB
            # buffer each time copied it again (5 ms of CPU per 1 MiB upload).
            piece = self._buffer[self._taken : self._taken + size]
            self._taken += len(piece)
            self._position += len(piece)
            return piece
        except StoreError as err:
            self.error = err
        except Exception as err:  # from C: nothing may escape
            self.error = StorageUnavailable(f"the image could not be read: {err}")
        return None

    async def _fetch(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._reader.chunks(self._position, self._budget)
            self._fetched = self._position
        wanted = bytearray()
        while len(wanted) < READ_AHEAD_BYTES and self._fetched < self._budget:
            chunk = await anext(self._chunks)
            wanted += chunk
            self._fetched += len(chunk)
        return bytes(wanted)

    def _seek(self, offset: int, whence: int) -> int:
        try:
            base = {0: 0, 1: self._position, 2: self._reader.size}[whence]
            target = base + offset
            if not 0 <= target <= self._reader.size:
                return -1
            if target != self._position:
                # The bytes buffered are of the old position: read again from the new.
                self._buffer, self._taken = b"", 0
                old, self._chunks = self._chunks, None
                if old is not None:
                    asyncio.run_coroutine_threadsafe(_close(old), self._loop)
                self._position = target
            return target
        except Exception as err:  # from C: nothing may escape
            self.error = StorageUnavailable(f"the image could not be read: {err}")
            return -1

    def close(self) -> None:
        """On the IOLoop, once libvips is done."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            asyncio.ensure_future(_close(chunks))


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose: Any = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
