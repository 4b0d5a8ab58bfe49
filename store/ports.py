"""The store's two doors to its backends: a catalog and a blob store.

The domain (store.store) owns names, ordering and events and talks to its backends
through these protocols only; adapters (SQLite, files, and the scale-out ones) live
beside them and are chosen by URL (store.backends).
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from store.events import OutboxEvent
from store.listing import NameRange


@dataclass(frozen=True)
class ImageRecord:
    album: str
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: float
    blob_key: str
    # In pixels, from the image's header (of one frame for animations); None when
    # unknown: a format libvips does not read, or an image stored before dimensions
    # were recorded and not backfilled yet.
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class AlbumSummary:
    """An album as its list shows it in detail: the counts are kept by the catalog in
    each change's own transaction (never counted per request)."""

    name: str
    images: int
    bytes: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class CatalogTotals:
    albums: int
    images: int
    # The images' sizes added up (bytes shared by identical images counted each time).
    bytes: int


@dataclass(frozen=True)
class AddedImage:
    """What the catalog recorded: the record as stored (its album's current name, the
    blob it points to), and the key of the new blob when the catalog already held
    the same bytes (the caller removes it: identical bytes are stored once)."""

    record: ImageRecord
    redundant_blob: str | None


@dataclass(frozen=True)
class ImageBytes:
    """One stored content: what the dimensions backfill reads."""

    sha256: str
    blob_key: str
    content_type: str


@dataclass(frozen=True)
class CachedRendition:
    """A rendition kept in the blob store: of the original stored under
    ``source_key``, made with the normalised parameters ``spec``."""

    source_key: str
    spec: str
    blob_key: str
    size: int
    content_type: str
    width: int
    height: int


# An event as the outbox stores it: JSON text without its id (given once stored).
EventText = str


class Catalog(Protocol):
    """Albums, images and the event outbox. Each mutation and its event commit in one
    transaction; a failed mutation records nothing.

    The outbox: events are read in commit order, each with an id that only rises, and
    an event is never committed below an id already handed out to a reader (so a
    reader that asks for ids above the last it saw skips none). ``events_pending`` is
    exact."""

    async def ping(self) -> None:
        """StorageUnavailable unless the catalog answers (for /healthz)."""
        ...

    async def lead(self) -> bool:
        """Whether this process is, or has now become, the one publisher of the outbox
        among every process and instance sharing the catalog (asked again and again:
        a lead lost, to a crash or a partition, passes to another asker)."""
        ...

    # --- reads -----------------------------------------------------------------------
    async def change_token(self) -> int:
        """Differs after any committed change, by any process or instance."""
        ...

    async def album_names(self) -> list[str]: ...

    async def album_id(self, album: str) -> int:
        """NotFound unless the album exists. Ids are never reused."""
        ...

    async def image_names(self, album: str) -> list[str]: ...

    async def image_exists(self, album: str, image: str) -> bool: ...

    async def album_page(self, names: NameRange, limit: int | None) -> list[AlbumSummary]:
        """The first ``limit`` albums (None: all) whose names lie in ``names``, by name:
        a keyset read of the name index, as cheap at any depth."""
        ...

    async def image_page(
        self, album: str, names: NameRange, limit: int | None
    ) -> list[ImageRecord]:
        """The first ``limit`` images (None: all) of ``album`` whose names lie in
        ``names``, by name. NotFound unless the album exists."""
        ...

    async def totals(self) -> CatalogTotals:
        """What the catalog holds, from the albums' kept counts (for /metrics)."""
        ...

    async def find_image(self, album: str, image: str) -> ImageRecord: ...

    async def unreferenced(self, blob_keys: list[str]) -> list[str]:
        """Those of ``blob_keys`` that no image nor cached rendition references (for the
        orphan sweep)."""
        ...

    async def without_dimensions(self, after_sha256: str, limit: int) -> list[ImageBytes]:
        """Up to ``limit`` distinct contents (sha256 above ``after_sha256``, in order)
        that some image records without width and height (for the backfill)."""
        ...

    async def record_dimensions(self, sha256: str, width: int, height: int) -> None:
        """Give every image of these bytes that has none its width and height. No
        event (nothing changed for a consumer), but the change token moves."""
        ...

    # --- the rendition cache (no events: nothing a consumer sees changes) --------------
    async def find_rendition(self, source_key: str, spec: str) -> CachedRendition | None:
        """The cached rendition, marked as used now (to the minute: a hit seldom writes)."""
        ...

    async def add_rendition(self, rendition: CachedRendition, max_bytes: int) -> list[str]:
        """Record a rendition whose blob is stored, then evict the least recently used
        until all of them take at most ``max_bytes``. Returns the blob keys to remove:
        the evicted, and this one's if it was there already or is evicted at once."""
        ...

    async def drop_renditions(self, source_keys: list[str] | None) -> list[str]:
        """Forget the renditions of these originals (None: of every original that is
        gone, after a crash); their blob keys, to remove."""
        ...

    # --- mutations, each with its event -----------------------------------------------
    async def create_album(self, album: str, event: EventText) -> None: ...

    async def delete_album(self, album: str, event: EventText) -> list[str]:
        """Delete the album and its images; the blob keys nothing references now."""
        ...

    async def rename_album(self, album: str, new_name: str, event: EventText) -> None: ...

    async def add_image(
        self, album_id: int, record: ImageRecord, event_of: Callable[[ImageRecord], EventText]
    ) -> AddedImage:
        """Record the image in album ``album_id``, whatever it is called now, pointing
        at the blob already stored with the same sha256 if there is one."""
        ...

    async def delete_image(self, album: str, image: str, event: EventText) -> str | None:
        """Delete the image; its blob key if nothing references the blob any more."""
        ...

    async def rename_image(
        self, album: str, image: str, new_name: str, event: EventText
    ) -> None: ...

    # --- the outbox ------------------------------------------------------------------
    async def pending_events(self, after_id: int, limit: int) -> list[OutboxEvent]: ...

    async def forget_events(self, up_to_id: int) -> None: ...

    async def events_pending(self) -> int: ...

    async def events_dropped(self) -> int: ...

    def close(self) -> None: ...


class BlobWriter(Protocol):
    """One blob being written. Invisible until ``publish``; ``abort`` (any time before
    publish, more than once) leaves nothing."""

    async def write(self, chunk: bytes) -> None: ...

    async def publish(self) -> None:
        """Make the bytes durable under the writer's key."""
        ...

    def abort(self) -> None: ...


class BlobReader(Protocol):
    size: int

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes in [start, end), in bounded pieces."""
        ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    """Image bytes under keys made by the store (never by a client)."""

    async def begin(self, key: str) -> BlobWriter: ...

    async def open(self, key: str) -> BlobReader:
        """NotFound if there is no such blob. An open reader stays valid after the
        blob is removed."""
        ...

    async def remove(self, keys: list[str]) -> None:
        """Remove blobs; failures are only logged (the next sweep retries)."""
        ...

    def published_keys(self) -> AsyncIterator[list[str]]:
        """Every published blob's key, in batches (for the orphan sweep)."""
        ...

    async def remove_unfinished(self) -> int:
        """Remove every unfinished upload (only while none runs: at start-up)."""
        ...

    async def free_bytes(self) -> int | None:
        """Room left for new blobs; None when the backend cannot tell."""
        ...

    async def ping(self) -> None:
        """StorageUnavailable unless the blob store answers (for /healthz)."""
        ...

    def close(self) -> None: ...


EventOf = Callable[[ImageRecord], EventText]
