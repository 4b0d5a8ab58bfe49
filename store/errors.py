"""Domain errors raised by the store.

Each carries a sentence meant for the client; the HTTP layer maps the class to a
status code in one place (handlers/base.py).
"""


class StoreError(Exception):
    """Base class: ``str(err)`` is the human sentence sent to the client."""


class InvalidInput(StoreError):
    """A name or a request value breaks the rules (400)."""


class NotFound(StoreError):
    """The album or image does not exist (404)."""


class Conflict(StoreError):
    """The name is already taken (409)."""


class TooLarge(StoreError):
    """The upload is over the configured limit (413)."""


class UnsupportedMedia(StoreError):
    """The bytes are not an image of an accepted format (415)."""


class StorageFull(StoreError):
    """The disk has no room left (507)."""


class StorageUnavailable(StoreError):
    """The disk or the catalog failed; retrying later may work (503)."""


class TooManyPixels(StoreError):
    """The image is over IMAGESTORE_MAX_PIXELS: no rendition of it (422)."""


class RenderFailed(StoreError):
    """libvips cannot read or encode the image: retrying will not help (422)."""


class Busy(StoreError):
    """Every image worker is busy and the queue is full (503, Retry-After)."""

    headers = {"Retry-After": "1"}


class Deadline(StoreError):
    """An image took longer than its time limit to render (503, Retry-After)."""

    headers = {"Retry-After": "5"}
