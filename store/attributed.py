"""Which backend failed: the catalog's and the blob store's failures (503, 507) carry
the name of the port they came through, for the metrics of backend errors."""

import functools
import inspect
from typing import Any

from store.errors import StorageFull, StorageUnavailable


class Attributed:
    """``inner`` (a catalog or a blob store) whose coroutines' storage failures are
    marked ``err.backend = backend``; everything else passes through unchanged."""

    def __init__(self, inner: object, backend: str) -> None:
        self._inner = inner
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        backend = self._backend

        @functools.wraps(attribute)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            except (StorageUnavailable, StorageFull) as err:
                if not getattr(err, "backend", ""):
                    setattr(err, "backend", backend)  # noqa: B010 (an attribute of our own)
                raise

        return call


def failed_backend(err: BaseException) -> str | None:
    """ "catalog" or "blobs" when ``err`` is a storage failure of that port."""
    backend = getattr(err, "backend", None)
    return backend if isinstance(backend, str) and backend else None
