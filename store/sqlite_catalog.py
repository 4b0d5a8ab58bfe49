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
from store.ports import AddedImage, EventOf, EventText, ImageRecord

log = logging.getLogger("imagestore.store")

T = TypeVar("T")

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
)

SCHEMA_VERSION = len(MIGRATIONS)


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

    async def find_image(self, album: str, image: str) -> ImageRecord:
        rows = self._read(
            "SELECT a.name, i.name, i.size, i.sha256, i.content_type, i.created_at, i.blob_key "
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
                for row in self._read(f"SELECT key FROM blobs WHERE key IN ({marks})", tuple(batch))
            }
        return [key for key in blob_keys if key not in known]

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
                    tx.execute(
                        "INSERT INTO albums (name, created_at) VALUES (?, ?)", (album, time.time())
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
                    tx.execute("UPDATE albums SET name = ? WHERE id = ?", (new_name, album_id))
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
                        "created_at, blob_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            album_id,
                            stored.name,
                            stored.size,
                            stored.sha256,
                            stored.content_type,
                            stored.created_at,
                            stored.blob_key,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(
                        f"image {stored.name} already exists in album {stored.album}"
                    ) from None
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
                self._record(tx, event)

        await self._write(rename)
