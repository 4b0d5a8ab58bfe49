"""Backends chosen by URL: ``IMAGESTORE_CATALOG`` and ``IMAGESTORE_BLOBS``.

  sqlite:///var/lib/imagestore/catalog.sqlite3   (or sqlite:relative/path)
  postgresql://user@db.example/imagestore        (libpq URLs: ?sslmode=..., PG* variables)
  file:///var/lib/imagestore/blobs               (or file:relative/path)
  s3://bucket/prefix                             (AWS_* variables: store.s3_blobs)

As in file URLs, three slashes name an absolute path. Both default to the data folder
(``IMAGESTORE_DATA``): ``<data>/catalog.sqlite3`` and ``<data>/blobs``.
"""

import asyncio
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from store.attributed import Attributed
from store.errors import StorageUnavailable
from store.file_blobs import FileBlobStore, FolderLock, remove_unfinished_uploads
from store.ports import BlobStore, Catalog
from store.sqlite_catalog import CatalogLock, SqliteCatalog
from store.store import ImageStore

log = logging.getLogger("imagestore.store")

CATALOG_SCHEMES = ("sqlite", "postgresql", "postgres")
BLOB_SCHEMES = ("file", "s3")


class UnknownBackend(ValueError):
    """A URL whose scheme no adapter serves; the sentence lists the known ones."""


@dataclass(frozen=True)
class Backends:
    catalog_url: str
    blobs_url: str

    @classmethod
    def of(cls, data: str, catalog_url: str = "", blobs_url: str = "") -> "Backends":
        """The URLs as set, else in the data folder."""
        folder = os.path.abspath(data)
        return cls(
            catalog_url or "sqlite://" + os.path.join(folder, "catalog.sqlite3"),
            blobs_url or "file://" + os.path.join(folder, "blobs"),
        )

    def describe(self) -> str:
        """For logs: the URLs with any password blanked out."""
        return f"catalog {redacted(self.catalog_url)}, blobs {redacted(self.blobs_url)}"


def redacted(url: str) -> str:
    """``url`` without the password it may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    """``url`` if an adapter serves its scheme; UnknownBackend otherwise."""
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        known = ", ".join(f"{name}://" for name in schemes)
        raise UnknownBackend(f"{url!r} is not a {what} URL: the known kinds are {known}")
    if scheme == "s3":
        from store.s3_blobs import parse_s3_url  # see open_catalog

        try:
            parse_s3_url(url)
        except ValueError as err:
            raise UnknownBackend(str(err)) from None
    return url


def local_path(url: str) -> str:
    """The path a sqlite: or file: URL names (three slashes: absolute)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UnknownBackend(
            f"{url!r} names another host: give a local path ({parts.scheme}:///path)"
        )
    return os.path.abspath(unquote(parts.path))


def open_catalog(url: str, outbox_limit: int | None) -> Catalog:
    scheme = urlsplit(check_url(url, CATALOG_SCHEMES, "catalog")).scheme
    if scheme == "sqlite":
        return SqliteCatalog(local_path(url), outbox_limit)
    # Imported when named: one host (and the command line) never loads asyncpg or
    # obstore, which cost a start-up 40 ms from source, more from the executable.
    from store.postgres_catalog import PostgresCatalog

    return PostgresCatalog(url, outbox_limit)


def open_blobs(url: str) -> BlobStore:
    scheme = urlsplit(check_url(url, BLOB_SCHEMES, "blob store")).scheme
    if scheme == "s3":
        from store.s3_blobs import S3BlobStore  # see open_catalog

        return S3BlobStore(url)
    return FileBlobStore(local_path(url))


def open_store(
    backends: Backends,
    max_upload_bytes: int,
    outbox_limit: int | None = None,
    min_free_bytes: int = 0,
    **options: Any,
) -> ImageStore:
    """``options``: ImageStore's others (imaging pool, pixel limit, rendition cache)."""
    catalog = open_catalog(backends.catalog_url, outbox_limit)
    try:
        blobs = open_blobs(backends.blobs_url)
    except BaseException:
        catalog.close()
        raise
    # Their failures say which of the two they came from (metrics of backend errors).
    return ImageStore(
        cast(Catalog, Attributed(catalog, "catalog")),
        cast(BlobStore, Attributed(blobs, "blobs")),
        max_upload_bytes,
        min_free_bytes,
        **options,
    )


class Claim:
    """What one service instance holds while it serves: the locks of its local
    backends (taken once, before the workers fork; they inherit them). Claiming
    brings the catalog's schema up to date and sweeps what a crash left behind."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self._locks: list[CatalogLock | FolderLock] = []
        self._blob_folder: str | None = None
        try:
            if urlsplit(backends.catalog_url).scheme == "sqlite":
                self._locks.append(CatalogLock(local_path(backends.catalog_url)))
            if urlsplit(backends.blobs_url).scheme == "file":
                self._blob_folder = local_path(backends.blobs_url)
                self._locks.append(FolderLock(self._blob_folder))
            if urlsplit(backends.blobs_url).scheme == "s3":
                unfinished, orphans = sweep_in_a_child(backends)
            else:
                unfinished, orphans = sweep(backends)
        except BaseException:
            self.release()
            raise
        if unfinished or orphans:
            log.warning(
                "start-up sweep removed %d unfinished upload(s) and %d orphan blob(s)",
                unfinished,
                orphans,
            )

    def remove_leftovers_of(self, pid: int) -> int:
        """A worker process died: remove its unfinished uploads now, not at the next
        start-up. Returns how many there were."""
        if self._blob_folder is None:
            return 0
        try:
            return remove_unfinished_uploads(self._blob_folder, pid)
        except OSError as err:
            log.warning("could not remove the unfinished uploads of process %d: %s", pid, err)
            return 0

    def release(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks = []


def sweep(backends: Backends) -> tuple[int, int]:
    """The start-up sweep (store.ImageStore.sweep), in this process."""
    store = open_store(backends, max_upload_bytes=0)
    try:
        return asyncio.run(store.sweep())
    finally:
        store.close()


def sweep_in_a_child(backends: Backends) -> tuple[int, int]:
    """The sweep in a forked child: obstore's runtime does not survive fork(), so the
    parent, which forks the workers next, must never start one."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sweep, report, exit without running the parent's cleanup
        code = 1
        try:
            os.close(reading)
            try:
                counts = sweep(backends)
                os.write(writing, struct.pack("!qq", *counts))
                code = 0
            except StorageUnavailable as err:
                os.write(writing, str(err).encode()[:4000])
        except BaseException:
            log.exception("the start-up sweep failed")
        finally:
            os._exit(code)
    os.close(writing)
    with os.fdopen(reading, "rb") as answer:
        report = answer.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or len(report) != 16:
        raise StorageUnavailable(
            report.decode(errors="replace") or "the start-up sweep failed (see the log)"
        )
    unfinished, orphans = struct.unpack("!qq", report)
    return int(unfinished), int(orphans)
