"""The SQLite catalog: albums and images, and nothing else of the disk.

Writes happen on one connection that the store only uses from its single writer
thread (every commit is fsynced, so it must not run on the IOLoop); reads use a
second connection, which WAL lets run beside the writer without waiting.
"""

import contextlib
import dataclasses
import errno
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from store import events
from store.errors import Conflict, NotFound, StorageFull, StorageUnavailable

log = logging.getLogger("imagestore.store")

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
)

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class ImageRecord:
    album: str
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: float
    blob_key: str


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


class Catalog:
    """``outbox_limit``: events kept for the notifier at most; None records none."""

    def __init__(self, path: str, outbox_limit: int | None = None) -> None:
        self._writer = _connect(path)
        self._migrate()
        self._reader = _connect(path)
        self._outbox_limit = outbox_limit
        self._last_drop_warning = 0.0

    def close(self) -> None:
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
        with _storage_errors():
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    # --- reads (any thread that owns the reader: the IOLoop's) -------------------

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with _storage_errors():
            return self._reader.execute(sql, args).fetchall()

    def data_version(self) -> int:
        """Changes whenever any other connection (any process) commits a change."""
        return self._read("PRAGMA data_version")[0][0]

    def album_names(self) -> list[str]:
        return [row[0] for row in self._read("SELECT name FROM albums ORDER BY name")]

    def album_exists(self, album: str) -> bool:
        return bool(self._read("SELECT 1 FROM albums WHERE name = ?", (album,)))

    def album_id(self, album: str) -> int:
        rows = self._read("SELECT id FROM albums WHERE name = ?", (album,))
        if not rows:
            raise NotFound(f"album {album} does not exist")
        return rows[0][0]

    def image_names(self, album: str) -> list[str]:
        rows = self._read(
            "SELECT i.name FROM albums a LEFT JOIN images i ON i.album_id = a.id "
            "WHERE a.name = ? ORDER BY i.name",
            (album,),
        )
        if not rows:
            raise NotFound(f"album {album} does not exist")
        return [row[0] for row in rows if row[0] is not None]

    def image_exists(self, album: str, image: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM images i JOIN albums a ON i.album_id = a.id "
                "WHERE a.name = ? AND i.name = ?",
                (album, image),
            )
        )

    def find_image(self, album: str, image: str) -> ImageRecord:
        rows = self._read(
            "SELECT a.name, i.name, i.size, i.sha256, i.content_type, i.created_at, i.blob_key "
            "FROM images i JOIN albums a ON i.album_id = a.id WHERE a.name = ? AND i.name = ?",
            (album, image),
        )
        if not rows:
            if not self.album_exists(album):
                raise NotFound(f"album {album} does not exist")
            raise NotFound(f"image {image} does not exist in album {album}")
        return ImageRecord(*rows[0])

    def all_blob_keys(self) -> set[str]:
        return {row[0] for row in self._read("SELECT blob_key FROM images")}

    def pending_events(self, after_id: int, limit: int) -> list[events.OutboxEvent]:
        """The oldest events after ``after_id``."""
        rows = self._read(
            "SELECT id, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [events.OutboxEvent.from_row(event_id, payload) for event_id, payload in rows]

    @property
    def events_dropped(self) -> int:
        return self._read("SELECT value FROM counters WHERE name = 'events_dropped'")[0][0]

    def events_pending(self) -> int:
        # Events leave the outbox only from its oldest end, so its ids are contiguous.
        low, high = self._read("SELECT min(id), max(id) FROM outbox")[0]
        return 0 if low is None else high - low + 1

    # --- writes (the store's single writer thread only) -------------------------

    def _record(self, tx: sqlite3.Connection, event: dict) -> None:
        """Add the change's event to the outbox, inside the change's transaction."""
        if self._outbox_limit is None:
            return
        cursor = tx.execute("INSERT INTO outbox (payload) VALUES (?)", (events.encode(event),))
        newest = cursor.lastrowid
        oldest = tx.execute("SELECT min(id) FROM outbox").fetchone()[0]
        if newest - oldest + 1 > self._outbox_limit:
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

    def forget_events(self, up_to_id: int) -> None:
        """Remove the events the broker has acknowledged."""
        with self._transaction() as tx:
            tx.execute("DELETE FROM outbox WHERE id <= ?", (up_to_id,))

    def _album_id(self, tx: sqlite3.Connection, album: str) -> int:
        row = tx.execute("SELECT id FROM albums WHERE name = ?", (album,)).fetchone()
        if row is None:
            raise NotFound(f"album {album} does not exist")
        return row[0]

    def create_album(self, album: str) -> None:
        with self._transaction() as tx:
            try:
                tx.execute(
                    "INSERT INTO albums (name, created_at) VALUES (?, ?)", (album, time.time())
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"album {album} already exists") from None
            self._record(tx, events.album_created(album))

    def delete_album(self, album: str) -> list[str]:
        """Delete the album and its images; return the blob keys to remove."""
        with self._transaction() as tx:
            album_id = self._album_id(tx, album)
            keys = [
                row[0]
                for row in tx.execute("SELECT blob_key FROM images WHERE album_id = ?", (album_id,))
            ]
            tx.execute("DELETE FROM albums WHERE id = ?", (album_id,))
            self._record(tx, events.album_deleted(album))
        return keys

    def rename_album(self, album: str, new_name: str) -> None:
        with self._transaction() as tx:
            album_id = self._album_id(tx, album)
            try:
                tx.execute("UPDATE albums SET name = ? WHERE id = ?", (new_name, album_id))
            except sqlite3.IntegrityError:
                raise Conflict(f"album {new_name} already exists") from None
            self._record(tx, events.album_renamed(album, new_name))

    def add_image(self, album_id: int, record: ImageRecord) -> ImageRecord:
        """Record the image in the album ``album_id`` (the album the upload began in,
        whatever it is called now); the record returned carries its current name."""
        with self._transaction() as tx:
            row = tx.execute("SELECT name FROM albums WHERE id = ?", (album_id,)).fetchone()
            if row is None:  # deleted while the image was arriving
                raise NotFound(f"album {record.album} does not exist")
            record = dataclasses.replace(record, album=row[0])
            try:
                tx.execute(
                    "INSERT INTO images (album_id, name, size, sha256, content_type, created_at,"
                    " blob_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        album_id,
                        record.name,
                        record.size,
                        record.sha256,
                        record.content_type,
                        record.created_at,
                        record.blob_key,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(
                    f"image {record.name} already exists in album {record.album}"
                ) from None
            self._record(tx, events.image_added(record))
        return record

    def _image_id(self, tx: sqlite3.Connection, album: str, image: str) -> tuple[int, str]:
        album_id = self._album_id(tx, album)
        row = tx.execute(
            "SELECT id, blob_key FROM images WHERE album_id = ? AND name = ?", (album_id, image)
        ).fetchone()
        if row is None:
            raise NotFound(f"image {image} does not exist in album {album}")
        return row

    def delete_image(self, album: str, image: str) -> str:
        """Delete the image's row; return its blob key to remove."""
        with self._transaction() as tx:
            image_id, blob_key = self._image_id(tx, album, image)
            tx.execute("DELETE FROM images WHERE id = ?", (image_id,))
            self._record(tx, events.image_deleted(album, image))
        return blob_key

    def rename_image(self, album: str, image: str, new_name: str) -> None:
        with self._transaction() as tx:
            image_id, _ = self._image_id(tx, album, image)
            try:
                tx.execute("UPDATE images SET name = ? WHERE id = ?", (new_name, image_id))
            except sqlite3.IntegrityError:
                raise Conflict(f"image {new_name} already exists in album {album}") from None
            self._record(tx, events.image_renamed(album, image, new_name))
