"""ImageStore: the one door to albums and images.

Handlers call these coroutines with the raw names they received; the store validates
them, decides the order of operations over its two ports (the blob first, then the
catalog when adding; the catalog first, then the blob when removing, so that a crash
leaves at worst an orphan blob, which the sweep removes, and never an image without
its bytes), builds each change's event and raises domain errors (store.errors).
"""

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from store import events
from store.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RenderFailed,
    StorageFull,
    StoreError,
    TooLarge,
    UnsupportedMedia,
)
from store.imaging import Header, ImagingPool, NotParsable, read_header
from store.listing import Page, PageRequest, page_of
from store.names import validate_name
from store.ports import (
    AlbumSummary,
    BlobReader,
    BlobStore,
    BlobWriter,
    CachedRendition,
    Catalog,
    CatalogTotals,
    ImageRecord,
)
from store.renditions import Rendition, Spec, check_pixels, default_format, render
from store.sniff import SNIFF_BYTES, Malformed, bmp_or_ico_dimensions, sniff_image_type
from store.vips import BlobSource, readable

log = logging.getLogger("imagestore.store")


def new_key() -> str:
    """A blob's key: random, made here, never from anything a client sent."""
    return uuid.uuid4().hex


class ImageStore:
    """Albums and images over a catalog and a blob store.

    ``max_upload_bytes``: the largest image accepted. ``min_free_bytes``: uploads are
    refused while the blob store has less room than this (when it can tell).
    ``imaging``: the pool where libvips reads images (headers, renditions)."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        max_upload_bytes: int,
        min_free_bytes: int = 0,
        imaging: ImagingPool | None = None,
        max_pixels: int = 100_000_000,
        render_seconds: float = 30.0,
        rendition_cache_bytes: int = 0,
        renditions_on_upload: tuple[int, ...] = (),
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self.min_free_bytes = min_free_bytes
        self.imaging = imaging or ImagingPool()
        self.max_pixels = max_pixels
        self.render_seconds = render_seconds
        self.rendition_cache_bytes = rendition_cache_bytes
        self.renditions_on_upload = renditions_on_upload
        # Renditions being made, by (original's blob, spec): asked again meanwhile,
        # one is made and every asker gets it. An entry stays until the rendition is
        # in the cache.
        self._making: dict[tuple[str, str], asyncio.Future[Rendition]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._event_listeners: list[Callable[[], None]] = []
        self._uploads: set[Upload] = set()

    @property
    def running_uploads(self) -> int:
        """Uploads begun and neither committed nor aborted yet."""
        return len(self._uploads)

    def close(self) -> None:
        for upload in list(self._uploads):
            upload.abort()
        for task in list(self._background):
            task.cancel()
        self.imaging.close()
        self.blobs.close()
        self.catalog.close()

    async def sweep(self) -> tuple[int, int]:
        """Remove what a crash can leave behind: unfinished uploads, and blobs no image
        references. Only while nothing else uses the backends (at start-up).
        Returns (unfinished uploads removed, orphan blobs removed)."""
        unfinished = await self.blobs.remove_unfinished()
        # Renditions of originals deleted just before a crash.
        await self.blobs.remove(await self.catalog.drop_renditions(None))
        orphans = 0
        async for keys in self.blobs.published_keys():
            unreferenced = await self.catalog.unreferenced(keys)
            await self.blobs.remove(unreferenced)
            orphans += len(unreferenced)
        return unfinished, orphans

    def _changed(self) -> None:
        for listener in self._event_listeners:
            listener()

    # --- the event outbox (read by the notifier) ----------------------------------

    def on_new_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on the IOLoop after each committed change."""
        self._event_listeners.append(listener)

    async def pending_events(self, after_id: int, limit: int) -> list[events.OutboxEvent]:
        """The oldest undelivered events after ``after_id``."""
        return await self.catalog.pending_events(after_id, limit)

    async def forget_events(self, up_to_id: int) -> None:
        """The broker has every event up to ``up_to_id``: drop them from the outbox."""
        await self.catalog.forget_events(up_to_id)

    async def lead(self) -> bool:
        """Whether this process is the one that publishes the outbox (see Catalog.lead)."""
        return await self.catalog.lead()

    async def events_pending(self) -> int:
        return await self.catalog.events_pending()

    async def events_dropped(self) -> int:
        return await self.catalog.events_dropped()

    # --- albums -------------------------------------------------------------------

    async def check_backends(self, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Whether the catalog and the blob store answer, and how fast (for /healthz):
        {"catalog": {"reachable": ..., "latencyMs": ..., "error": ...}, "blobs": ...}."""

        async def check(ping: Callable[[], Awaitable[None]], what: str) -> dict[str, Any]:
            began = time.perf_counter()
            try:
                await asyncio.wait_for(ping(), timeout)
            except StoreError as err:
                return {"reachable": False, "error": str(err)}
            except TimeoutError:
                return {
                    "reachable": False,
                    "error": f"the {what} did not answer in {timeout:.0f} s",
                }
            return {"reachable": True, "latencyMs": round((time.perf_counter() - began) * 1000, 2)}

        catalog, blobs = await asyncio.gather(
            check(self.catalog.ping, "catalog"), check(self.blobs.ping, "blob store")
        )
        return {"catalog": catalog, "blobs": blobs}

    async def change_token(self) -> int:
        """Changes after every committed change, made by any process: what was read
        at one token stays true while it holds."""
        return await self.catalog.change_token()

    def canonical_album_name(self, album: str) -> str:
        """The one spelling of ``album`` the catalog knows it by (NFC); InvalidInput
        for a name that breaks the rules."""
        return validate_name(album, "album")

    async def list_albums(self) -> list[str]:
        return await self.catalog.album_names()

    async def album_page(self, request: PageRequest) -> Page[AlbumSummary]:
        """Albums in name order, as ``request`` asks (a keyset page, or all of them)."""
        rows = await self.catalog.album_page(request.names, request.fetch)
        return page_of(rows, request, lambda album: album.name)

    async def totals(self) -> CatalogTotals:
        return await self.catalog.totals()

    async def require_album(self, album: str) -> str:
        """The validated album name; NotFound unless the album exists."""
        album = validate_name(album, "album")
        await self.catalog.album_id(album)
        return album

    async def create_album(self, album: str) -> str:
        album = validate_name(album, "album")
        await self.catalog.create_album(album, events.encode(events.album_created(album)))
        self._changed()
        return album

    async def delete_album(self, album: str) -> str:
        album = validate_name(album, "album")
        freed = await self.catalog.delete_album(album, events.encode(events.album_deleted(album)))
        self._changed()
        await self.blobs.remove(freed)
        await self.blobs.remove(await self.catalog.drop_renditions(freed))
        return album

    async def rename_album(self, album: str, new_name: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        new_name = validate_name(new_name, "album")
        event = events.encode(events.album_renamed(album, new_name))
        await self.catalog.rename_album(album, new_name, event)
        self._changed()
        return album, new_name

    # --- room for uploads -----------------------------------------------------------

    async def free_bytes(self) -> int | None:
        """Room left in the blob store, in bytes; None when it cannot tell."""
        return await self.blobs.free_bytes()

    async def refusing_uploads(self) -> bool:
        free = await self.free_bytes()
        return free is not None and free < self.min_free_bytes

    async def check_room(self, expected_bytes: int = 0) -> None:
        """StorageFull unless ``expected_bytes`` fit and leave the minimum free. A
        blob store that cannot tell refuses nothing early (a full one still fails
        the write with 507)."""
        free = await self.free_bytes()
        if free is not None and free - expected_bytes < self.min_free_bytes:
            raise StorageFull(
                f"not enough disk space: {free} bytes free, {self.min_free_bytes} kept in "
                f"reserve{f', {expected_bytes} asked for' if expected_bytes else ''}"
            )

    # --- images -------------------------------------------------------------------

    async def list_images(self, album: str) -> list[str]:
        return await self.catalog.image_names(validate_name(album, "album"))

    async def image_page(self, album: str, request: PageRequest) -> Page[ImageRecord]:
        """An album's images in name order, as ``request`` asks."""
        rows = await self.catalog.image_page(
            validate_name(album, "album"), request.names, request.fetch
        )
        return page_of(rows, request, lambda image: image.name)

    async def album_images(self, album: str, batch: int = 500) -> AsyncIterator[ImageRecord]:
        """Every image of ``album`` in name order, read a page at a time (memory does
        not grow with the album): those added meanwhile past the current page are
        included, those deleted meanwhile may still be."""
        request = PageRequest.of(limit=batch)
        while True:
            page = await self.image_page(album, request)
            for record in page.items:
                yield record
            if page.next_after is None:
                return
            request = PageRequest.of(after=page.next_after, limit=batch)

    async def begin_upload(
        self, album: str, image: str, created_at: float | None = None
    ) -> "Upload":
        """Start receiving an image. Fails early (404, 409) when it can already tell.
        ``created_at``: when the image was first stored (a copy keeps it); now if None."""
        album = validate_name(album, "album")
        # The upload belongs to the album, not to its name: renamed meanwhile, the
        # album still receives it.
        album_id = await self.catalog.album_id(album)
        image = validate_name(image, "image")
        if await self.catalog.image_exists(album, image):
            raise Conflict(f"image {image} already exists in album {album}")
        await self.check_room()
        key = new_key()
        upload = Upload(self, album_id, album, image, key, await self.blobs.begin(key))
        upload.created_at = created_at
        self._uploads.add(upload)
        return upload

    async def header(self, blob_key: str, content_type: str) -> Header | None:
        """The dimensions in a stored image's header (None: they cannot be told).
        NotParsable when libvips finds no image of ``content_type`` there."""
        reader = await self.blobs.open(blob_key)
        try:
            if content_type in ("image/bmp", "image/x-icon"):
                head = b"".join([c async for c in reader.chunks(0, min(reader.size, SNIFF_BYTES))])
                try:
                    found = bmp_or_ico_dimensions(content_type, head, reader.size)
                except Malformed as err:
                    raise NotParsable(str(err)) from None
                return Header(found[0], found[1], 1) if found else None
            return await read_header(self.imaging, reader, content_type)
        finally:
            reader.close()

    async def backfill_dimensions(self, batch: int = 100) -> tuple[int, int]:
        """Record the width and height of the images stored before dimensions were
        (a one-off, `imagestore dimensions`; safe while serving, and to run again).
        Returns (contents given dimensions, contents libvips cannot read)."""
        filled = unreadable = 0
        after = ""
        while contents := await self.catalog.without_dimensions(after, batch):
            for content in contents:
                try:
                    found = await self.header(content.blob_key, content.content_type)
                except (NotFound, NotParsable):  # deleted meanwhile, or not readable
                    found = None
                if found is None:
                    unreadable += 1
                else:
                    await self.catalog.record_dimensions(content.sha256, found.width, found.height)
                    filled += 1
            after = contents[-1].sha256
        return filled, unreadable

    async def _publish(self, upload: "Upload", record: ImageRecord) -> ImageRecord:
        await upload.writer.publish()
        try:
            # The sniffed type confirmed, and the dimensions on record: libvips reads
            # the header (cheap, no decode, off the IOLoop) through the blob store
            # port like every later read. Bytes that do not parse leave nothing.
            try:
                found = (
                    await self.header(record.blob_key, record.content_type)
                    if record.width is None
                    else None
                )
            except NotParsable as err:
                raise UnsupportedMedia(f"{err}: it is not an image") from None
            if found is not None:
                record = dataclasses.replace(record, width=found.width, height=found.height)
            added = await self.catalog.add_image(
                upload.album_id, record, lambda stored: events.encode(events.image_added(stored))
            )
        except BaseException:
            await self.blobs.remove([record.blob_key])
            raise
        self._changed()
        if added.redundant_blob is not None:
            await self.blobs.remove([added.redundant_blob])  # the same bytes were there
        if (
            self.renditions_on_upload
            and self.rendition_cache_bytes
            and readable(added.record.content_type)
        ):
            self._in_background(self._make_eagerly(added.record))
        return added.record

    async def _make_eagerly(self, record: ImageRecord) -> None:
        """IMAGESTORE_RENDITIONS_ON_UPLOAD: after the upload's answer, never delaying it."""
        for width in self.renditions_on_upload:
            spec = Spec(width, None, "inside", default_format(record.content_type), None)
            try:
                made = await self.rendition(record, spec)
                made.close()
            except StoreError as err:
                log.info(
                    "no eager rendition %s of %s/%s: %s", spec.key, record.album, record.name, err
                )
                return

    async def get_image(self, album: str, image: str) -> ImageRecord:
        return await self.catalog.find_image(
            validate_name(album, "album"), validate_name(image, "image")
        )

    async def open_image(self, album: str, image: str) -> "ImageReader":
        """The image's record and an open reader of its bytes, valid even if the image
        is deleted meanwhile."""
        return await self.open_record(await self.get_image(album, image))

    async def open_record(self, record: ImageRecord) -> "ImageReader":
        """An open reader of the bytes of ``record`` (from get_image): NotFound if the
        image was deleted meanwhile."""
        try:
            reader = await self.blobs.open(record.blob_key)
        except NotFound:
            # Deleted between the lookup and the open.
            raise NotFound(f"image {record.name} does not exist in album {record.album}") from None
        return ImageReader(record, reader)

    async def rendition(self, record: ImageRecord, spec: Spec) -> "RenditionReader":
        """The rendition of ``record``'s image: from the cache when it was made before
        (streamed from the blob store like an original), else made now (once, however
        many ask at the same time) and kept in the cache."""
        if self.rendition_cache_bytes:
            cached = await self.catalog.find_rendition(record.blob_key, spec.key)
            if cached is not None:
                try:
                    reader = await self.blobs.open(cached.blob_key)
                except NotFound:
                    pass  # evicted since: make it again
                else:
                    return RenditionReader(
                        cached.content_type,
                        cached.width,
                        cached.height,
                        reader.size,
                        reader,
                        source="cache",
                    )
        key = (record.blob_key, spec.key)
        making = self._making.get(key)
        source = "made" if making is None else "shared"
        if making is None:
            making = asyncio.get_running_loop().create_future()
            self._making[key] = making
            try:
                made = await self.render(record, spec)
            except BaseException as err:
                del self._making[key]
                making.set_exception(err)
                making.exception()  # retrieved: no "never retrieved" warning
                raise
            making.set_result(made)
            self._in_background(self._keep(key, spec, made))
        else:
            made = await asyncio.shield(making)
        return RenditionReader(
            spec.content_type, made.width, made.height, len(made.data), made.data, source
        )

    async def settled(self) -> None:
        """Once the background work (caching renditions just made, eager renditions)
        started so far has finished."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _keep(self, key: tuple[str, str], spec: Spec, made: Rendition) -> None:
        """Put a rendition just made into the cache (after its first answer)."""
        try:
            if len(made.data) > self.rendition_cache_bytes:
                return
            blob_key = new_key()
            writer = await self.blobs.begin(blob_key)
            try:
                await writer.write(made.data)
                await writer.publish()
            except BaseException:
                writer.abort()
                raise
            cached = CachedRendition(
                key[0], key[1], blob_key, len(made.data), spec.content_type, made.width, made.height
            )
            try:
                gone = await self.catalog.add_rendition(cached, self.rendition_cache_bytes)
            except BaseException:
                await self.blobs.remove([blob_key])
                raise
            await self.blobs.remove(gone)
        except StoreError as err:
            log.warning("a rendition could not be cached: %s", err)
        finally:
            self._making.pop(key, None)

    async def render(self, record: ImageRecord, spec: Spec) -> Rendition:
        """A rendition of the image ``record`` describes (its bytes, read through the
        blob store port), made in the bounded imaging pool: Busy when it is full,
        TooManyPixels before decoding an image over the limit."""
        if not readable(record.content_type):
            raise RenderFailed(
                f"{record.content_type} images cannot be rendered: only their original is served"
            )
        if record.width is not None and record.height is not None:
            check_pixels(Header(record.width, record.height, 1), self.max_pixels)
        try:
            reader = await self.blobs.open(record.blob_key)
        except NotFound:
            raise NotFound(f"image {record.name} does not exist in album {record.album}") from None
        loop = asyncio.get_running_loop()
        source = BlobSource(reader, loop, loop.time() + self.render_seconds)
        try:
            made = await self.imaging.run(
                render, source, record.content_type, spec, self.max_pixels, self.render_seconds
            )
        finally:
            source.close()
            reader.close()
        return made

    async def delete_image(self, album: str, image: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        image = validate_name(image, "image")
        event = events.encode(events.image_deleted(album, image))
        freed = await self.catalog.delete_image(album, image, event)
        self._changed()
        if freed is not None:
            await self.blobs.remove([freed])
            await self.blobs.remove(await self.catalog.drop_renditions([freed]))
        return album, image

    async def rename_image(self, album: str, image: str, new_name: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        image = validate_name(image, "image")
        new_name = validate_name(new_name, "image")
        event = events.encode(events.image_renamed(album, image, new_name))
        await self.catalog.rename_image(album, image, new_name, event)
        self._changed()
        return image, new_name


class Upload:
    """One image arriving: bytes are hashed and streamed into a blob writer as they
    come; only ``commit`` makes the image visible, and only if it is whole and really
    an image."""

    def __init__(
        self,
        store: ImageStore,
        album_id: int,
        album: str,
        image: str,
        key: str,
        writer: BlobWriter,
    ) -> None:
        self.album_id = album_id
        self.album = album
        self.image = image
        self.writer = writer
        self._store = store
        self._key = key
        self._limit = store.max_upload_bytes
        self._size = 0
        self._sha256 = hashlib.sha256()
        self._head = bytearray()
        self._content_type: str | None = None
        self.created_at: float | None = None
        # "receiving" -> "committing" -> "done"; or -> "aborted" from receiving.
        self._state = "receiving"

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        """Take the next bytes. Raises TooLarge or UnsupportedMedia as soon as it can
        tell, after which the upload is aborted."""
        if self._state != "receiving":
            raise StoreError("the upload is closed")
        try:
            self._size += len(chunk)
            if self._size > self._limit:
                raise TooLarge(f"the image is larger than the limit of {self._limit} bytes")
            if self._content_type is None and len(self._head) < SNIFF_BYTES:
                self._head += chunk[: SNIFF_BYTES - len(self._head)]
                if len(self._head) >= SNIFF_BYTES:
                    self._content_type = self._sniff()
            self._sha256.update(chunk)
            await self.writer.write(chunk)
        except BaseException:
            self.abort()
            raise

    def _sniff(self) -> str:
        content_type = sniff_image_type(bytes(self._head))
        if content_type is None:
            raise UnsupportedMedia(
                "the file is not an image of an accepted format "
                "(JPEG, PNG, GIF, WebP, BMP, TIFF, ICO, AVIF, HEIC)"
            )
        return content_type

    async def commit(self) -> ImageRecord:
        """Check the finished upload, make it durable, and record it in the catalog."""
        if self._state != "receiving":
            raise StoreError("the upload is closed")
        try:
            if self._size == 0:
                raise InvalidInput("the file is empty")
            if self._content_type is None:
                self._content_type = self._sniff()
            try:
                dimensions = bmp_or_ico_dimensions(
                    self._content_type, bytes(self._head), self._size
                )
            except Malformed as err:
                raise UnsupportedMedia(f"{err}: it is not an image") from None
            record = ImageRecord(
                album=self.album,
                name=self.image,
                size=self._size,
                sha256=self._sha256.hexdigest(),
                content_type=self._content_type,
                created_at=time.time() if self.created_at is None else self.created_at,
                blob_key=self._key,
                width=dimensions[0] if dimensions else None,
                height=dimensions[1] if dimensions else None,
            )
        except BaseException:
            self.abort()
            raise
        # From here the blob belongs to the publishing step: an abort (client gone,
        # shutdown) must not pull it away mid-fsync.
        self._state = "committing"
        try:
            return await self._store._publish(self, record)
        finally:
            self._state = "done"
            self._store._uploads.discard(self)

    def abort(self) -> None:
        """Drop the upload and its unfinished blob. Safe to call more than once."""
        if self._state == "receiving":
            self._state = "aborted"
            self.writer.abort()
            self._store._uploads.discard(self)


class RenditionReader:
    """A rendition's bytes: from the cache (a blob reader) or just made (in memory).
    ``source``: "cache", "made" (by this request) or "shared" (made for another request
    asking at the same time)."""

    def __init__(
        self,
        content_type: str,
        width: int,
        height: int,
        size: int,
        data: bytes | BlobReader,
        source: str = "made",
    ) -> None:
        self.source = source
        self.content_type = content_type
        self.width = width
        self.height = height
        self.size = size
        self._data = data

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        if isinstance(self._data, bytes):
            yield self._data[start:end]
            return
        async for chunk in self._data.chunks(start, end):
            yield chunk

    def close(self) -> None:
        if not isinstance(self._data, bytes):
            self._data.close()


class ImageReader:
    """An image's record and its bytes, read in bounded chunks."""

    def __init__(self, record: ImageRecord, reader: BlobReader) -> None:
        self.record = record
        self._reader = reader

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes in [start, end)."""
        return self._reader.chunks(start, end)

    def close(self) -> None:
        self._reader.close()
