"""How many uploads may run at once, in all, and from one client.

The slots live in shared memory made before the worker processes fork: one row per
worker, each slot holding a hash of the client whose upload holds it. What a worker
holds is in its own row, so when it dies the supervisor frees exactly its share
(``release_worker``) and the count stays right.
"""

import fcntl
import hashlib
import multiprocessing
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from settings import Settings


class NoUploadSlot(Exception):
    """Every slot is taken (``per_client`` False), or this client holds its share."""

    def __init__(self, per_client: bool) -> None:
        super().__init__()
        self.per_client = per_client


def _client_hash(client: str) -> int:
    # 0 marks a free slot; a real client never hashes to it.
    return (
        int.from_bytes(hashlib.blake2b(client.encode(), digest_size=8).digest(), "big", signed=True)
        or 1
    )


class UploadSlots:
    def __init__(self, limit: int, per_client: int, workers: int = 1) -> None:
        self.limit = limit
        self.per_client = min(per_client, limit)
        self._holders = multiprocessing.RawArray("q", workers * limit)
        self._row = 0
        # A POSIX record lock, not a semaphore: the kernel drops it when its holder
        # dies, so a worker killed inside take() cannot wedge the others. Such locks
        # belong to a process, so the inherited descriptor serves every worker.
        self._lock_file = tempfile.TemporaryFile()

    def serve_as(self, worker: int) -> None:
        """Use ``worker``'s row (called in each worker after the fork)."""
        self._row = worker

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN)

    def take(self, client: str) -> int:
        """A slot for an upload from ``client``: its index, for ``give_back``."""
        wanted = _client_hash(client)
        first, last = self._row * self.limit, (self._row + 1) * self.limit
        with self._locked():
            holders = self._holders[:]
            if sum(1 for holder in holders if holder) >= self.limit:
                raise NoUploadSlot(per_client=False)
            if holders.count(wanted) >= self.per_client:
                raise NoUploadSlot(per_client=True)
            index: int = holders.index(0, first, last)
            self._holders[index] = wanted
        return index

    def give_back(self, index: int) -> None:
        with self._locked():
            self._holders[index] = 0

    def release_worker(self, worker: int) -> int:
        """Free the slots of a worker that died; how many it held."""
        first, last = worker * self.limit, (worker + 1) * self.limit
        with self._locked():
            held = sum(1 for holder in self._holders[first:last] if holder)
            self._holders[first:last] = [0] * self.limit
        return held

    def running(self) -> int:
        return sum(1 for holder in self._holders[:] if holder)


@dataclass(frozen=True)
class UploadLimits:
    """How many uploads at once (in all, and per client), and how slow a body may
    arrive. ``max_uploads_per_client`` None: only the total limit."""

    max_concurrent_uploads: int
    body_timeout_seconds: float = Settings.body_timeout_seconds
    body_min_bytes_per_second: int = Settings.body_min_bytes_per_second
    max_uploads_per_client: int | None = None
    workers: int = 1
    slots: UploadSlots = field(init=False)

    def __post_init__(self) -> None:
        per_client = self.max_uploads_per_client or self.max_concurrent_uploads
        object.__setattr__(
            self, "slots", UploadSlots(self.max_concurrent_uploads, per_client, self.workers)
        )
