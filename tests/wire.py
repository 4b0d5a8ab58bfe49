"""HTTP/1.1 spoken by hand over a socket: what no well-behaved client library sends
(trickled bodies, headers without a body after Expect: 100-continue, hostile header
bytes), and responses read exactly as they arrive, interim 100 Continue included."""

import select
import socket
import time
from dataclasses import dataclass, field


class Closed(Exception):
    """The server closed the connection before a complete response."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def request_bytes(
    method: str,
    path: str,
    headers: dict[str, str | bytes] | list[tuple[str, str | bytes]] | None = None,
    body: bytes = b"",
) -> bytes:
    """A request head (and body) as bytes; header values may be raw bytes."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in items:
        lines.append(name.encode("latin-1") + b": " + _raw(value))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty ``data`` ends the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Wire:
    """One client connection."""

    def __init__(self, port: int, timeout: float = 15.0, source: str = "") -> None:
        """``source``: another loopback address (127.0.0.2...) to connect from, a
        client of another address."""
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self._buffer = b""

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the server has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def readable(self, timeout: float = 0.0) -> bool:
        """Whether the server has sent something (or closed) within ``timeout``."""
        if self._buffer:
            return True
        return bool(select.select([self.sock], [], [], timeout)[0])

    def send_until_answered(self, pieces, pause: float = 0.0) -> bool:
        """Send ``pieces`` one by one (``pause`` seconds apart), stopping early once
        the server answers or hangs up. True if every piece was sent."""
        for piece in pieces:
            if self.readable() or not self.send(piece):
                return False
            if pause:
                time.sleep(pause)
        return True

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        return data

    def _fill(self) -> None:
        data = self._recv()
        if not data:
            raise Closed(self._buffer)
        self._buffer += data

    def read_response(self, method: str = "GET", skip_continue: bool = True) -> Response:
        """The next response; interim 100 Continue responses are skipped unless
        ``skip_continue`` is False (then a 100 is returned as it is)."""
        while True:
            while b"\r\n\r\n" not in self._buffer:
                self._fill()
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            response = Response(int(status_line.split(" ", 2)[1]))
            for line in lines:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                if name in response.headers:
                    response.headers[name] += ", " + value
                else:
                    response.headers[name] = value
            if response.status == 100 and skip_continue:
                continue
            if response.status < 200 or response.status in (204, 304) or method == "HEAD":
                return response
            if response.header("transfer-encoding") == "chunked":
                response.body = self._read_chunked()
                return response
            length = int(response.header("content-length") or 0)
            while len(self._buffer) < length:
                self._fill()
            response.body, self._buffer = self._buffer[:length], self._buffer[length:]
            return response

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._fill()
            size_line, _, self._buffer = self._buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(self._buffer) < size + 2:
                self._fill()
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2 :]
            if size == 0:
                return body

    def closed_within(self, timeout: float) -> bool:
        """True once the server closes the connection (end of stream or reset)
        within ``timeout`` seconds; anything it sends meanwhile is kept."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                data = self._recv()
                if not data:
                    return True
                self._buffer += data
        return False
