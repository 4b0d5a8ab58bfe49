"""Group commit for a catalog with one writer thread (the SQLite one).

Writes are queued; the writer thread takes every write queued so far (up to
``BATCH_LIMIT``) and runs them in one transaction, each in a savepoint of its own
(the catalog's ``_transaction`` opens a savepoint while ``open`` is true), then commits
once: one fsync for all of them. Nothing waits on purpose for company: a write that
finds the writer idle runs at once, and the writes that arrive while a commit is being
fsynced form the next batch, so the batches grow with the load by themselves.

What each member is told, only once the batch's commit has returned:
- its own result, when it ran and the commit succeeded;
- its own refusal (a domain error other than a storage one: Conflict, NotFound...),
  its savepoint rolled back, the others unaffected;
- when a member fails on storage (or with anything unexpected), the batch is rolled
  back and every member runs again alone, in a transaction of its own, and is told
  its own outcome;
- when the commit itself fails, every member that had run gets that failure: nothing
  of the batch is recorded, as when a lone commit fails.

Between processes (the service's workers share one catalog file) the writers take
turns under an ``flock`` on ``lock_path``: a blocked writer wakes the moment the other
commits, where SQLite's own busy handler would sleep and poll for milliseconds.
"""

import asyncio
import contextlib
import fcntl
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from store.errors import StorageFull, StorageUnavailable, StoreError

T = TypeVar("T")

# The most writes in one transaction (a bound on how long one batch holds the lock).
BATCH_LIMIT = 64


@dataclass
class _Queued:
    work: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[Any]"


def _refusal(err: BaseException) -> bool:
    """A member's own refusal, which leaves the batch's transaction sound."""
    return isinstance(err, StoreError) and not isinstance(err, StorageFull | StorageUnavailable)


def _settle(outcomes: list[tuple["asyncio.Future[Any]", bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # the caller was cancelled: the write happened all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitter:
    """Runs writes on ``writer`` (an executor of one thread), batched.

    ``begin``, ``commit`` and ``roll_back`` open, commit and abandon the batch's
    transaction (``roll_back`` must do nothing when none is open)."""

    def __init__(
        self,
        writer: Executor,
        begin: Callable[[], None],
        commit: Callable[[], None],
        roll_back: Callable[[], None],
        lock_path: str | None = None,
    ) -> None:
        self._writer = writer
        self._begin, self._commit, self._roll_back = begin, commit, roll_back
        self._queue: list[_Queued] = []
        self._guard = threading.Lock()  # the queue and ``_draining``
        self._draining = False
        # True on the writer thread while a batch runs: writes open savepoints.
        self.open = False
        self._lock_fd: int | None = None
        if lock_path is not None:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.batches = 0  # how many transactions, and writes in them (for tests, bench)
        self.writes = 0

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread in the next batch; its result once
        the batch is committed."""
        loop = asyncio.get_running_loop()
        queued = _Queued(lambda: fn(*args), loop, loop.create_future())
        with self._guard:
            self._queue.append(queued)
            start = not self._draining
            self._draining = True
        if start:
            try:
                self._writer.submit(self._drain)
            except BaseException:
                with self._guard:
                    self._draining = False
                raise
        result: T = await queued.future
        return result

    # --- on the writer thread ------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._guard:
                batch = self._queue[:BATCH_LIMIT]
                del self._queue[:BATCH_LIMIT]
                if not batch:
                    self._draining = False
                    return
            outcomes = self._run(batch)
            for loop, members in itertools.groupby(
                zip(batch, outcomes, strict=True), key=lambda pair: pair[0].loop
            ):
                settled = [(queued.future, ok, value) for queued, (ok, value) in members]
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, settled)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write, among the processes sharing the catalog."""
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _run(self, batch: list[_Queued]) -> list[tuple[bool, Any]]:
        with self._turn():
            if len(batch) == 1:
                return [self._alone(batch[0])]
            outcomes: list[tuple[bool, Any]] = []
            try:
                self._begin()
            except BaseException as err:
                return [(False, err)] * len(batch)
            self.open = True
            try:
                for queued in batch:
                    try:
                        outcomes.append((True, queued.work()))
                    except BaseException as err:
                        if not _refusal(err):
                            raise
                        outcomes.append((False, err))
            except BaseException:
                # A storage failure (or a bug) in one member: none of the batch is kept;
                # each runs again on its own and hears its own outcome.
                self.open = False
                with contextlib.suppress(BaseException):
                    self._roll_back()
                return [self._alone(queued) for queued in batch]
            finally:
                self.open = False
            try:
                self._commit()
            except BaseException as err:
                with contextlib.suppress(BaseException):
                    self._roll_back()
                return [(False, err) if ok else (ok, value) for ok, value in outcomes]
            self.batches += 1
            self.writes += len(batch)
            return outcomes

    def _alone(self, queued: _Queued) -> tuple[bool, Any]:
        """One write in a transaction of its own (the catalog's ``_transaction``)."""
        try:
            result = (True, queued.work())
        except BaseException as err:
            return (False, err)
        self.batches += 1
        self.writes += 1
        return result
