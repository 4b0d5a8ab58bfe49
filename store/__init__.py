"""The store: the domain over a catalog and a blob store. Nothing here knows HTTP.

The errors are imported at once; the rest (the store, the adapters and what they load:
libvips, asyncpg, obstore) when first named, so that the command line's client, which
needs only names, sniffing and errors, starts without them."""

import importlib
from typing import TYPE_CHECKING, Any

from store.errors import (
    Busy,
    Conflict,
    Deadline,
    InvalidInput,
    NotFound,
    RenderFailed,
    StorageFull,
    StorageUnavailable,
    StoreError,
    TooLarge,
    TooManyPixels,
    UnsupportedMedia,
)

if TYPE_CHECKING:  # (PyInstaller's analysis sees these imports too)
    from store.backends import Backends, Claim, UnknownBackend, open_store
    from store.ports import ImageRecord
    from store.store import ImageReader, ImageStore, Upload

_LAZY = {
    "Backends": "store.backends",
    "Claim": "store.backends",
    "UnknownBackend": "store.backends",
    "open_store": "store.backends",
    "ImageRecord": "store.ports",
    "ImageReader": "store.store",
    "ImageStore": "store.store",
    "Upload": "store.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'store' has no attribute {name!r}")


__all__ = [
    "Backends",
    "Busy",
    "Deadline",
    "RenderFailed",
    "TooManyPixels",
    "Claim",
    "Conflict",
    "ImageReader",
    "ImageRecord",
    "ImageStore",
    "InvalidInput",
    "NotFound",
    "StorageFull",
    "StorageUnavailable",
    "StoreError",
    "TooLarge",
    "UnknownBackend",
    "Upload",
    "UnsupportedMedia",
    "open_store",
]
