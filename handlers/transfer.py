"""HTTP details of sending an image: conditional requests, ranges, filenames."""

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

_DIGITS = re.compile(r"[0-9]{1,18}")
# How Tornado splits a Content-Length that proxies repeated.
_REPEATED = re.compile(r",[ \t]*")


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison of an If-None-Match list against our (strong) ETag."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in header.split(","))
    return etag in candidates


def not_modified_since(header: str | None, last_modified: datetime) -> bool:
    if not header:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # not a date: as if absent
    if since.tzinfo is None:
        return False
    return last_modified <= since


@dataclass(frozen=True)
class ByteRange:
    """The bytes [start, end) of an image; empty when the range asked for lies wholly
    outside it (416)."""

    start: int
    end: int

    @property
    def satisfiable(self) -> bool:
        return self.start < self.end


def header_number(value: str | None) -> int | None:
    """The number a header carries: ASCII digits only (str.isdigit() takes "²" and
    "٣"), at most 18 of them (so it fits 64 bits); None for anything else."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def declared_length(value: str | None) -> int | None:
    """A Content-Length as Tornado reads it (copies a proxy repeated, "5, 5", are one
    value), bounded as header_number; None if absent or not such a number."""
    if value is None:
        return None
    copies = _REPEATED.split(value)
    return header_number(copies[0]) if len(set(copies)) == 1 else None


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range asked for by a Range header.

    None: no usable Range (absent, malformed, several ranges, numbers too long to be
    real): RFC 9110 lets the server ignore it and send everything.
    """
    if not header or not header.startswith("bytes="):
        return None
    spec = header[len("bytes=") :].strip()
    if "," in spec or "-" not in spec:
        return None
    first_text, _, last_text = (part.strip() for part in spec.partition("-"))
    first, last = header_number(first_text), header_number(last_text)
    if (first is None and first_text) or (last is None and last_text):
        return None
    if first is None:
        if last is None:
            return None
        return ByteRange(max(0, size - last), size) if last else ByteRange(size, size)
    if last is not None and last < first:
        return None
    if first >= size:
        return ByteRange(size, size)
    return ByteRange(first, size if last is None else min(last + 1, size))


def content_disposition(filename: str, attachment: bool) -> str:
    """RFC 6266: an ASCII fallback for old clients and the exact UTF-8 name."""
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%' else "_" for ch in filename
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
