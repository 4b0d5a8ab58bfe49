"""The SQLite catalog (the single-host default): albums, images, blobs and the outbox.

Writes run on one connection, on one thread of their own (every commit is fsynced,
which must not run on the IOLoop; SQLite takes one writer at a time anyway). Reads use
a second connection on the caller's thread, which WAL lets run beside the writer.

Group commit: the writes that queue up while the writer thread commits share its next
transaction, each in a savepoint of its own, and one fsync of the WAL (store/
group_commit.py). A write's caller hears of it only after that commit: durable as if it
had committed alone. A member refused (Conflict, NotFound) rolls back to its savepoint
and the others go on; a storage failure in a member rolls the batch back and runs each
member alone.

The outbox's order: one writer at a time, so AUTOINCREMENT ids rise in commit order
and leave no gap (a rolled-back insert rolls its id back too); the pending count is
the number of rows.
"""

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from store import events
from store.errors import Conflict, NotFound, StorageFull, StorageUnavailable
from store.group_commit import GroupCommitter
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

# A cache hit marks its rendition used again only when the mark is this old: an
# approximate LRU that spares most hits a write.
TOUCH_SECONDS = 60.0

# At most one "outbox full" warning in this many seconds (the counter keeps the total).
DROP_WARNING_INTERVAL = 10.0

# Each entry moves the schema one version up; PRAGMA user_version records where a
# catalog stands. Never edit a released entry: append a new one.
MIGRATIONS = (
    """
    CREATE TABLE albums (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE images (
        id           INTEGER PRIMARY KEY,
        album_id     INTEGER NOT NULL REFERENCES albums(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   REAL NOT NULL,
        blob_key     TEXT NOT NULL UNIQUE,
        UNIQUE (album_id, name)
    );
    """,
    # The transactional outbox: one row per change event, written in the change's
    # own transaction, deleted once the broker has acknowledged it. AUTOINCREMENT
    # keeps ids rising even after deletions, so consumers can drop duplicates.
    """
    CREATE TABLE outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        payload TEXT NOT NULL
    );
    """,
    # Counters shared by every process serving the folder (and kept across restarts).
    """
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('events_dropped', 0);
    """,
    # Album ids are never reused (AUTOINCREMENT): an upload is bound to the album it
    # began in by id, and a deleted album's id must not come back as a new album's.
    """
    CREATE TABLE albums_new (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        name       TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    INSERT INTO albums_new (id, name, created_at) SELECT id, name, created_at FROM albums;
    DROP TABLE albums;
    ALTER TABLE albums_new RENAME TO albums;
    """,
    # Identical bytes are stored once: a blob row per distinct sha256, counting the
    # images that point at it. Existing duplicates are folded onto one blob (the
    # others become orphans, which the start-up sweep removes).
    """
    CREATE TABLE blobs (
        key    TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        size   INTEGER NOT NULL,
        refs   INTEGER NOT NULL CHECK (refs > 0)
    );
    INSERT INTO blobs (key, sha256, size, refs)
        SELECT min(blob_key), sha256, min(size), count(*) FROM images GROUP BY sha256;
    CREATE TABLE images_new (
        id           INTEGER PRIMARY KEY,
        album_id     INTEGER NOT NULL REFERENCES albums(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   REAL NOT NULL,
        blob_key     TEXT NOT NULL REFERENCES blobs(key),
        UNIQUE (album_id, name)
    );
    INSERT INTO images_new
        SELECT i.id, i.album_id, i.name, i.size, i.sha256, i.content_type, i.created_at, b.key
        FROM images i JOIN blobs b ON b.sha256 = i.sha256;
    DROP TABLE images;
    ALTER TABLE images_new RENAME TO images;
    CREATE INDEX images_by_blob ON images (blob_key);
    """,
    # Dimensions on record: width and height in pixels from the image's header; null
    # for the images stored before (the backfill fills them: README, Renditions).
    """
    ALTER TABLE images ADD COLUMN width INTEGER;
    ALTER TABLE images ADD COLUMN height INTEGER;
    CREATE INDEX images_without_dimensions ON images (sha256) WHERE width IS NULL;
    """,
    # The rendition cache: blobs made from an original (source_key), least recently
    # used evicted past a byte budget. No foreign key: the originals' rows go first
    # and their renditions are dropped right after (or by the start-up sweep).
    """
    CREATE TABLE renditions (
        source_key   TEXT NOT NULL,
        spec         TEXT NOT NULL,
        blob_key     TEXT NOT NULL UNIQUE,
        size         INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        width        INTEGER NOT NULL,
        height       INTEGER NOT NULL,
        last_used    REAL NOT NULL,
        PRIMARY KEY (source_key, spec)
    );
    CREATE INDEX renditions_by_use ON renditions (last_used);
    """,
    # Each album's image count, bytes and last change, kept in every change's own
    # transaction, so that a detailed list reads them instead of counting.
    """
    ALTER TABLE albums ADD COLUMN image_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE albums ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE albums ADD COLUMN updated_at REAL NOT NULL DEFAULT 0;
    UPDATE albums SET
        image_count = (SELECT count(*) FROM images WHERE album_id = albums.id),
        bytes = (SELECT coalesce(sum(size), 0) FROM images WHERE album_id = albums.id),
        updated_at = max(created_at, coalesce(
            (SELECT max(created_at) FROM images WHERE album_id = albums.id), 0));
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# An image's record after its album's name, as ImageRecord takes them.
IMAGE_COLUMNS = "name, size, sha256, content_type, created_at, blob_key, width, height"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Turn SQLite's failures into the store's domain errors."""
    try:
        yield
    except sqlite3.OperationalError as err:
        if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise StorageFull("the disk is full: the catalog cannot record the change") from err
        raise StorageUnavailable(f"the catalog is unavailable: {err}") from err
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the disk is full") from err
        raise StorageUnavailable(f"storage error: {err.strerror}") from err


class CatalogLock:
    """One service instance (with its workers) per SQLite catalog: two would both
    publish the outbox and sweep each other's uploads."""

    # A restarted service may find its killed predecessor's workers still exiting.
    PATIENCE_SECONDS = 2.0

    def __init__(self, path: str) -> None:
        lock_path = path + ".lock"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fd: int | None = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        except OSError as err:
            raise StorageUnavailable(f"cannot open {lock_path}: {err.strerror}") from err
        deadline = time.monotonic() + self.PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.release()
                    raise StorageUnavailable(
                        f"the catalog {path} is in use by another imagestore process"
                    ) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqliteCatalog:
    """``outbox_limit``: events kept for the notifier at most; None records none."""

    def __init__(self, path: str, outbox_limit: int | None = None) -> None:
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        self._outbox_limit = outbox_limit
        self._last_drop_warning = 0.0
        try:
            os.makedirs(folder, exist_ok=True)
            self._writes = ThreadPoolExecutor(1, thread_name_prefix="catalog-writer")
            self._batch = GroupCommitter(
                self._writes,
                begin=self._begin_batch,
                commit=self._commit_batch,
                roll_back=self._roll_back_batch,
                lock_path=path + ".writer",
            )
            with _storage_errors():
                self._writer = _connect(path)
                self._migrate()
                self._reader = _connect(path)
        except OSError as err:
            raise StorageUnavailable(f"cannot open the catalog {path}: {err.strerror}") from err

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        self._batch.close()
        self._reader.close()
        self._writer.close()

    def _migrate(self) -> None:
        version = self._writer.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"the catalog has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}: upgrade imagestore"
            )
        # A migration may rebuild a table that others reference: with foreign keys
        # enforced, dropping the old one would cascade (it can only be switched off
        # outside a transaction).
        self._writer.execute("PRAGMA foreign_keys=OFF")
        try:
            for number in range(version, SCHEMA_VERSION):
                with self._transaction() as tx:
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            tx.execute(statement)
                    if tx.execute("PRAGMA foreign_key_check").fetchall():
                        raise StorageUnavailable("the catalog's migration broke its references")
                    tx.execute(f"PRAGMA user_version={number + 1}")
        finally:
            self._writer.execute("PRAGMA foreign_keys=ON")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write's transaction; inside a batch (group commit), its savepoint."""
        if self._batch.open:
            with _storage_errors():
                self._writer.execute("SAVEPOINT member")
                try:
                    yield self._writer
                except BaseException:
                    if self._writer.in_transaction:
                        self._writer.execute("ROLLBACK TO member")
                        self._writer.execute("RELEASE member")
                    raise
                self._writer.execute("RELEASE member")
            return
        with _storage_errors():
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._batch.run(fn, *args)

    def _begin_batch(self) -> None:
        with _storage_errors():
            self._writer.execute("BEGIN IMMEDIATE")

    def _commit_batch(self) -> None:
        with _storage_errors():
            self._writer.execute("COMMIT")

    def _roll_back_batch(self) -> None:
        with _storage_errors():
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")

    async def ping(self) -> None:
        self._read("SELECT 1")

    async def lead(self) -> bool:
        # One instance per SQLite catalog (CatalogLock): its publishing worker leads.
        return True

    # --- reads (on the caller's thread: the IOLoop's) --------------------------------

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with _storage_errors():
            return self._reader.execute(sql, args).fetchall()

    async def change_token(self) -> int:
        # Changes whenever another connection (the writer, any process) commits.
        return int(self._read("PRAGMA data_version")[0][0])

    async def album_names(self) -> list[str]:
        return [row[0] for row in self._read("SELECT name FROM albums ORDER BY name")]

    async def album_id(self, album: str) -> int:
        rows = self._read("SELECT id FROM albums WHERE name = ?", (album,))
        if not rows:
            raise NotFound(f"album {album} does not exist")
        return int(rows[0][0])

    async def image_names(self, album: str) -> list[str]:
        rows = self._read(
            "SELECT i.name FROM albums a LEFT JOIN images i ON i.album_id = a.id "
            "WHERE a.name = ? ORDER BY i.name",
            (album,),
        )
        if not rows:
            raise NotFound(f"album {album} does not exist")
        return [row[0] for row in rows if row[0] is not None]

    async def image_exists(self, album: str, image: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM images i JOIN albums a ON i.album_id = a.id "
                "WHERE a.name = ? AND i.name = ?",
                (album, image),
            )
        )

    async def album_page(self, names: NameRange, limit: int | None) -> list[AlbumSummary]:
        where, args = names.conditions("name", "?")
        rows = self._read(
            "SELECT name, image_count, bytes, created_at, updated_at FROM albums "
            f"WHERE {where} ORDER BY name LIMIT ?",
            (*args, -1 if limit is None else limit),
        )
        return [AlbumSummary(*row) for row in rows]

    async def image_page(
        self, album: str, names: NameRange, limit: int | None
    ) -> list[ImageRecord]:
        album_id = await self.album_id(album)
        where, args = names.conditions("name", "?")
        rows = self._read(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE album_id = ? AND {where} "
            "ORDER BY name LIMIT ?",
            (album_id, *args, -1 if limit is None else limit),
        )
        return [ImageRecord(album, *row) for row in rows]

    async def totals(self) -> CatalogTotals:
        row = self._read(
            "SELECT count(*), coalesce(sum(image_count), 0), coalesce(sum(bytes), 0) FROM albums"
        )[0]
        return CatalogTotals(*row)

    async def find_image(self, album: str, image: str) -> ImageRecord:
        rows = self._read(
            "SELECT a.name, i.name, i.size, i.sha256, i.content_type, i.created_at, i.blob_key, "
            "i.width, i.height "
            "FROM images i JOIN albums a ON i.album_id = a.id WHERE a.name = ? AND i.name = ?",
            (album, image),
        )
        if not rows:
            if not self._read("SELECT 1 FROM albums WHERE name = ?", (album,)):
                raise NotFound(f"album {album} does not exist")
            raise NotFound(f"image {image} does not exist in album {album}")
        return ImageRecord(*rows[0])

    async def unreferenced(self, blob_keys: list[str]) -> list[str]:
        known: set[str] = set()
        for first in range(0, len(blob_keys), 500):
            batch = blob_keys[first : first + 500]
            marks = ",".join("?" * len(batch))
            known |= {
                row[0]
                for row in self._read(
                    f"SELECT key FROM blobs WHERE key IN ({marks}) UNION ALL "
                    f"SELECT blob_key FROM renditions WHERE blob_key IN ({marks})",
                    tuple(batch) * 2,
                )
            }
        return [key for key in blob_keys if key not in known]

    async def without_dimensions(self, after_sha256: str, limit: int) -> list[ImageBytes]:
        rows = self._read(
            "SELECT sha256, min(blob_key), min(content_type) FROM images "
            "WHERE width IS NULL AND sha256 > ? GROUP BY sha256 ORDER BY sha256 LIMIT ?",
            (after_sha256, limit),
        )
        return [ImageBytes(*row) for row in rows]

    async def record_dimensions(self, sha256: str, width: int, height: int) -> None:
        def record() -> None:
            with self._transaction() as tx:
                tx.execute(
                    "UPDATE images SET width = ?, height = ? WHERE sha256 = ? AND width IS NULL",
                    (width, height, sha256),
                )

        await self._write(record)

    # --- the rendition cache ------------------------------------------------------------

    async def find_rendition(self, source_key: str, spec: str) -> CachedRendition | None:
        rows = self._read(
            "SELECT source_key, spec, blob_key, size, content_type, width, height, last_used "
            "FROM renditions WHERE source_key = ? AND spec = ?",
            (source_key, spec),
        )
        if not rows:
            return None
        now = time.time()
        if now - rows[0][7] > TOUCH_SECONDS:

            def touch() -> None:
                with self._transaction() as tx:
                    tx.execute(
                        "UPDATE renditions SET last_used = ? WHERE source_key = ? AND spec = ?",
                        (now, source_key, spec),
                    )

            await self._write(touch)
        return CachedRendition(*rows[0][:7])

    async def add_rendition(self, rendition: CachedRendition, max_bytes: int) -> list[str]:
        def add() -> list[str]:
            with self._transaction() as tx:
                inserted = tx.execute(
                    "INSERT INTO renditions (source_key, spec, blob_key, size, content_type, "
                    "width, height, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (*dataclasses.astuple(rendition), time.time()),
                ).rowcount
                gone = [] if inserted else [rendition.blob_key]
                excess = tx.execute("SELECT coalesce(sum(size), 0) FROM renditions").fetchone()[0]
                excess -= max_bytes
                if excess > 0:
                    for key, size in tx.execute(
                        "SELECT blob_key, size FROM renditions ORDER BY last_used, blob_key"
                    ).fetchall():
                        gone.append(key)
                        excess -= size
                        if excess <= 0:
                            break
                    marks = ",".join("?" * len(gone))
                    tx.execute(f"DELETE FROM renditions WHERE blob_key IN ({marks})", gone)
            return gone

        return await self._write(add)

    async def drop_renditions(self, source_keys: list[str] | None) -> list[str]:
        def drop() -> list[str]:
            with self._transaction() as tx:
                if source_keys is None:
                    where = "source_key NOT IN (SELECT key FROM blobs)"
                    args: tuple[str, ...] = ()
                else:
                    where = f"source_key IN ({','.join('?' * len(source_keys))})"
                    args = tuple(source_keys)
                keys = [
                    row[0]
                    for row in tx.execute(f"SELECT blob_key FROM renditions WHERE {where}", args)
                ]
                tx.execute(f"DELETE FROM renditions WHERE {where}", args)
            return keys

        if source_keys == []:
            return []
        return await self._write(drop)

    # --- the outbox --------------------------------------------------------------------

    async def pending_events(self, after_id: int, limit: int) -> list[events.OutboxEvent]:
        rows = self._read(
            "SELECT id, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [events.OutboxEvent.from_row(event_id, payload) for event_id, payload in rows]

    async def forget_events(self, up_to_id: int) -> None:
        def forget() -> None:
            with self._transaction() as tx:
                tx.execute("DELETE FROM outbox WHERE id <= ?", (up_to_id,))

        await self._write(forget)

    async def events_pending(self) -> int:
        return int(self._read("SELECT count(*) FROM outbox")[0][0])

    async def events_dropped(self) -> int:
        rows = self._read("SELECT value FROM counters WHERE name = 'events_dropped'")
        return int(rows[0][0])

    def _record(self, tx: sqlite3.Connection, event: EventText) -> None:
        """Add the change's event to the outbox, inside the change's transaction."""
        if self._outbox_limit is None:
            return
        newest = tx.execute("INSERT INTO outbox (payload) VALUES (?)", (event,)).lastrowid or 0
        oldest = tx.execute("SELECT min(id) FROM outbox").fetchone()[0]
        if newest - oldest + 1 <= self._outbox_limit:
            return
        dropped = tx.execute(
            "DELETE FROM outbox WHERE id <= ?", (newest - self._outbox_limit,)
        ).rowcount
        tx.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'events_dropped'", (dropped,)
        )
        now = time.monotonic()
        if now - self._last_drop_warning > DROP_WARNING_INTERVAL:
            self._last_drop_warning = now
            total = tx.execute(
                "SELECT value FROM counters WHERE name = 'events_dropped'"
            ).fetchone()[0]
            log.warning(
                "the event outbox is full (%d events): dropped the oldest; %d dropped in all",
                self._outbox_limit,
                total,
            )

    # --- mutations (on the writer thread) ---------------------------------------------

    @staticmethod
    def _album_row_id(tx: sqlite3.Connection, album: str) -> int:
        row = tx.execute("SELECT id FROM albums WHERE name = ?", (album,)).fetchone()
        if row is None:
            raise NotFound(f"album {album} does not exist")
        return int(row[0])

    @staticmethod
    def _release_blob(tx: sqlite3.Connection, key: str) -> bool:
        """One image less points at the blob; True when none does any more."""
        tx.execute("UPDATE blobs SET refs = refs - 1 WHERE key = ? AND refs > 1", (key,))
        if tx.execute("SELECT changes()").fetchone()[0]:
            return False
        tx.execute("DELETE FROM blobs WHERE key = ?", (key,))
        return True

    async def create_album(self, album: str, event: EventText) -> None:
        def create() -> None:
            with self._transaction() as tx:
                try:
                    now = time.time()
                    tx.execute(
                        "INSERT INTO albums (name, created_at, updated_at) VALUES (?, ?, ?)",
                        (album, now, now),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"album {album} already exists") from None
                self._record(tx, event)

        await self._write(create)

    async def delete_album(self, album: str, event: EventText) -> list[str]:
        def delete() -> list[str]:
            with self._transaction() as tx:
                album_id = self._album_row_id(tx, album)
                keys = [
                    row[0]
                    for row in tx.execute(
                        "SELECT blob_key FROM images WHERE album_id = ?", (album_id,)
                    )
                ]
                tx.execute("DELETE FROM albums WHERE id = ?", (album_id,))
                freed = [key for key in keys if self._release_blob(tx, key)]
                self._record(tx, event)
            return freed

        return await self._write(delete)

    async def rename_album(self, album: str, new_name: str, event: EventText) -> None:
        def rename() -> None:
            with self._transaction() as tx:
                album_id = self._album_row_id(tx, album)
                try:
                    tx.execute(
                        "UPDATE albums SET name = ?, updated_at = ? WHERE id = ?",
                        (new_name, time.time(), album_id),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"album {new_name} already exists") from None
                self._record(tx, event)

        await self._write(rename)

    async def add_image(self, album_id: int, record: ImageRecord, event_of: EventOf) -> AddedImage:
        def add() -> AddedImage:
            with self._transaction() as tx:
                row = tx.execute("SELECT name FROM albums WHERE id = ?", (album_id,)).fetchone()
                if row is None:  # deleted while the image was arriving
                    raise NotFound(f"album {record.album} does not exist")
                stored = dataclasses.replace(record, album=row[0])
                same = tx.execute(
                    "SELECT key FROM blobs WHERE sha256 = ?", (record.sha256,)
                ).fetchone()
                if same is None:
                    tx.execute(
                        "INSERT INTO blobs (key, sha256, size, refs) VALUES (?, ?, ?, 1)",
                        (record.blob_key, record.sha256, record.size),
                    )
                else:
                    tx.execute("UPDATE blobs SET refs = refs + 1 WHERE key = ?", (same[0],))
                    stored = dataclasses.replace(stored, blob_key=same[0])
                try:
                    tx.execute(
                        "INSERT INTO images (album_id, name, size, sha256, content_type, "
                        "created_at, blob_key, width, height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            album_id,
                            stored.name,
                            stored.size,
                            stored.sha256,
                            stored.content_type,
                            stored.created_at,
                            stored.blob_key,
                            stored.width,
                            stored.height,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(
                        f"image {stored.name} already exists in album {stored.album}"
                    ) from None
                tx.execute(
                    "UPDATE albums SET image_count = image_count + 1, bytes = bytes + ?, "
                    "updated_at = ? WHERE id = ?",
                    (stored.size, time.time(), album_id),
                )
                self._record(tx, event_of(stored))
            return AddedImage(stored, record.blob_key if same is not None else None)

        return await self._write(add)

    @staticmethod
    def _image_row(tx: sqlite3.Connection, album: str, image: str) -> tuple[int, str]:
        album_id = SqliteCatalog._album_row_id(tx, album)
        row = tx.execute(
            "SELECT id, blob_key FROM images WHERE album_id = ? AND name = ?", (album_id, image)
        ).fetchone()
        if row is None:
            raise NotFound(f"image {image} does not exist in album {album}")
        return int(row[0]), str(row[1])

    async def delete_image(self, album: str, image: str, event: EventText) -> str | None:
        def delete() -> str | None:
            with self._transaction() as tx:
                image_id, blob_key = self._image_row(tx, album, image)
                tx.execute(
                    "UPDATE albums SET image_count = image_count - 1, "
                    "bytes = bytes - (SELECT size FROM images WHERE id = ?), updated_at = ? "
                    "WHERE id = (SELECT album_id FROM images WHERE id = ?)",
                    (image_id, time.time(), image_id),
                )
                tx.execute("DELETE FROM images WHERE id = ?", (image_id,))
                freed = self._release_blob(tx, blob_key)
                self._record(tx, event)
            return blob_key if freed else None

        return await self._write(delete)

    async def rename_image(self, album: str, image: str, new_name: str, event: EventText) -> None:
        def rename() -> None:
            with self._transaction() as tx:
                image_id, _ = self._image_row(tx, album, image)
                try:
                    tx.execute("UPDATE images SET name = ? WHERE id = ?", (new_name, image_id))
                except sqlite3.IntegrityError:
                    raise Conflict(f"image {new_name} already exists in album {album}") from None
                tx.execute(
                    "UPDATE albums SET updated_at = ? "
                    "WHERE id = (SELECT album_id FROM images WHERE id = ?)",
                    (time.time(), image_id),
                )
                self._record(tx, event)

        await self._write(rename)
