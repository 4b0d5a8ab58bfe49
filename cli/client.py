"""HTTP to an imagestore service with Tornado's own client, retried like a good client.

503/429 (with their Retry-After), 502/504 and connection errors are retried with a
bounded exponential backoff; every other answer is returned as it is. Bodies stream:
an upload is produced from its file piece by piece, a download goes to a sink as it
arrives, so memory does not grow with the size of an image.
"""

import asyncio
import json
import math
import random
from asyncio import Future
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import SimpleAsyncHTTPClient

API_PREFIX = "/api/v1"
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
# Tornado reports a connection it could not make or lost as HTTP 599.
CONNECTION_FAILED = 599
CONNECT_TIMEOUT_SECONDS = 20.0
# A whole request may take this long plus its bytes at this rate (a stalled service
# must not hang the run forever; a slow link must not fail a large image).
BASE_TIMEOUT_SECONDS = 120.0
MIN_BYTES_PER_SECOND = 64 * 1024
MAX_RETRY_AFTER_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0
# An error answer's body is kept up to this size (it is a JSON sentence).
ERROR_BODY_LIMIT = 64 * 1024
# Bodies of any size: the limits are the service's, not the client's.
NO_BODY_LIMIT = 1 << 62


class LocalFileError(Exception):
    """The local side of a transfer failed (a file vanished, changed, or the disk is
    full): not a network trouble, never retried."""


class Unreachable(Exception):
    """The service did not answer after every retry."""


@dataclass
class Answer:
    """A service's final answer: status, headers, and the body when it was kept."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> str:
        """The service's sentence ({"error": ...}), else the status."""
        try:
            sentence = self.json().get("error")
        except (ValueError, AttributeError):
            sentence = None
        return str(sentence) if sentence else f"HTTP {self.status}"


@dataclass
class Backoff:
    """Bounded retries: ``retries`` more attempts, waits doubling from ``first`` up to
    MAX_BACKOFF_SECONDS (with jitter, so that parallel jobs do not retry in step), or
    what Retry-After says (up to MAX_RETRY_AFTER_SECONDS)."""

    retries: int = 6
    first: float = 0.5

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                seconds = float(retry_after)
            except ValueError:
                seconds = math.nan  # an HTTP date: our own backoff instead
            if math.isfinite(seconds):
                return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
        wait = min(self.first * 2.0**attempt, MAX_BACKOFF_SECONDS)
        return wait * random.uniform(0.75, 1.25)


class Sink(Protocol):
    """Where a download's bytes go; ``start`` is called as each attempt's 200 arrives."""

    def start(self) -> None: ...

    def write(self, chunk: bytes) -> None: ...


class Body(Protocol):
    """An upload's bytes: ``open`` (before each attempt) says how many, ``produce``
    writes them piece by piece, ``close`` ends the attempt."""

    def open(self) -> int: ...

    async def produce(self, write: Callable[[bytes], "Future[None]"]) -> None:
        """Awaits each ``write`` (Tornado's connection's: a Future, done once the bytes
        are on their way), so that only a piece at a time is in memory."""

    def close(self) -> None: ...


class ServiceClient:
    """One service at ``url`` (with or without /api/v1), at most ``jobs`` requests at
    once. ``key`` goes in a header and is never part of a message. ``on_retry`` is
    told a sentence each time a request is retried, and whether the connection failed
    (rather than the service asking to retry later)."""

    def __init__(
        self,
        url: str,
        key: str | None,
        jobs: int,
        backoff: Backoff | None = None,
        on_retry: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.base = api_base(url)
        self.shown_url = shown(self.base)
        self._key = key
        self.backoff = backoff or Backoff()
        self._on_retry = on_retry or (lambda _line, _connection: None)
        self.retries = 0
        # force_instance: a client of our own, not Tornado's per-loop shared one.
        self._http = SimpleAsyncHTTPClient(
            force_instance=True, max_clients=jobs, max_body_size=NO_BODY_LIMIT
        )

    def close(self) -> None:
        self._http.close()

    def url(self, *names: str, query: str = "") -> str:
        path = "".join("/" + quote(name, safe="") for name in names)
        return f"{self.base}{path}" + (f"?{query}" if query else "")

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"User-Agent": "imagestore-cli", **(extra or {})}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: object | None = None,
        headers: dict[str, str] | None = None,
        what: str = "",
    ) -> Answer:
        """A small request whose answer is read whole."""
        body = None if json_body is None else json.dumps(json_body).encode()
        extra = {"Content-Type": "application/json"} if body is not None else {}

        async def attempt() -> Answer:
            response = await self._fetch(
                HTTPRequest(
                    url,
                    method=method,
                    body=body,
                    headers=self._headers({**extra, **(headers or {})}),
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    request_timeout=request_timeout(0),
                )
            )
            return Answer(response.code, dict(response.headers), response.body or b"")

        return await self._retrying(attempt, what or f"{method} {url}")

    async def upload(self, url: str, body: Body, what: str) -> Answer:
        """PUT ``body``, streamed. Expect: 100-continue: a refusal (409, 413, 503...)
        costs no body bytes."""

        async def attempt() -> Answer:
            length = body.open()
            try:
                response = await self._fetch(
                    HTTPRequest(
                        url,
                        method="PUT",
                        # Tornado types ``write`` as returning None; it returns a Future.
                        body_producer=lambda write: asyncio.ensure_future(
                            body.produce(write)  # type: ignore[arg-type]
                        ),
                        headers=self._headers(
                            {
                                "Content-Length": str(length),
                                "Content-Type": "application/octet-stream",
                            }
                        ),
                        expect_100_continue=True,
                        connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        request_timeout=request_timeout(length),
                    )
                )
            finally:
                body.close()
            return Answer(response.code, dict(response.headers), response.body or b"")

        return await self._retrying(attempt, what)

    async def download(self, url: str, sink: Sink, size_hint: int, what: str) -> Answer:
        """GET into ``sink`` when the answer is 200; any other answer's body is kept
        (up to ERROR_BODY_LIMIT) in the Answer."""

        async def attempt() -> Answer:
            status = 0
            error_body = bytearray()

            def on_header(line: str) -> None:
                nonlocal status
                if line.startswith("HTTP/"):
                    status = int(line.split()[1])
                    if status == 200:
                        sink.start()

            def on_chunk(chunk: bytes) -> None:
                if status == 200:
                    # On the IOLoop, on purpose: the write is the flow control (Tornado
                    # gives a streaming callback none), so memory stays flat when the
                    # disk is slower than the network.
                    sink.write(chunk)
                elif len(error_body) < ERROR_BODY_LIMIT:
                    error_body.extend(chunk[: ERROR_BODY_LIMIT - len(error_body)])

            response = await self._fetch(
                HTTPRequest(
                    url,
                    headers=self._headers(None),
                    header_callback=on_header,
                    streaming_callback=on_chunk,
                    decompress_response=False,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    request_timeout=request_timeout(size_hint),
                )
            )
            return Answer(response.code, dict(response.headers), bytes(error_body))

        return await self._retrying(attempt, what)

    async def _fetch(self, request: HTTPRequest) -> HTTPResponse:
        return await self._http.fetch(request, raise_error=False)

    async def _retrying(self, attempt: Callable[[], Awaitable[Answer]], what: str) -> Answer:
        for number in range(self.backoff.retries + 1):
            last = number == self.backoff.retries
            connection = False
            try:
                answer = await attempt()
            except LocalFileError:
                raise
            except (OSError, StreamClosedError, HTTPClientError) as err:
                reason = connection_trouble(err)
                if last:
                    raise Unreachable(f"{self.shown_url}: {reason}") from None
                wait = self.backoff.delay(number, None)
                connection = True
            else:
                if answer.status not in RETRIED_STATUSES or last:
                    return answer
                reason = f"{answer.status} ({answer.error()})"
                wait = self.backoff.delay(number, answer.headers.get("Retry-After"))
            self.retries += 1
            self._on_retry(f"{what}: {reason}; retrying in {wait:.1f} s", connection)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")


def request_timeout(size: int) -> float:
    return BASE_TIMEOUT_SECONDS + size / MIN_BYTES_PER_SECOND


def connection_trouble(err: Exception) -> str:
    if isinstance(err, HTTPClientError):
        if err.code != CONNECTION_FAILED:
            return f"HTTP {err.code}"
        return err.message or "the connection failed"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def api_base(url: str) -> str:
    """http://host:3333, http://host:3333/ or http://host:3333/api/v1 -> .../api/v1."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown(url)} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    if not path.endswith(API_PREFIX):
        path += API_PREFIX
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def shown(url: str) -> str:
    """The URL as printed: without user:password@ should it carry one."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
