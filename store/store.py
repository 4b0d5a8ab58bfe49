"""ImageStore: the one door to albums and images.

Handlers call these coroutines with the raw names they received; the store validates
them, decides the order of operations over its two ports (the blob first, then the
catalog when adding; the catalog first, then the blob when removing, so that a crash
leaves at worst an orphan blob, which the sweep removes, and never an image without
its bytes), builds each change's event and raises domain errors (store.errors).
"""

import asyncio
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
    StorageFull,
    StoreError,
    TooLarge,
    UnsupportedMedia,
)
from store.names import validate_name
from store.ports import BlobReader, BlobStore, BlobWriter, Catalog, ImageRecord
from store.sniff import SNIFF_BYTES, sniff_image_type

log = logging.getLogger("imagestore.store")


def new_key() -> str:
    """A blob's key: random, made here, never from anything a client sent."""
    return uuid.uuid4().hex


class ImageStore:
    """Albums and images over a catalog and a blob store.

    ``max_upload_bytes``: the largest image accepted. ``min_free_bytes``: uploads are
    refused while the blob store has less room than this (when it can tell)."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        max_upload_bytes: int,
        min_free_bytes: int = 0,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self.min_free_bytes = min_free_bytes
        self._event_listeners: list[Callable[[], None]] = []
        self._uploads: set[Upload] = set()

    def close(self) -> None:
        for upload in list(self._uploads):
            upload.abort()
        self.blobs.close()
        self.catalog.close()

    async def sweep(self) -> tuple[int, int]:
        """Remove what a crash can leave behind: unfinished uploads, and blobs no image
        references. Only while nothing else uses the backends (at start-up).
        Returns (unfinished uploads removed, orphan blobs removed)."""
        unfinished = await self.blobs.remove_unfinished()
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

    async def _publish(self, upload: "Upload", record: ImageRecord) -> ImageRecord:
        await upload.writer.publish()
        try:
            added = await self.catalog.add_image(
                upload.album_id, record, lambda stored: events.encode(events.image_added(stored))
            )
        except BaseException:
            await self.blobs.remove([record.blob_key])
            raise
        self._changed()
        if added.redundant_blob is not None:
            await self.blobs.remove([added.redundant_blob])  # the same bytes were there
        return added.record

    async def get_image(self, album: str, image: str) -> ImageRecord:
        return await self.catalog.find_image(
            validate_name(album, "album"), validate_name(image, "image")
        )

    async def open_image(self, album: str, image: str) -> "ImageReader":
        """The image's record and an open reader of its bytes, valid even if the image
        is deleted meanwhile."""
        record = await self.get_image(album, image)
        try:
            reader = await self.blobs.open(record.blob_key)
        except NotFound:
            # Deleted between the lookup and the open.
            raise NotFound(f"image {record.name} does not exist in album {record.album}") from None
        return ImageReader(record, reader)

    async def delete_image(self, album: str, image: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        image = validate_name(image, "image")
        event = events.encode(events.image_deleted(album, image))
        freed = await self.catalog.delete_image(album, image, event)
        self._changed()
        if freed is not None:
            await self.blobs.remove([freed])
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
            record = ImageRecord(
                album=self.album,
                name=self.image,
                size=self._size,
                sha256=self._sha256.hexdigest(),
                content_type=self._content_type,
                created_at=time.time() if self.created_at is None else self.created_at,
                blob_key=self._key,
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
