"""The handlers' common ground: JSON in, JSON out, one map from errors to statuses."""

import asyncio
import hashlib
import json
import logging
import re
import time
from asyncio import Future
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from tornado.http1connection import HTTP1Connection
from tornado.web import HTTPError, RequestHandler, stream_request_body

from handlers.access import AccessPolicy
from handlers.observe import request_id
from handlers.sending import SendWatch
from handlers.transfer import declared_length, etag_matches
from store import (
    Busy,
    Conflict,
    Deadline,
    ImageStore,
    InvalidInput,
    NotFound,
    RenderFailed,
    StorageFull,
    StorageUnavailable,
    StoreError,
    TooLarge,
    TooManyPixels,
    UnsupportedMedia,
)
from store.attributed import failed_backend

log = logging.getLogger("imagestore.http")

# The one place where a domain error becomes an HTTP status.
STATUS_OF_ERROR: dict[type[StoreError], int] = {
    InvalidInput: 400,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMedia: 415,
    TooManyPixels: 422,
    RenderFailed: 422,
    Busy: 503,
    Deadline: 503,
    StorageUnavailable: 503,
    StorageFull: 507,
}

# A route as Tornado takes it: pattern, handler class, its initialize() arguments.
Route = tuple[str, type[RequestHandler], dict[str, Any]]

# A list answer's cache key: ("albums",) or ("images", album).
ListKey = tuple[str, ...]

# JSON request bodies are a few names long; anything bigger is a mistake or abuse.
JSON_BODY_LIMIT = 64 * 1024
# ... and one level deep: json.loads recurses once per level, and Python's stack
# would give out (RecursionError) a few hundred levels down.
JSON_MAX_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_nests_too_deep(body: bytes | bytearray) -> bool:
    """Whether the arrays and objects of a JSON text nest deeper than JSON_MAX_DEPTH,
    brackets inside strings aside; told without parsing, so no depth can exhaust
    the stack."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, delete=_NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > JSON_MAX_DEPTH:
            return True
    return False


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


class APIError(HTTPError):
    """An HTTPError whose message reaches the client as ``{"error": message}``, with
    ``headers`` (Retry-After...) on the error response."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, "%s", message)
        self.headers = headers or {}


def http_error(status: int, message: str, headers: dict[str, str] | None = None) -> APIError:
    return APIError(status, message, headers)


def status_of(err: BaseException) -> int:
    for cls in type(err).__mro__:
        if cls in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[cls]
    return 500


class ListCache:
    """JSON list bodies kept until the catalog changes (in any worker process): lists
    are read far more often than they change.

    Keys are normalised names and page arguments (every spelling of a name is one
    entry) and the whole cache is bounded in bytes, least recently used first out: no
    client can make it grow past ``max_bytes``. A body bigger than a quarter of it is
    not kept."""

    def __init__(self, max_bytes: int = 64 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[ListKey, tuple[int, ListAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: ListKey, version: int) -> "ListAnswer | None":
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def keep(
        self, key: ListKey, version: int, body: bytes, link: str | None = None
    ) -> "ListAnswer":
        answer = ListAnswer(body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"', link)
        self._forget(key)
        if answer.size <= self.max_bytes // 4:
            self._entries[key] = (version, answer)
            self.bytes += answer.size
            while self.bytes > self.max_bytes:
                self._forget(next(iter(self._entries)))
        return answer

    def _forget(self, key: ListKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1].size


@dataclass(frozen=True)
class ListAnswer:
    """A list's JSON body, its ETag, and the Link header of the next page if any."""

    body: bytes
    etag: str
    link: str | None = None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.link or "")


class RequestTracker:
    """Counts requests in flight, so that shutdown can wait for them."""

    def __init__(self) -> None:
        self.active = 0
        self.draining = False

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self.active


@stream_request_body
class APIHandler(RequestHandler):
    """Base of every /api handler.

    Bodies are streamed so that limits are enforced before they are read; JSON
    handlers get theirs, bounded, from ``json_body``.
    """

    store: ImageStore
    # True for what must answer without a key whatever the policy (the health check).
    public = False
    # For the access log and the metrics (handlers/observe.py).
    bytes_sent = 0
    bytes_received = 0
    is_upload = False
    failed_backend: str | None = None
    rendition_source: str | None = None

    def initialize(
        self,
        store: ImageStore,
        notifier_status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        """``notifier_status``: the MQTT publisher's state (for /healthz; None: off)."""
        self.store = store
        self.notifier_status = notifier_status
        self._body = bytearray()
        self._tracker: RequestTracker = self.settings["requests"]
        self._tracker.active += 1
        self._tracked = True
        self._send_watch: SendWatch | None = None

    def _untrack(self) -> None:
        if self._tracked:
            self._tracked = False
            self._tracker.active -= 1

    def on_finish(self) -> None:
        self._untrack()

    def flush(self, include_footers: bool = False) -> "Future[None]":
        """Send what is buffered; a response the client stops taking is watched from
        its first byte the kernel would not take (finish() flushes too)."""
        self.bytes_sent += sum(len(piece) for piece in self._write_buffer)
        future = super().flush(include_footers)
        stream = getattr(self.connection, "stream", None)
        if self._send_watch is None and stream is not None and stream.writing():
            self._send_watch = SendWatch(
                stream,
                self.settings["send_timeout_seconds"],
                lambda: self._finished,
                f"{self.request.method} {self.request.path}",
            )
        return future

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._untrack()

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", API_CSP)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-ID", request_id(self))
        # Here, so that error responses carry them too (send_error clears headers).
        for name, value in self.access.cors_headers(self.request.headers.get("Origin")).items():
            self.set_header(name, value)

    @property
    def access(self) -> AccessPolicy:
        access: AccessPolicy = self.application.settings["access"]
        return access

    @property
    def connection(self) -> HTTP1Connection:
        """The request's HTTP/1 connection (all Tornado serves here)."""
        return cast(HTTP1Connection, self.request.connection)

    @property
    def client(self) -> str:
        """Who sends the request: the peer's address, or the forwarded one behind a
        trusted proxy (IMAGESTORE_TRUSTED_PROXIES)."""
        return self.access.client_of(self.request.remote_ip, self.request.headers)

    async def prepare(self) -> None:
        if self._tracker.draining:
            # Connections kept alive from before the shutdown began: answer, then close.
            self.connection._disconnect_on_finish = True  # Tornado has no public door
            raise http_error(503, "the service is shutting down", {"Retry-After": "1"})
        self.check_framing()
        if not self.public and not self.access.allows(self.request.method, self.request.headers):
            raise http_error(
                401,
                "an API key is needed: send Authorization: Bearer <key> or X-API-Key",
                {"WWW-Authenticate": 'Bearer realm="imagestore"'},
            )
        await self.prepare_body()

    def options(self, *args: str, **kwargs: str) -> None:
        """CORS preflight: which methods and headers a browser page may use."""
        for name, value in self.access.preflight_headers(
            self.request.headers.get("Origin")
        ).items():
            self.set_header(name, value)
        self.set_status(204)
        self.finish()

    def check_framing(self) -> None:
        """Refuse the body framing that Tornado would refuse anyway, but only after
        this handler had run (an upload slot taken, a file begun) and with a bare 400:
        here the client gets a sentence, and no value we cannot read goes further."""
        headers = self.request.headers
        length = headers.get("Content-Length")
        if "Transfer-Encoding" in headers:
            if length is not None:
                raise http_error(
                    400, "a request must not carry both Transfer-Encoding and Content-Length"
                )
            if headers["Transfer-Encoding"].lower() != "chunked":
                raise http_error(400, "the only Transfer-Encoding accepted is chunked")
        elif length is not None and declared_length(length) is None:
            raise http_error(
                400, "the Content-Length header must be one number of bytes: 1 to 18 digits 0-9"
            )

    async def prepare_body(self) -> None:
        """Get ready for the request's body; by default a small JSON document."""
        declared = declared_length(self.request.headers.get("Content-Length"))
        if declared is not None and declared > JSON_BODY_LIMIT:
            raise http_error(413, f"the request body is larger than {JSON_BODY_LIMIT} bytes")

    async def data_received(self, chunk: bytes) -> None:
        self.bytes_received += len(chunk)
        if self._finished:
            return
        self._body += chunk
        if len(self._body) > JSON_BODY_LIMIT:
            self.fail(http_error(413, f"the request body is larger than {JSON_BODY_LIMIT} bytes"))

    def fail(self, err: BaseException) -> None:
        """Answer with ``err`` now, from a place where raising would not reach
        Tornado's error handling (``data_received``). Tornado then drops the
        rest of the body and closes the connection."""
        if not self._finished:
            self.log_exception(type(err), err, err.__traceback__)
            self.send_error(exc_info=(type(err), err, err.__traceback__))

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise http_error(400, "the URL path is not valid UTF-8") from None

    def json_body(self, field: str) -> str:
        """The value of ``field`` in the request's JSON object body, a string."""
        if json_nests_too_deep(self._body):
            raise http_error(400, f"the request body nests deeper than {JSON_MAX_DEPTH} levels")
        try:
            body = json.loads(self._body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise http_error(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise http_error(400, "the request body must be a JSON object")
        if field not in body:
            raise http_error(400, f'the field "{field}" is missing from the request body')
        if not isinstance(body[field], str):
            raise http_error(400, f'the field "{field}" must be a string')
        value: str = body[field]
        return value

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], StoreError):
            status_code = status_of(exc_info[1])
            self.failed_backend = failed_backend(exc_info[1])
        elif exc_info and isinstance(exc_info[1], HTTPError):
            status_code = exc_info[1].status_code
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        err = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(err, StoreError):
            message = str(err)
        elif isinstance(err, HTTPError) and err.log_message and status_code not in (500, 502):
            message = err.log_message % err.args if err.args else err.log_message
        elif status_code == 404:
            message = "no such endpoint"
        elif status_code == 405:
            message = f"method {self.request.method} is not allowed here"
        elif status_code >= 500 and status_code not in (503, 507):
            message = "internal server error"
        else:
            message = self._reason
        for name, value in getattr(err, "headers", {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": message}))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, StoreError):
            level = logging.WARNING if status_of(value) >= 500 else logging.INFO
            log.log(
                level,
                "%s %s -> %d: %s",
                self.request.method,
                self.request.path,
                status_of(value),
                value,
            )
        else:
            super().log_exception(typ, value, tb)

    def list_argument(self, name: str) -> str | None:
        """A query argument of a list request (its last value) exactly as sent, or
        None. (Tornado's get_query_argument would strip spaces, which names may end
        with, and turn control characters into spaces.)"""
        values = self.request.query_arguments.get(name)
        return None if not values else self.decode_argument(values[-1], name)

    async def write_list(
        self,
        key: ListKey,
        produce: Callable[[], Awaitable[tuple[dict[str, Any], str | None]]],
    ) -> None:
        """Answer the JSON object ``produce`` makes (with the Link header it gives),
        from the cache while the catalog is unchanged, with an ETag (304 for a client
        that has it)."""
        cache: ListCache = self.application.settings["list_cache"]
        version = await self.store.change_token()
        answer = cache.lookup(key, version)
        if answer is None:
            payload, link = await produce()
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            answer = cache.keep(key, version, body, link)
        self.set_header("ETag", answer.etag)
        self.set_header("Cache-Control", "no-cache")
        if answer.link is not None:
            self.set_header("Link", answer.link)
        if etag_matches(self.request.headers.get("If-None-Match"), answer.etag):
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(answer.body)

    def write_json(self, payload: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(payload, ensure_ascii=False).encode("utf-8"))


class NotFoundHandler(APIHandler):
    """Anything under no route: a JSON 404, never an HTML page."""

    async def prepare_body(self) -> None:
        raise HTTPError(404)
