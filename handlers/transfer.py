"""HTTP details of sending an image: conditional requests, ranges, filenames."""

import email.utils
from datetime import datetime
from urllib.parse import quote


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
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified <= since


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The one byte range [start, end) asked for by a Range header.

    None: no usable Range (absent, malformed, several ranges): send everything.
    False: a well-formed range that lies wholly outside the image (416).
    """
    if not header or not header.startswith("bytes="):
        return None
    spec = header[len("bytes=") :].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0:
            return False
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    end = size if last == "" else min(int(last) + 1, size)
    return start, end


def content_disposition(filename: str, attachment: bool) -> str:
    """RFC 6266: an ASCII fallback for old clients and the exact UTF-8 name."""
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%' else "_" for ch in filename
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
