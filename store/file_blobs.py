"""The local-file blob store (the single-host default).

Layout under its folder (``file:///var/lib/imagestore/blobs``):
  tmp/<pid>.<key>.part        an upload in progress by process <pid> (removed at
                              start-up, and by the supervisor when that worker dies)
  <k0k1>/<k2k3>/<key>         a published blob, sharded so no folder grows huge
  lock                        held by the one service instance using the folder
Keys are made by the store (uuid4 hex), so no client input reaches a path.
"""

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from store.errors import NotFound, StorageFull, StorageUnavailable

log = logging.getLogger("imagestore.store")

T = TypeVar("T")

READ_CHUNK_BYTES = 256 * 1024
DISK_THREADS = 16
# A large upload's bytes are flushed to the disk while the rest arrive, each time this
# many more have been written, so that publish's fsync waits for the last ones only.
FLUSH_EVERY_BYTES = 8 * 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{32}")


def storage_error(err: OSError) -> Exception:
    """The domain error for a failed disk operation."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the disk is full: the image was not stored")
    return StorageUnavailable(f"storage error: {err.strerror or err}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_unfinished_uploads(root: str, pid: int | None) -> int:
    """Remove the unfinished uploads of process ``pid`` (None: of every process) from
    the blob folder ``root``; how many there were."""
    removed = 0
    prefix = "" if pid is None else f"{pid}."
    for entry in os.scandir(os.path.join(root, "tmp")):
        if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class FolderLock:
    """One service instance (with its workers) per blob folder: another would sweep
    this one's uploads away."""

    # A restarted service may find its killed predecessor's workers still exiting.
    PATIENCE_SECONDS = 2.0

    def __init__(self, root: str) -> None:
        try:
            os.makedirs(root, exist_ok=True)
            self._fd: int | None = os.open(
                os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            )
        except OSError as err:
            raise storage_error(err) from err
        deadline = time.monotonic() + self.PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.release()
                    raise StorageUnavailable(
                        f"the blob folder {root} is in use by another imagestore process"
                    ) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileBlobWriter:
    """A temporary file, renamed into place by ``publish``. One owner at a time."""

    def __init__(self, store: "FileBlobStore", key: str) -> None:
        self._store = store
        self._key = key
        self.path = os.path.join(store.tmp_dir, f"{os.getpid()}.{key}.part")
        self._unflushed = 0
        self._flushing: asyncio.Future[None] | None = None
        try:
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640
            )
        except OSError as err:
            raise storage_error(err) from err

    async def write(self, chunk: bytes) -> None:
        # Into the page cache: no wait for the disk (publish fsyncs, off the IOLoop).
        # A handoff to a thread per piece would cost more than the copy.
        fd = self._require_fd()
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            raise storage_error(err) from err
        self._unflushed += len(chunk)
        if self._unflushed >= FLUSH_EVERY_BYTES and (
            self._flushing is None or self._flushing.done()
        ):
            # The disk writes what came so far while the rest arrives (one flush in
            # flight). A failed flush fails the upload: the kernel reports a write
            # error to one fsync only, so the final one could not be trusted.
            await self._flushed()
            self._unflushed = 0
            self._flushing = asyncio.get_running_loop().run_in_executor(
                self._store._disk, os.fdatasync, fd
            )

    async def _flushed(self) -> None:
        """Wait for the flush in flight, if any; StorageFull/Unavailable if it failed."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            try:
                await flushing
            except OSError as err:
                raise storage_error(err) from err

    def _require_fd(self) -> int:
        if self._fd is None:
            raise StorageUnavailable("the upload is closed")
        return self._fd

    async def publish(self) -> None:
        fd = self._require_fd()
        try:
            await self._flushed()
        except BaseException:
            self.abort()
            raise
        self._fd = None  # the publishing thread owns it now: abort() must not close it
        try:
            await self._store.on_disk(self._store.publish_file, fd, self.path, self._key)
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._discard()
            flushing, self._flushing = self._flushing, None
            if flushing is None:
                os.close(fd)
            else:
                # Closed once the flush is over: a number closed under a thread still
                # using it could meanwhile be reused by another file.
                flushing.add_done_callback(lambda done: _close_after(fd, done))

    def _discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _close_after(fd: int, flush: "asyncio.Future[None]") -> None:
    """Close ``fd`` once ``flush`` (of the dropped upload) is over (done or not)."""
    if not flush.cancelled():
        flush.exception()  # retrieved: the upload is dropped, and its failure with it
    os.close(fd)


class FileBlobReader:
    def __init__(self, handle: int, size: int) -> None:
        self._fd: int | None = handle
        self.size = size

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        position = start
        while position < end:
            if self._fd is None:
                raise StorageUnavailable("the image file is closed")
            try:
                chunk = os.pread(self._fd, min(READ_CHUNK_BYTES, end - position), position)
            except OSError as err:
                raise storage_error(err) from err
            if not chunk:
                raise StorageUnavailable("the image file is shorter than its catalog record")
            position += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileBlobStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.tmp_dir = os.path.join(self.root, "tmp")
        try:
            os.makedirs(self.tmp_dir, exist_ok=True)
        except OSError as err:
            raise storage_error(err) from err
        # Threads spend most of their time waiting for the disk (fsync), not on a core:
        # enough of them that concurrent uploads' fsyncs run together (the file
        # system commits them in one journal transaction) rather than queue.
        self._disk = ThreadPoolExecutor(DISK_THREADS, thread_name_prefix="blob-io")

    def close(self) -> None:
        self._disk.shutdown(wait=True)

    async def on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        except OSError as err:
            raise storage_error(err) from err

    def path_of(self, key: str) -> str:
        return os.path.join(self.root, key[0:2], key[2:4], key)

    async def begin(self, key: str) -> FileBlobWriter:
        return FileBlobWriter(self, key)

    def publish_file(self, fd: int, temp_path: str, key: str) -> None:
        """Make a finished upload durable under its key (blocking).

        The rename comes before the fsyncs: nothing reads a key before the catalog
        records it (after this returns), and a crash in between leaves an orphan that
        the start-up sweep removes. Every change of names (new shard folders, the
        rename) comes before the first fsync, which on a journalling file system
        (ext4, XFS) commits them all in one journal transaction with the file's own
        metadata; the folders' fsyncs that POSIX asks for then find nothing left to
        write: one journal commit per upload instead of up to four."""
        final = self.path_of(key)
        shard = os.path.dirname(final)
        try:
            new_shard = not os.path.isdir(shard)
            if new_shard:
                os.makedirs(shard, exist_ok=True)
            os.rename(temp_path, final)
            try:
                os.fsync(fd)
                _fsync_dir(shard)
                if new_shard:  # its own entry, and its parent's (both new, perhaps)
                    _fsync_dir(os.path.dirname(shard))
                    _fsync_dir(self.root)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(final)
                raise
        finally:
            os.close(fd)

    async def open(self, key: str) -> FileBlobReader:
        try:
            fd = os.open(self.path_of(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound("the image's bytes are gone") from None
        except OSError as err:
            raise storage_error(err) from err
        return FileBlobReader(fd, os.fstat(fd).st_size)

    async def remove(self, keys: list[str]) -> None:
        if keys:
            await asyncio.get_running_loop().run_in_executor(self._disk, self._remove, keys)

    def _remove(self, keys: list[str]) -> None:
        for key in keys:
            try:
                os.unlink(self.path_of(key))
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("could not remove blob %s (%s); the next sweep will", key, err)

    async def published_keys(self) -> AsyncIterator[list[str]]:
        batch: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root:
                dirnames[:] = [name for name in dirnames if name != "tmp"]
            batch += [name for name in filenames if _KEY.fullmatch(name)]
            if len(batch) >= 1000:
                yield batch
                batch = []
        if batch:
            yield batch

    async def remove_unfinished(self) -> int:
        return remove_unfinished_uploads(self.root, None)

    async def free_bytes(self) -> int | None:
        try:
            stats = os.statvfs(self.root)
        except OSError as err:
            raise storage_error(err) from err
        return stats.f_bavail * stats.f_frsize

    async def ping(self) -> None:
        if not os.path.isdir(self.tmp_dir):
            raise StorageUnavailable(f"the blob folder {self.root} is gone")
