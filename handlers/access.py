"""Who may call the API, and from which browser origins: API keys and CORS."""

import hashlib
import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass, field

from tornado.httputil import HTTPHeaders

READ_METHODS = frozenset({"GET", "HEAD"})
API_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_REQUEST_HEADERS = (
    "Authorization, X-API-Key, Content-Type, Range, If-Range, If-None-Match, If-Modified-Since"
)
CORS_EXPOSED_HEADERS = (
    "ETag, Last-Modified, Content-Disposition, Content-Range, Content-Length, Accept-Ranges, "
    "Retry-After, WWW-Authenticate"
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class AccessPolicy:
    """``keys`` empty: everyone may do everything (the Go original's behaviour)."""

    keys: tuple[str, ...] = field(default=(), repr=False)
    public_read: bool = True
    cors_origins: tuple[str, ...] = ("*",)
    # Reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    _digests: tuple[bytes, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        # Only digests are kept: equal lengths for compare_digest, nothing to leak.
        object.__setattr__(self, "_digests", tuple(_digest(key) for key in self.keys))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def needs_key(self, method: str) -> bool:
        if not self.keys or method == "OPTIONS":
            return False
        return not (self.public_read and method in READ_METHODS)

    def allows(self, method: str, headers: HTTPHeaders) -> bool:
        if not self.needs_key(method):
            return True
        presented = _presented_key(headers)
        if presented is None:
            return False
        candidate = _digest(presented)
        # Compare with every key, whatever matches first: the time says nothing.
        matches = [hmac.compare_digest(candidate, digest) for digest in self._digests]
        return any(matches)

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """The headers that let a browser page from ``origin`` read the answer.

        With a list of origins the answer depends on the Origin header, whether it is
        allowed, another one or absent: Vary: Origin keeps caches from mixing them up."""
        vary = {} if "*" in self.cors_origins else {"Vary": "Origin"}
        if origin is None:
            return vary
        if "*" in self.cors_origins:
            allowed = "*"
        elif origin.rstrip("/") in self.cors_origins:
            allowed = origin
        else:
            return vary
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS,
        }
        if allowed != "*":
            headers["Vary"] = "Origin"
        return headers

    def preflight_headers(self, origin: str | None) -> dict[str, str]:
        headers = self.cors_headers(origin)
        if "Access-Control-Allow-Origin" in headers:
            headers.update(
                {
                    "Access-Control-Allow-Methods": API_METHODS,
                    "Access-Control-Allow-Headers": CORS_REQUEST_HEADERS,
                    "Access-Control-Max-Age": "600",
                }
            )
        return headers

    def client_of(self, peer: str | None, headers: HTTPHeaders) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the
        nearest address in X-Forwarded-For that is not one (proxies append on the
        right, so what lies left of the first untrusted hop is the client's say)."""
        client = peer or ""
        if not self.trusted_proxies or not self._trusted(client):
            return client
        hops = ",".join(headers.get_list("X-Forwarded-For")).split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not _is_address(hop):
                break
            client = hop
            if not self._trusted(hop):
                break
        return client

    def _trusted(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.trusted_proxies)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _presented_key(headers: HTTPHeaders) -> str | None:
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get("X-API-Key", "").strip()
    return api_key or None


class HideHeaderValues(logging.Filter):
    """Tornado's "Malformed HTTP message" line quotes the header value it refused, and
    that value may be a key (a key followed by a control byte, say): the line keeps
    its sentence and loses the value."""

    _QUOTED = re.compile(r"""(['"]).*\1""", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Malformed HTTP message"):
            record.args = tuple(
                self._QUOTED.sub("(value not logged)", str(arg)) if index else arg
                for index, arg in enumerate(record.args or ())
            )
        return True


def hide_header_values_in_tornado_logs() -> None:
    logger = logging.getLogger("tornado.general")
    if not any(isinstance(existing, HideHeaderValues) for existing in logger.filters):
        logger.addFilter(HideHeaderValues())
