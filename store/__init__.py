"""The store: the catalog and the blob files. Nothing here knows about HTTP."""

from store.catalog import ImageRecord
from store.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StorageFull,
    StorageUnavailable,
    StoreError,
    TooLarge,
    UnsupportedMedia,
)
from store.store import DataFolder, ImageReader, ImageStore, Upload

__all__ = [
    "Conflict",
    "DataFolder",
    "ImageReader",
    "ImageRecord",
    "ImageStore",
    "InvalidInput",
    "NotFound",
    "StorageFull",
    "StorageUnavailable",
    "StoreError",
    "TooLarge",
    "Upload",
    "UnsupportedMedia",
]
