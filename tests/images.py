"""Small, valid test images of every accepted format, made in code."""

import struct
import zlib


def png(width: int = 1, height: int = 1, padding: int = 0) -> bytes:
    """A real PNG; ``padding`` adds an ancillary chunk to reach a larger size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if padding:
        body += chunk(b"teXt", b"pad\x00" + b"x" * padding)
    body += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def real(suffix: str, width: int, height: int, bands: int = 3, **options) -> bytes:
    """A real image of ``width`` x ``height`` made by libvips, encoded by ``suffix``
    (".jpg", ".png", ".webp", ".tif", ".gif", ".avif"): a gradient, so that resizing
    has something to keep."""
    import pyvips

    x = pyvips.Image.xyz(width, height)
    image = (x[0] * 255 / max(width - 1, 1)).bandjoin(
        [x[1] * 255 / max(height - 1, 1), (x[0] + x[1]) % 256]
    )
    if bands == 4:
        image = image.bandjoin(128)
    elif bands == 1:
        image = image[0]
    return image.cast("uchar").write_to_buffer(suffix, **options)


# Real images of each accepted format (the upload check reads their headers).
JPEG = real(".jpg", 2, 2)
GIF = real(".gif", 1, 1)
WEBP = real(".webp", 1, 1)
BMP = (
    b"BM"
    + struct.pack("<IHHI", 58, 0, 0, 54)
    + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 0, 0, 0, 0)
    + b"\x00\x00\xff\x00"
)
TIFF = real(".tif", 1, 1)
_ICON = real(".png", 16, 16, bands=4)
# One 16x16 entry holding a PNG (as Vista's icons do).
ICO = (
    b"\x00\x00\x01\x00\x01\x00"
    + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(_ICON), 22)
    + _ICON
)


def _ftyp(brand: bytes) -> bytes:
    box = b"ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"mif1"
    return struct.pack(">I", len(box) + 4) + box + b"\x00" * 32


AVIF = real(".avif", 2, 2)
# libvips here has no HEVC: HEIC is accepted on its signature alone (not rendered).
HEIC = _ftyp(b"heic")

ACCEPTED = {
    "image/png": png(),
    "image/jpeg": JPEG,
    "image/gif": GIF,
    "image/webp": WEBP,
    "image/bmp": BMP,
    "image/tiff": TIFF,
    "image/x-icon": ICO,
    "image/avif": AVIF,
    "image/heic": HEIC,
}

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
NOT_IMAGES = {
    "svg": SVG,
    "text": b"hello, this is not an image\n" * 10,
    "html": b"<!doctype html><html><body>hi</body></html>",
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 100,
    "zip": b"PK\x03\x04" + b"\x00" * 100,
}


def animated_gif(width: int, height: int, frames: int) -> bytes:
    """An animated GIF of ``frames`` frames."""
    import pyvips

    frame = pyvips.Image.new_from_buffer(real(".png", width, height), "")
    # Frames that differ (an encoder merges identical ones).
    strip = pyvips.Image.arrayjoin(
        [(frame + 60 * number).cast("uchar") for number in range(frames)], across=1
    ).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return strip.write_to_buffer(".gif")
