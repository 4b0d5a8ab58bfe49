"""The store: the domain over a catalog and a blob store. Nothing here knows HTTP."""

from store.backends import Backends, Claim, UnknownBackend, open_store
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
from store.ports import ImageRecord
from store.store import ImageReader, ImageStore, Upload

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
