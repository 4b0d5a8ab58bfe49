"""The blob folder: image bytes in files named by the store, never by a client.

Layout under the data folder:
  tmp/<pid>.<key>.part    an upload in progress by process <pid> (swept at start-up,
                          and by the supervisor when that worker dies)
  blobs/<k0k1>/<k2k3>/<key>  a published image, sharded so no folder grows huge
Keys are random uuid4 hex strings made here, so no client input reaches a path.
"""

import errno
import logging
import os
import uuid
from collections.abc import Iterable

from store.errors import StorageFull, StorageUnavailable

log = logging.getLogger("imagestore.store")


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


def new_key() -> str:
    return uuid.uuid4().hex


class TempBlob:
    """A file being written by one upload. Not thread-safe; one owner at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640
        )

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync_and_close(self) -> None:
        """Flush the bytes to the disk (blocking: call it off the IOLoop)."""
        try:
            os.fsync(self._fd)
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self._close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class BlobFolder:
    def __init__(self, root: str) -> None:
        self.tmp_dir = os.path.join(root, "tmp")
        self.blob_dir = os.path.join(root, "blobs")
        for path in (self.tmp_dir, self.blob_dir):
            os.makedirs(path, exist_ok=True)

    def new_temp(self, key: str) -> TempBlob:
        # The owner's pid in the name: a dead worker's leftovers can be told apart.
        return TempBlob(os.path.join(self.tmp_dir, f"{os.getpid()}.{key}.part"))

    def remove_temps_of(self, pid: int) -> int:
        """Remove the unfinished uploads of process ``pid``, which is gone."""
        removed = 0
        prefix = f"{pid}."
        for entry in os.scandir(self.tmp_dir):
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def path_of(self, key: str) -> str:
        return os.path.join(self.blob_dir, key[0:2], key[2:4], key)

    def publish(self, temp: TempBlob, key: str) -> None:
        """Make a finished upload durable and move it into place (blocking)."""
        temp.sync_and_close()
        final = self.path_of(key)
        shard = os.path.dirname(final)
        if not os.path.isdir(shard):
            os.makedirs(shard, exist_ok=True)
            _fsync_dir(os.path.dirname(shard))
            _fsync_dir(self.blob_dir)
        os.rename(temp.path, final)
        _fsync_dir(shard)

    def open(self, key: str):
        return open(self.path_of(key), "rb", buffering=0)

    def remove(self, keys: Iterable[str]) -> None:
        """Delete blobs whose catalog rows are gone (blocking). Failures are only
        logged: a blob left behind is swept at the next start-up."""
        for key in keys:
            try:
                os.unlink(self.path_of(key))
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("could not remove blob %s (%s); start-up will sweep it", key, err)

    def sweep(self, known_keys: set[str]) -> tuple[int, int]:
        """Remove unfinished uploads and blobs the catalog does not know.

        Only safe while no upload runs: call it at start-up, before serving.
        Returns (temporary files removed, orphan blobs removed).
        """
        temps = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                temps += 1
        orphans = 0
        for dirpath, _dirnames, filenames in os.walk(self.blob_dir):
            for name in filenames:
                if name not in known_keys:
                    os.unlink(os.path.join(dirpath, name))
                    orphans += 1
        return temps, orphans
