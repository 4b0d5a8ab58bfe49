"""The PostgreSQL catalog, for several service instances: albums, images, blobs and
the event outbox, through an asyncpg connection pool (one per worker process).

The outbox's order with many writers: a bigserial would not give commit order (a
transaction that took id 7 may commit after the one that took id 8, and a reader that
saw 8 would skip 7). Here every mutation ends by bumping one counter row,
``UPDATE counters ... RETURNING``, as its last statement: the row lock it takes is held
until the commit, so the changes commit one at a time in the order of the numbers
they drew, and the number is the event's id. A reader that asks for ids above the last
it saw therefore skips none, ids rise in commit order without gaps (a rollback gives
its number back), and the pending count is exact. The same counter is the change
token that list caches compare. The lock is held only from that last statement to the
end of the commit.

Names are compared and sorted by code point (COLLATE "C"), as in SQLite.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from store import events
from store.errors import Conflict, NotFound, StorageFull, StorageUnavailable
from store.listing import NameRange
from store.ports import (
    AddedImage,
    AlbumSummary,
    CachedRendition,
    CatalogTotals,
    EventOf,
    EventText,
    ImageBytes,
    ImageRecord,
)

log = logging.getLogger("imagestore.store")

T = TypeVar("T")
# A connection lent by the pool (generic in the stubs only).
Db: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# Serialises schema migrations when several instances start at once.
MIGRATION_LOCK = 0x696D6773  # "imgs"
# Held for as long as one instance publishes the outbox.
PUBLISHER_LOCK = 0x696D6770  # "imgp"
DROP_WARNING_INTERVAL = 10.0
# Serialises the rendition cache's evictions among instances.
RENDITION_LOCK = 0x696D6772  # "imgr"
# A cache hit marks its rendition used again only when the mark is this old: an
# approximate LRU that spares most hits a write.
TOUCH_SECONDS = 60.0

MIGRATIONS = (
    """
    CREATE TABLE albums (
        id         bigserial PRIMARY KEY,
        name       text COLLATE "C" NOT NULL UNIQUE,
        created_at double precision NOT NULL
    );
    CREATE TABLE blobs (
        key    text PRIMARY KEY,
        sha256 text NOT NULL UNIQUE,
        size   bigint NOT NULL,
        refs   integer NOT NULL CHECK (refs >= 0)
    );
    CREATE TABLE images (
        id           bigserial PRIMARY KEY,
        album_id     bigint NOT NULL REFERENCES albums(id) ON DELETE CASCADE,
        name         text COLLATE "C" NOT NULL,
        size         bigint NOT NULL,
        sha256       text NOT NULL,
        content_type text NOT NULL,
        created_at   double precision NOT NULL,
        blob_key     text NOT NULL REFERENCES blobs(key),
        UNIQUE (album_id, name)
    );
    CREATE INDEX images_by_blob ON images (blob_key);
    CREATE TABLE outbox (
        id      bigint PRIMARY KEY,
        payload text NOT NULL
    );
    CREATE TABLE counters (
        name  text PRIMARY KEY,
        value bigint NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('changes', 0), ('events_dropped', 0);
    """,
    # Dimensions on record: width and height in pixels from the image's header; null
    # for the images stored before (the backfill fills them: README, Renditions).
    """
    ALTER TABLE images ADD COLUMN width integer, ADD COLUMN height integer;
    CREATE INDEX images_without_dimensions ON images (sha256) WHERE width IS NULL;
    """,
    # The rendition cache: blobs made from an original (source_key), least recently
    # used evicted past a byte budget. No foreign key: the originals' rows go first
    # and their renditions are dropped right after (or by the start-up sweep).
    """
    CREATE TABLE renditions (
        source_key   text NOT NULL,
        spec         text NOT NULL,
        blob_key     text NOT NULL UNIQUE,
        size         bigint NOT NULL,
        content_type text NOT NULL,
        width        integer NOT NULL,
        height       integer NOT NULL,
        last_used    double precision NOT NULL,
        PRIMARY KEY (source_key, spec)
    );
    CREATE INDEX renditions_by_use ON renditions (last_used);
    """,
    # Each album's image count, bytes and last change, kept in every change's own
    # transaction, so that a detailed list reads them instead of counting.
    """
    ALTER TABLE albums
        ADD COLUMN image_count bigint NOT NULL DEFAULT 0,
        ADD COLUMN bytes bigint NOT NULL DEFAULT 0,
        ADD COLUMN updated_at double precision NOT NULL DEFAULT 0;
    UPDATE albums a SET
        image_count = (SELECT count(*) FROM images i WHERE i.album_id = a.id),
        bytes = (SELECT coalesce(sum(size), 0) FROM images i WHERE i.album_id = a.id),
        updated_at = greatest(a.created_at, coalesce(
            (SELECT max(i.created_at) FROM images i WHERE i.album_id = a.id), 0));
    """,
)

# An image's record after its album's name, as ImageRecord takes them.
IMAGE_COLUMNS = "name, size, sha256, content_type, created_at, blob_key, width, height"


class _OneLine(logging.Filter):
    """asyncpg's pool logs its failures to reconnect with a traceback; an unreachable
    database is a state to report, not a bug: one line, the reason in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {_unavailable(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
        return True


logging.getLogger("asyncpg").addFilter(_OneLine())
logging.getLogger("asyncpg.pool").addFilter(_OneLine())


def _unavailable(err: BaseException) -> StorageUnavailable:
    reason = getattr(err, "message", None) or str(err) or type(err).__name__
    return StorageUnavailable(f"the catalog is unavailable: {reason}")


class PostgresCatalog:
    """``outbox_limit``: events kept for the notifier at most; None records none."""

    def __init__(self, url: str, outbox_limit: int | None = None, pool_size: int = 8) -> None:
        self._url = url
        self._outbox_limit = outbox_limit
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._leader: asyncpg.Connection | None = None
        self._last_drop_warning = 0.0

    # --- connections ---------------------------------------------------------------

    async def _connected(self) -> asyncpg.Pool:
        """The pool, made (and the schema brought up to date) on first use: inside the
        worker's own event loop."""
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        self._url, min_size=1, max_size=self._pool_size, command_timeout=30
                    )
                except (TimeoutError, OSError, asyncpg.PostgresError) as err:
                    raise _unavailable(err) from err
                try:
                    async with pool.acquire() as connection:
                        await self._migrate(connection)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Db]:
        pool = await self._connected()
        try:
            async with pool.acquire() as connection:
                yield connection
        except (NotFound, Conflict):
            raise
        except asyncpg.DiskFullError as err:
            raise StorageFull("the catalog's disk is full: the change was not recorded") from err
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise _unavailable(err) from err

    async def _migrate(self, connection: Db) -> None:
        async with connection.transaction():
            # Several instances may start at once: one migrates, the others wait here
            # and then find the work done.
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = await connection.fetchval(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"
            )
            if version > len(MIGRATIONS):
                raise StorageUnavailable(
                    f"the catalog has schema version {version}, newer than this program's "
                    f"{len(MIGRATIONS)}: upgrade imagestore"
                )
            for number in range(version, len(MIGRATIONS)):
                await connection.execute(MIGRATIONS[number])
                await connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", number + 1
                )

    def close(self) -> None:
        """What is open is dropped (nothing is pending: every mutation has committed or
        rolled back); PostgreSQL ends the sessions, the publisher's lock with them."""
        pool, leader = self._pool, self._leader
        self._pool = self._leader = None
        for connections in (pool, leader):
            if connections is not None:
                try:
                    connections.terminate()
                except RuntimeError:  # its event loop is closed already: so are they
                    pass

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval("SELECT 1")

    # --- reads -------------------------------------------------------------------------

    async def change_token(self) -> int:
        async with self._connection() as connection:
            return int(
                await connection.fetchval("SELECT value FROM counters WHERE name = 'changes'")
            )

    async def album_names(self) -> list[str]:
        async with self._connection() as connection:
            rows = await connection.fetch("SELECT name FROM albums ORDER BY name")
        return [row[0] for row in rows]

    async def album_id(self, album: str) -> int:
        async with self._connection() as connection:
            found = await connection.fetchval("SELECT id FROM albums WHERE name = $1", album)
        if found is None:
            raise NotFound(f"album {album} does not exist")
        return int(found)

    async def image_names(self, album: str) -> list[str]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT i.name FROM albums a LEFT JOIN images i ON i.album_id = a.id "
                "WHERE a.name = $1 ORDER BY i.name",
                album,
            )
        if not rows:
            raise NotFound(f"album {album} does not exist")
        return [row[0] for row in rows if row[0] is not None]

    async def image_exists(self, album: str, image: str) -> bool:
        async with self._connection() as connection:
            found = await connection.fetchval(
                "SELECT 1 FROM images i JOIN albums a ON i.album_id = a.id "
                "WHERE a.name = $1 AND i.name = $2",
                album,
                image,
            )
        return found is not None

    async def album_page(self, names: NameRange, limit: int | None) -> list[AlbumSummary]:
        where, args = names.conditions("name", "$", first=2)
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT name, image_count, bytes, created_at, updated_at FROM albums "
                f"WHERE {where} ORDER BY name LIMIT $1",
                limit,
                *args,
            )
        return [AlbumSummary(*row) for row in rows]

    async def image_page(
        self, album: str, names: NameRange, limit: int | None
    ) -> list[ImageRecord]:
        where, args = names.conditions("name", "$", first=3)
        async with self._connection() as connection:
            album_id = await connection.fetchval("SELECT id FROM albums WHERE name = $1", album)
            if album_id is None:
                raise NotFound(f"album {album} does not exist")
            rows = await connection.fetch(
                f"SELECT {IMAGE_COLUMNS} FROM images WHERE album_id = $1 AND {where} "
                "ORDER BY name LIMIT $2",
                album_id,
                limit,
                *args,
            )
        return [ImageRecord(album, *row) for row in rows]

    async def totals(self) -> CatalogTotals:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT count(*), coalesce(sum(image_count), 0)::bigint, "
                "coalesce(sum(bytes), 0)::bigint FROM albums"
            )
        row = rows[0]
        return CatalogTotals(int(row[0]), int(row[1]), int(row[2]))

    async def find_image(self, album: str, image: str) -> ImageRecord:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                "SELECT a.name, i.name, i.size, i.sha256, i.content_type, i.created_at, "
                "i.blob_key, i.width, i.height FROM images i JOIN albums a ON i.album_id = a.id "
                "WHERE a.name = $1 AND i.name = $2",
                album,
                image,
            )
            if row is None:
                if await connection.fetchval("SELECT 1 FROM albums WHERE name = $1", album):
                    raise NotFound(f"image {image} does not exist in album {album}")
                raise NotFound(f"album {album} does not exist")
        return ImageRecord(*row)

    async def unreferenced(self, blob_keys: list[str]) -> list[str]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT key FROM blobs WHERE key = ANY($1::text[]) UNION ALL "
                "SELECT blob_key FROM renditions WHERE blob_key = ANY($1::text[])",
                blob_keys,
            )
        known = {row[0] for row in rows}
        return [key for key in blob_keys if key not in known]

    async def without_dimensions(self, after_sha256: str, limit: int) -> list[ImageBytes]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT sha256, min(blob_key), min(content_type) FROM images "
                'WHERE width IS NULL AND sha256 COLLATE "C" > $1 GROUP BY sha256 '
                'ORDER BY sha256 COLLATE "C" LIMIT $2',
                after_sha256,
                limit,
            )
        return [ImageBytes(row[0], row[1], row[2]) for row in rows]

    async def record_dimensions(self, sha256: str, width: int, height: int) -> None:
        async def record(connection: Db) -> None:
            await connection.execute(
                "UPDATE images SET width = $1, height = $2 WHERE sha256 = $3 AND width IS NULL",
                width,
                height,
                sha256,
            )
            await self._commit(connection, None)

        await self._mutate(record)

    # --- the rendition cache ------------------------------------------------------------

    async def find_rendition(self, source_key: str, spec: str) -> CachedRendition | None:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                "SELECT source_key, spec, blob_key, size, content_type, width, height, "
                "last_used FROM renditions WHERE source_key = $1 AND spec = $2",
                source_key,
                spec,
            )
            if row is None:
                return None
            now = time.time()
            if now - row[7] > TOUCH_SECONDS:
                await connection.execute(
                    "UPDATE renditions SET last_used = $3 WHERE source_key = $1 AND spec = $2",
                    source_key,
                    spec,
                    now,
                )
        return CachedRendition(*row[:7])

    async def add_rendition(self, rendition: CachedRendition, max_bytes: int) -> list[str]:
        async with self._connection() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", RENDITION_LOCK)
            inserted = await connection.fetchval(
                "INSERT INTO renditions (source_key, spec, blob_key, size, content_type, "
                "width, height, last_used) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                rendition.source_key,
                rendition.spec,
                rendition.blob_key,
                rendition.size,
                rendition.content_type,
                rendition.width,
                rendition.height,
                time.time(),
            )
            gone = [] if inserted else [rendition.blob_key]
            excess = int(await connection.fetchval("SELECT coalesce(sum(size), 0) FROM renditions"))
            excess -= max_bytes
            if excess > 0:
                for row in await connection.fetch(
                    "SELECT blob_key, size FROM renditions ORDER BY last_used, blob_key"
                ):
                    gone.append(row[0])
                    excess -= row[1]
                    if excess <= 0:
                        break
                await connection.execute(
                    "DELETE FROM renditions WHERE blob_key = ANY($1::text[])", gone
                )
        return gone

    async def drop_renditions(self, source_keys: list[str] | None) -> list[str]:
        if source_keys == []:
            return []
        async with self._connection() as connection:
            if source_keys is None:
                rows = await connection.fetch(
                    "DELETE FROM renditions WHERE source_key NOT IN (SELECT key FROM blobs) "
                    "RETURNING blob_key"
                )
            else:
                rows = await connection.fetch(
                    "DELETE FROM renditions WHERE source_key = ANY($1::text[]) RETURNING blob_key",
                    source_keys,
                )
        return [row[0] for row in rows]

    # --- the outbox ------------------------------------------------------------------

    async def pending_events(self, after_id: int, limit: int) -> list[events.OutboxEvent]:
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, payload FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
                after_id,
                limit,
            )
        return [events.OutboxEvent.from_row(int(row[0]), row[1]) for row in rows]

    async def forget_events(self, up_to_id: int) -> None:
        async with self._connection() as connection:
            await connection.execute("DELETE FROM outbox WHERE id <= $1", up_to_id)

    async def events_pending(self) -> int:
        async with self._connection() as connection:
            return int(await connection.fetchval("SELECT count(*) FROM outbox"))

    async def events_dropped(self) -> int:
        async with self._connection() as connection:
            return int(
                await connection.fetchval(
                    "SELECT value FROM counters WHERE name = 'events_dropped'"
                )
            )

    async def lead(self) -> bool:
        """Whether this process is the one publisher of the outbox: it holds a session
        advisory lock on a connection of its own, released by PostgreSQL when that
        connection ends (a crashed instance's lock goes with it). Call it again to
        learn whether the lead still holds, or to try to take it over."""
        try:
            if self._leader is not None and not self._leader.is_closed():
                await self._leader.fetchval("SELECT 1")
                return True
            self._leader = None
            leader = await asyncpg.connect(self._url, timeout=10)
            if await leader.fetchval("SELECT pg_try_advisory_lock($1)", PUBLISHER_LOCK):
                self._leader = leader
                return True
            await leader.close()
            return False
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if self._leader is not None:
                self._leader.terminate()
                self._leader = None
            return False

    # --- mutations --------------------------------------------------------------------

    async def _commit(self, connection: Db, event: EventText | None) -> None:
        """The last statements of every mutation: draw the next change number (the
        lock on the counter row is held until commit: see the module docstring), and
        record the event under it."""
        number = int(
            await connection.fetchval(
                "UPDATE counters SET value = value + 1 WHERE name = 'changes' RETURNING value"
            )
        )
        if self._outbox_limit is None or event is None:
            return
        await connection.execute("INSERT INTO outbox (id, payload) VALUES ($1, $2)", number, event)
        oldest = int(await connection.fetchval("SELECT min(id) FROM outbox"))
        if number - oldest + 1 > self._outbox_limit:
            dropped = await connection.fetchval(
                "WITH gone AS (DELETE FROM outbox WHERE id <= $1 RETURNING 1) "
                "SELECT count(*) FROM gone",
                number - self._outbox_limit,
            )
            await connection.execute(
                "UPDATE counters SET value = value + $1 WHERE name = 'events_dropped'", dropped
            )
            now = time.monotonic()
            if now - self._last_drop_warning > DROP_WARNING_INTERVAL:
                self._last_drop_warning = now
                log.warning(
                    "the event outbox is full (%d events): dropped the oldest", self._outbox_limit
                )

    async def _mutate(self, change: Callable[[Db], Awaitable[T]]) -> T:
        async with self._connection() as connection, connection.transaction():
            return await change(connection)

    @staticmethod
    async def _album_row_id(connection: Db, album: str, lock: bool = True) -> int:
        found = await connection.fetchval(
            "SELECT id FROM albums WHERE name = $1" + (" FOR UPDATE" if lock else ""), album
        )
        if found is None:
            raise NotFound(f"album {album} does not exist")
        return int(found)

    @staticmethod
    async def _release_blob(connection: Db, key: str, count: int = 1) -> bool:
        """``count`` images fewer point at the blob; True when none does any more. One
        statement takes the row's lock and counts down, so that concurrent deletes of
        images sharing the blob count down one after the other."""
        left = await connection.fetchval(
            "UPDATE blobs SET refs = refs - $2 WHERE key = $1 RETURNING refs", key, count
        )
        if left != 0:
            return False
        await connection.execute("DELETE FROM blobs WHERE key = $1", key)
        return True

    async def create_album(self, album: str, event: EventText) -> None:
        async def create(connection: Db) -> None:
            try:
                async with connection.transaction():
                    now = time.time()
                    await connection.execute(
                        "INSERT INTO albums (name, created_at, updated_at) VALUES ($1, $2, $2)",
                        album,
                        now,
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"album {album} already exists") from None
            await self._commit(connection, event)

        await self._mutate(create)

    async def delete_album(self, album: str, event: EventText) -> list[str]:
        async def delete(connection: Db) -> list[str]:
            album_id = await self._album_row_id(connection, album)
            rows = await connection.fetch(
                "WITH gone AS (DELETE FROM images WHERE album_id = $1 RETURNING blob_key) "
                "SELECT blob_key, count(*) FROM gone GROUP BY blob_key ORDER BY blob_key",
                album_id,
            )
            freed = [row[0] for row in rows if await self._release_blob(connection, row[0], row[1])]
            await connection.execute("DELETE FROM albums WHERE id = $1", album_id)
            await self._commit(connection, event)
            return freed

        return await self._mutate(delete)

    async def rename_album(self, album: str, new_name: str, event: EventText) -> None:
        async def rename(connection: Db) -> None:
            album_id = await self._album_row_id(connection, album)
            try:
                async with connection.transaction():
                    await connection.execute(
                        "UPDATE albums SET name = $1, updated_at = $3 WHERE id = $2",
                        new_name,
                        album_id,
                        time.time(),
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"album {new_name} already exists") from None
            await self._commit(connection, event)

        await self._mutate(rename)

    async def add_image(self, album_id: int, record: ImageRecord, event_of: EventOf) -> AddedImage:
        async def add(connection: Db) -> AddedImage:
            # The album row locked (its counts go up): a delete of the album waits
            # for this insert or has happened before it (then NotFound). Taken before
            # any blob row, as every mutation does (no deadlock).
            name = await connection.fetchval(
                "UPDATE albums SET image_count = image_count + 1, bytes = bytes + $2, "
                "updated_at = $3 WHERE id = $1 RETURNING name",
                album_id,
                record.size,
                time.time(),
            )
            if name is None:  # deleted while the image was arriving
                raise NotFound(f"album {record.album} does not exist")
            # One blob per content: an existing one gains a reference; ours is then
            # redundant (the caller removes it).
            key = await connection.fetchval(
                "INSERT INTO blobs (key, sha256, size, refs) VALUES ($1, $2, $3, 1) "
                "ON CONFLICT (sha256) DO UPDATE SET refs = blobs.refs + 1 RETURNING key",
                record.blob_key,
                record.sha256,
                record.size,
            )
            stored = ImageRecord(
                name,
                record.name,
                record.size,
                record.sha256,
                record.content_type,
                record.created_at,
                key,
                record.width,
                record.height,
            )
            try:
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO images (album_id, name, size, sha256, content_type, "
                        "created_at, blob_key, width, height) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        album_id,
                        stored.name,
                        stored.size,
                        stored.sha256,
                        stored.content_type,
                        stored.created_at,
                        stored.blob_key,
                        stored.width,
                        stored.height,
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"image {stored.name} already exists in album {name}") from None
            await self._commit(connection, event_of(stored))
            return AddedImage(stored, record.blob_key if key != record.blob_key else None)

        return await self._mutate(add)

    @staticmethod
    async def _image_row(
        connection: Db, album: str, image: str, removing: bool = False
    ) -> tuple[int, str]:
        """The image's id and blob key, its row locked; the album's last change set
        to now, and its counts lowered when the image goes (``removing``): the album
        row is taken before any blob row, as every mutation does (no deadlock)."""
        album_id = await PostgresCatalog._album_row_id(connection, album, lock=False)
        row = await connection.fetchrow(
            "SELECT id, blob_key, size FROM images WHERE album_id = $1 AND name = $2 FOR UPDATE",
            album_id,
            image,
        )
        if row is None:
            raise NotFound(f"image {image} does not exist in album {album}")
        gone = 1 if removing else 0
        await connection.execute(
            "UPDATE albums SET image_count = image_count - $2, bytes = bytes - $3, "
            "updated_at = $4 WHERE id = $1",
            album_id,
            gone,
            int(row[2]) * gone,
            time.time(),
        )
        return int(row[0]), str(row[1])

    async def delete_image(self, album: str, image: str, event: EventText) -> str | None:
        async def delete(connection: Db) -> str | None:
            image_id, blob_key = await self._image_row(connection, album, image, removing=True)
            await connection.execute("DELETE FROM images WHERE id = $1", image_id)
            freed = await self._release_blob(connection, blob_key)
            await self._commit(connection, event)
            return blob_key if freed else None

        return await self._mutate(delete)

    async def rename_image(self, album: str, image: str, new_name: str, event: EventText) -> None:
        async def rename(connection: Db) -> None:
            image_id, _ = await self._image_row(connection, album, image)
            try:
                async with connection.transaction():
                    await connection.execute(
                        "UPDATE images SET name = $1 WHERE id = $2", new_name, image_id
                    )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"image {new_name} already exists in album {album}") from None
            await self._commit(connection, event)

        await self._mutate(rename)
