"""Reading images with libvips off the IOLoop, in one bounded pool.

``ImagingPool`` runs libvips work on its own threads: at most ``workers`` at once and
``queue`` more waiting; past that a request is refused at once (Busy: 503 with
Retry-After), so a burst cannot pile up unbounded work or memory. ``read_header``
learns an image's dimensions from its header alone (no pixel is decoded).
"""

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pyvips

from store.errors import Busy
from store.ports import BlobReader
from store.vips import LOADERS, BlobSource

T = TypeVar("T")


@dataclass(frozen=True)
class Header:
    width: int
    height: int  # of one frame (page) for animations
    pages: int

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.pages


class ImagingPool:
    def __init__(self, workers: int | None = None, queue: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.queue = self.workers * 4 if queue is None else queue
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="imaging")
        self._running = 0
        self.jobs_done = 0  # since start (for /healthz and the tests)

    @property
    def running(self) -> int:
        """Jobs running or waiting."""
        return self._running

    async def run(self, fn: Callable[..., T], *args: object, bounded: bool = True) -> T:
        """``fn(*args)`` on a worker thread. ``bounded``: Busy when workers and queue
        are all taken (work that must not be refused, such as an upload's header
        check, still waits its turn)."""
        if bounded and self._running >= self.workers + self.queue:
            raise Busy(
                f"{self.workers} image workers are busy and {self.queue} requests wait: "
                "retry shortly"
            )
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        finally:
            self._running -= 1
            self.jobs_done += 1

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)


def header_of(image: pyvips.Image) -> Header:
    fields = image.get_fields()
    pages = int(image.get("n-pages")) if "n-pages" in fields else 1
    # An animation loaded whole is one tall image of its frames.
    height = int(image.get("page-height")) if "page-height" in fields else image.height
    return Header(int(image.width), int(height), max(pages, 1))


def open_source(source: BlobSource, content_type: str, **options: object) -> pyvips.Image:
    """The image as libvips' loader for ``content_type`` reads it (its header only,
    until pixels are asked for). pyvips.Error when it does not parse as that type."""
    return _as_loaded(pyvips.Image.new_from_source(source.source, "", **options), content_type)


def _as_loaded(image: pyvips.Image, content_type: str) -> pyvips.Image:
    loader = str(image.get("vips-loader")) if "vips-loader" in image.get_fields() else ""
    if not loader.startswith(LOADERS[content_type][1]):
        raise pyvips.Error(f"read as {loader}, not as {content_type}")
    return image


# The most bytes a header read takes from the blob store: metadata (EXIF, ICC, text
# chunks) comes before the dimensions in some formats, and a huge one must not make
# every upload read its image twice.
HEADER_BUDGET_BYTES = 4 * 1024 * 1024
# An image up to this size has its header read from its bytes in memory, in one call:
# through a source, libvips asks a few KiB at a time (a PNG with a large text chunk
# before its pixels: hundreds of hand-overs to the IOLoop, 2 ms of CPU per MiB).
WHOLE_HEADER_READ_BYTES = 2 * 1024 * 1024


class NotParsable(Exception):
    """The bytes do not parse as the format they start like."""


async def read_header(pool: ImagingPool, reader: BlobReader, content_type: str) -> Header | None:
    """The image's dimensions from its header; None when they cannot be told (a
    format libvips does not load, or a header beyond HEADER_BUDGET_BYTES).
    NotParsable when libvips reads the bytes and finds no such image."""
    if content_type not in LOADERS:
        return None
    if reader.size <= WHOLE_HEADER_READ_BYTES:
        return await _read_header_whole(pool, reader, content_type)
    source = BlobSource(reader, asyncio.get_running_loop(), budget=HEADER_BUDGET_BYTES)

    def read() -> Header | None:
        try:
            return header_of(open_source(source, content_type))
        except pyvips.Error:
            return None

    try:
        found = await pool.run(read, bounded=False)
    finally:
        source.close()
    source.check()
    if found is None and not source.exhausted:
        raise NotParsable(f"the file is not a valid {content_type} image")
    return found


async def _read_header_whole(
    pool: ImagingPool, reader: BlobReader, content_type: str
) -> Header | None:
    data = b"".join([chunk async for chunk in reader.chunks(0, reader.size)])

    def read() -> Header | None:
        try:
            return header_of(_as_loaded(pyvips.Image.new_from_buffer(data, ""), content_type))
        except pyvips.Error:
            return None

    found = await pool.run(read, bounded=False)
    if found is None:
        raise NotParsable(f"the file is not a valid {content_type} image")
    return found
