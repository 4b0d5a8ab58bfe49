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
