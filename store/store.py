"""ImageStore: the one door to albums and images.

Handlers call these coroutines with the raw names they received; the store
validates them, owns the disk and the catalog, and raises domain errors
(store.errors). Every mutation commits in one catalog transaction, which is where
its notification event will be recorded.
"""

import asyncio
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from store.blobs import BlobFolder, TempBlob, new_key, storage_error
from store.catalog import Catalog, ImageRecord
from store.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StorageFull,
    StorageUnavailable,
    StoreError,
    TooLarge,
    UnsupportedMedia,
)
from store.events import OutboxEvent
from store.names import validate_name
from store.sniff import SNIFF_BYTES, sniff_image_type

log = logging.getLogger("imagestore.store")

T = TypeVar("T")

READ_CHUNK_BYTES = 256 * 1024


class DataFolder:
    """Exclusive ownership of a data folder, for one process (and its workers).

    ``claim`` takes the lock, brings the catalog's schema up to date and sweeps what a
    crash can leave behind; it is done once, before serving (before forking workers,
    which inherit the lock).
    """

    # A restarted service may find its killed predecessor's workers still exiting.
    LOCK_PATIENCE_SECONDS = 2.0

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, data_dir: str) -> "DataFolder":
        path = os.path.abspath(data_dir)
        try:
            os.makedirs(path, exist_ok=True)
            lock_fd = _lock(path, cls.LOCK_PATIENCE_SECONDS)
        except OSError as err:
            raise storage_error(err) from err
        folder = cls(path, lock_fd)
        try:
            blobs = BlobFolder(path)
            catalog = Catalog(os.path.join(path, "catalog.sqlite3"))
            try:
                temps, orphans = blobs.sweep(catalog.all_blob_keys())
            finally:
                catalog.close()
        except OSError as err:
            folder.release()
            raise storage_error(err) from err
        except BaseException:
            folder.release()
            raise
        if temps or orphans:
            log.warning(
                "start-up sweep removed %d unfinished upload(s) and %d orphan blob(s)",
                temps,
                orphans,
            )
        return folder

    def remove_leftovers_of(self, pid: int) -> int:
        """A worker process died: remove its unfinished uploads now, not at the next
        start-up. Returns how many there were."""
        try:
            return BlobFolder(self.path).remove_temps_of(pid)
        except OSError as err:
            log.warning("could not remove the unfinished uploads of process %d: %s", pid, err)
            return 0

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _lock(path: str, patience: float) -> int:
    fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StorageUnavailable(
                    f"the data folder {path} is in use by another imagestore process"
                ) from None
            time.sleep(0.05)


class ImageStore:
    """Albums and images kept in ``data_dir``: ``catalog.sqlite3``, ``blobs/``, ``tmp/``.

    Several processes may each open a store on the same folder (SQLite serialises
    their writes); one of them must have claimed it (``DataFolder.claim``) first.
    """

    def __init__(
        self,
        data_dir: str,
        max_upload_bytes: int,
        outbox_limit: int | None = None,
        min_free_bytes: int = 0,
        claim: bool = True,
    ) -> None:
        """``outbox_limit``: how many change events to keep for the notifier; None
        records no events at all (notifications off). ``min_free_bytes``: uploads are
        refused while the disk has less free space than this. ``claim``: take the
        folder for this store (False: a worker of a process that claimed it)."""
        self.data_dir = os.path.abspath(data_dir)
        self.max_upload_bytes = max_upload_bytes
        self.min_free_bytes = min_free_bytes
        self._event_listeners: list[Callable[[], None]] = []
        self._folder = DataFolder.claim(self.data_dir) if claim else None
        try:
            self._blobs = BlobFolder(self.data_dir)
            self._catalog = Catalog(os.path.join(self.data_dir, "catalog.sqlite3"), outbox_limit)
        except OSError as err:
            self._release()
            raise storage_error(err) from err
        # One writer thread: SQLite takes one writer at a time anyway, and each
        # commit fsyncs, which must never run on the IOLoop.
        self._catalog_writer = ThreadPoolExecutor(1, thread_name_prefix="catalog-writer")
        self._disk = ThreadPoolExecutor(4, thread_name_prefix="blob-io")
        self._uploads: set[Upload] = set()

    def _release(self) -> None:
        if self._folder is not None:
            self._folder.release()

    def close(self) -> None:
        for upload in list(self._uploads):
            upload.abort()
        self._catalog_writer.shutdown(wait=True)
        self._disk.shutdown(wait=True)
        self._catalog.close()
        self._release()

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._catalog_writer, fn, *args)

    async def _change(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a catalog mutation (which records its event) and wake the listeners."""
        result = await self._write(fn, *args)
        for listener in self._event_listeners:
            listener()
        return result

    # --- the event outbox (read by the notifier) ----------------------------------

    def on_new_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on the IOLoop after each committed change."""
        self._event_listeners.append(listener)

    def pending_events(self, after_id: int, limit: int) -> list[OutboxEvent]:
        """The oldest undelivered events after ``after_id``."""
        return self._catalog.pending_events(after_id, limit)

    async def forget_events(self, up_to_id: int) -> None:
        """The broker has every event up to ``up_to_id``: drop them from the outbox."""
        await self._write(self._catalog.forget_events, up_to_id)

    def events_pending(self) -> int:
        return self._catalog.events_pending()

    @property
    def events_dropped(self) -> int:
        return self._catalog.events_dropped

    async def _on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        except OSError as err:
            raise storage_error(err) from err

    # --- albums -------------------------------------------------------------------

    def catalog_version(self) -> int:
        """A number that changes after every committed change, made by any process:
        what was read from the catalog at one version stays true while it holds."""
        return self._catalog.data_version()

    def canonical_album_name(self, album: str) -> str:
        """The one spelling of ``album`` the catalog knows it by (NFC); InvalidInput
        for a name that breaks the rules."""
        return validate_name(album, "album")

    async def list_albums(self) -> list[str]:
        return self._catalog.album_names()

    async def require_album(self, album: str) -> str:
        """The validated album name; NotFound unless the album exists."""
        album = validate_name(album, "album")
        if not self._catalog.album_exists(album):
            raise NotFound(f"album {album} does not exist")
        return album

    async def create_album(self, album: str) -> str:
        album = validate_name(album, "album")
        await self._change(self._catalog.create_album, album)
        return album

    async def delete_album(self, album: str) -> str:
        album = validate_name(album, "album")
        keys = await self._change(self._catalog.delete_album, album)
        await self._remove_blobs(keys)
        return album

    async def rename_album(self, album: str, new_name: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        new_name = validate_name(new_name, "album")
        await self._change(self._catalog.rename_album, album, new_name)
        return album, new_name

    # --- disk space ---------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free space for the data folder's owner, in bytes."""
        stats = os.statvfs(self.data_dir)
        return stats.f_bavail * stats.f_frsize

    def refusing_uploads(self) -> bool:
        return self.free_bytes() < self.min_free_bytes

    def check_room(self, expected_bytes: int = 0) -> None:
        """StorageFull unless ``expected_bytes`` fit and leave the minimum free."""
        free = self.free_bytes()
        if free - expected_bytes < self.min_free_bytes:
            raise StorageFull(
                f"not enough disk space: {free} bytes free, {self.min_free_bytes} kept in "
                f"reserve{f', {expected_bytes} asked for' if expected_bytes else ''}"
            )

    # --- images -------------------------------------------------------------------

    async def list_images(self, album: str) -> list[str]:
        return self._catalog.image_names(validate_name(album, "album"))

    async def begin_upload(self, album: str, image: str) -> "Upload":
        """Start receiving an image. Fails early (404, 409) when it can already tell."""
        album = validate_name(album, "album")
        # The upload belongs to the album, not to its name: renamed meanwhile, the
        # album still receives it.
        album_id = self._catalog.album_id(album)
        image = validate_name(image, "image")
        if self._catalog.image_exists(album, image):
            raise Conflict(f"image {image} already exists in album {album}")
        self.check_room()
        key = new_key()
        try:
            temp = self._blobs.new_temp(key)
        except OSError as err:
            raise storage_error(err) from err
        upload = Upload(self, album_id, album, image, key, temp)
        self._uploads.add(upload)
        return upload

    async def _publish(self, upload: "Upload", record: ImageRecord) -> ImageRecord:
        await self._on_disk(self._blobs.publish, upload.temp, record.blob_key)
        try:
            return await self._change(self._catalog.add_image, upload.album_id, record)
        except BaseException:
            await self._remove_blobs([record.blob_key])
            raise

    async def _remove_blobs(self, keys: list[str]) -> None:
        if keys:
            await asyncio.get_running_loop().run_in_executor(self._disk, self._blobs.remove, keys)

    async def get_image(self, album: str, image: str) -> ImageRecord:
        return self._catalog.find_image(
            validate_name(album, "album"), validate_name(image, "image")
        )

    async def open_image(self, album: str, image: str) -> "ImageReader":
        """The image's record and an open handle on its bytes.

        The handle stays valid even if the image is deleted meanwhile."""
        record = await self.get_image(album, image)
        try:
            handle = self._blobs.open(record.blob_key)
        except FileNotFoundError:
            # Deleted between the lookup and the open.
            raise NotFound(f"image {record.name} does not exist in album {record.album}") from None
        except OSError as err:
            raise storage_error(err) from err
        return ImageReader(record, handle)

    async def delete_image(self, album: str, image: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        image = validate_name(image, "image")
        key = await self._change(self._catalog.delete_image, album, image)
        await self._remove_blobs([key])
        return album, image

    async def rename_image(self, album: str, image: str, new_name: str) -> tuple[str, str]:
        album = validate_name(album, "album")
        image = validate_name(image, "image")
        new_name = validate_name(new_name, "image")
        await self._change(self._catalog.rename_image, album, image, new_name)
        return image, new_name


class Upload:
    """One image arriving: bytes are hashed and written to a temporary file as
    they come; only ``commit`` makes the image visible, and only if it is whole
    and really an image."""

    def __init__(
        self, store: ImageStore, album_id: int, album: str, image: str, key: str, temp: TempBlob
    ):
        self.album_id = album_id
        self.album = album
        self.image = image
        self.temp = temp
        self._store = store
        self._key = key
        self._limit = store.max_upload_bytes
        self._size = 0
        self._sha256 = hashlib.sha256()
        self._head = bytearray()
        self._content_type: str | None = None
        # "receiving" -> "committing" -> "done"; or -> "aborted" from receiving.
        self._state = "receiving"

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        """Take the next bytes. Raises TooLarge or UnsupportedMedia as soon as
        it can tell, after which the upload is aborted."""
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
            try:
                self.temp.write(chunk)
            except OSError as err:
                raise storage_error(err) from err
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
                created_at=time.time(),
                blob_key=self._key,
            )
        except BaseException:
            self.abort()
            raise
        # From here the temporary file belongs to the publishing thread: an abort
        # (client gone, shutdown) must not pull it away mid-fsync.
        self._state = "committing"
        try:
            record = await self._store._publish(self, record)
        except BaseException:
            self.temp.discard()
            raise
        finally:
            self._state = "done"
            self._store._uploads.discard(self)
        return record

    def abort(self) -> None:
        """Drop the upload and its temporary file. Safe to call more than once."""
        if self._state == "receiving":
            self._state = "aborted"
            self.temp.discard()
            self._store._uploads.discard(self)


class ImageReader:
    """An image's record and its bytes, read in bounded chunks."""

    def __init__(self, record: ImageRecord, handle) -> None:
        self.record = record
        self._handle = handle

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes in [start, end), at most READ_CHUNK_BYTES at a time."""
        position = start
        while position < end:
            try:
                chunk = os.pread(
                    self._handle.fileno(), min(READ_CHUNK_BYTES, end - position), position
                )
            except OSError as err:
                raise storage_error(err) from err
            if not chunk:
                raise StorageUnavailable("the image file is shorter than its catalog record")
            position += len(chunk)
            yield chunk

    def close(self) -> None:
        self._handle.close()
