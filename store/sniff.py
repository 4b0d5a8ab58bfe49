"""Decide what an upload is from its first bytes, never from what the client says."""

import struct

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


class Malformed(ValueError):
    """The bytes start like an accepted format but are not a valid image of it."""


def bmp_or_ico_dimensions(content_type: str, head: bytes, size: int) -> tuple[int, int] | None:
    """The width and height of a BMP or ICO image, from the structure its first bytes
    describe (libvips reads neither format); Malformed when that structure does not
    hold (a magic number followed by anything else). None for other types."""
    if content_type == "image/bmp":
        return _bmp(head, size)
    if content_type == "image/x-icon":
        return _ico(head, size)
    return None


_DIB_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_BIT_DEPTHS = {1, 2, 4, 8, 16, 24, 32}


def _bmp(head: bytes, size: int) -> tuple[int, int]:
    if len(head) < 26:
        raise Malformed("the BMP file is too short")
    pixels_at, dib_size = struct.unpack_from("<II", head, 10)
    if dib_size not in _DIB_HEADER_SIZES or not 14 + dib_size <= pixels_at < size:
        raise Malformed("the BMP header is not valid")
    if dib_size == 12:
        width, height, planes, depth = struct.unpack_from("<HHHH", head, 18)
    else:
        if len(head) < 30:
            raise Malformed("the BMP file is too short")
        width, height, planes, depth = struct.unpack_from("<iiHH", head, 18)
    if width <= 0 or height == 0 or planes != 1 or depth not in _BIT_DEPTHS:
        raise Malformed("the BMP header is not valid")
    return width, abs(height)


def _ico(head: bytes, size: int) -> tuple[int, int]:
    if len(head) < 6:
        raise Malformed("the ICO file is too short")
    count = struct.unpack_from("<H", head, 4)[0]
    directory_end = 6 + 16 * count
    if count == 0 or len(head) < min(directory_end, SNIFF_BYTES):
        raise Malformed("the ICO directory is not valid")
    largest = (0, 0)
    for index in range(min(count, (len(head) - 6) // 16)):
        width, height, _colours, _reserved, planes, depth, length, offset = struct.unpack_from(
            "<BBBBHHII", head, 6 + 16 * index
        )
        if planes > 1 or depth not in _BIT_DEPTHS | {0} or length == 0:
            raise Malformed("the ICO directory is not valid")
        if offset < directory_end or offset + length > size:
            raise Malformed("the ICO directory points outside the file")
        largest = max(largest, (width or 256, height or 256))
    return largest
