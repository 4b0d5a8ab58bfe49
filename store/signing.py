"""Signed URLs: ``&expires=<unix time>&signature=<hex HMAC-SHA256>`` over the path and
the sorted query (IMAGESTORE_URL_SIGNING_KEY; several keys for rotation: the first
signs, any verifies).

What is signed is the URL as sent, percent-encoding and all: the path, "?", then the
query's ``name=value`` pieces other than ``signature``, sorted and joined by "&". The
signer and the service see the same bytes, so no decoding can make two URLs of one
signature.
"""

import hashlib
import hmac
import time
from urllib.parse import urlsplit, urlunsplit

SIGNATURE = "signature"
EXPIRES = "expires"


def _pieces(query: str) -> list[str]:
    return sorted(
        piece for piece in query.split("&") if piece and piece.split("=", 1)[0] != SIGNATURE
    )


def _digest(key: bytes, path: str, query: str) -> str:
    message = f"{path}?{'&'.join(_pieces(query))}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_url(url: str, key: bytes, expires: int) -> str:
    """``url`` with ``expires`` and its ``signature`` (an absolute URL or a path)."""
    parts = urlsplit(url)
    query = "&".join(
        piece
        for piece in parts.query.split("&")
        if piece and piece.split("=", 1)[0] not in (SIGNATURE, EXPIRES)
    )
    query = f"{query}&{EXPIRES}={expires}" if query else f"{EXPIRES}={expires}"
    signature = _digest(key, parts.path, query)
    return urlunsplit(parts._replace(query=f"{query}&{SIGNATURE}={signature}"))


def signature_problem(
    path: str, query: str, keys: tuple[bytes, ...], now: float | None = None
) -> str | None:
    """None when the raw ``path`` and ``query`` carry a valid, unexpired signature by
    one of ``keys``; otherwise the sentence saying what is wrong."""
    values: dict[str, list[str]] = {}
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        values.setdefault(name, []).append(value)
    if not keys:
        return "signed URLs are not enabled on this service (IMAGESTORE_URL_SIGNING_KEY)"
    given, expires = values.get(SIGNATURE, []), values.get(EXPIRES, [])
    if len(given) != 1 or len(expires) != 1:
        return "a signed URL carries one expires and one signature"
    if not expires[0].isascii() or not expires[0].isdigit() or len(expires[0]) > 12:
        return "expires is a Unix time in seconds"
    if int(expires[0]) < (time.time() if now is None else now):
        return "the signed URL has expired"
    # Every key is tried, whichever matches: the time taken does not tell which.
    valid = False
    signature = given[0].encode("utf-8", "surrogateescape")
    for key in keys:
        valid |= hmac.compare_digest(_digest(key, path, query).encode(), signature)
    return None if valid else "the URL's signature is not valid"
