"""Decide what an upload is from its first bytes, never from what the client says."""

import filetype

# How many leading bytes are enough for every accepted format's signature
# (filetype itself never looks further than this).
SNIFF_BYTES = 8192

ACCEPTED_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/x-icon",
        "image/avif",
        "image/heic",
    }
)


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of an accepted image format, or None for anything else."""
    kind = filetype.image_match(head)
    if kind is None or kind.mime not in ACCEPTED_TYPES:
        return None
    return str(kind.mime)
