"""A client that stops reading cannot hold a response (its connection, buffer and open
image file) for ever: it is cut after IMAGESTORE_SEND_TIMEOUT_SECONDS without progress,
while a slow client that keeps reading gets everything."""

import asyncio
import os
import socket
import sqlite3
import time

import pytest
from images import png

from handlers import make_app

MiB = 1 << 20
IMAGE = png(width=4, height=4, padding=24 * MiB)
TIMEOUT = 1.0


@pytest.fixture
def app(store, upload_limits):
    return make_app(store, limits=upload_limits, send_timeout_seconds=TIMEOUT)


def open_get(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    # A small receive window, so that the server's bytes wait in its own buffers.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", port))
    # Connection: close, so that the end of the response is the end of the stream.
    sock.sendall(f"GET /api/v1{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


async def read_all(sock: socket.socket, timeout: float, pace: float = 0.0) -> bytes:
    """Everything until the server closes (or ``timeout``), reading every ``pace`` s."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(256 * 1024)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if not piece:
            break
        received += piece
        if pace:
            await asyncio.sleep(pace)
    return bytes(received)


def open_blob_handles(data_dir) -> int:
    blobs = str(data_dir / "blobs")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(blobs):
                count += 1
        except OSError:
            pass
    return count


@pytest.mark.gen_test(timeout=60)
# Counts the service's open file descriptors on the blob folder: about local files.
# (test_a_slow_reader_that_keeps_reading_gets_everything runs on every backend.)
@pytest.mark.parametrize("backend", ["sqlite+file"], indirect=True)
async def test_a_download_that_is_never_read_is_cut_and_releases_its_file(api, http_port, data_dir):
    await api.create_album("a")
    assert (await api.put_image("a", "big.png", IMAGE)).code == 200
    stalled = [open_get(http_port, "/albums/a/images/big.png") for _ in range(5)]
    await asyncio.sleep(0.5)
    assert open_blob_handles(data_dir) == 5, "each response holds the image open"
    # Meanwhile the service answers others; after the timeout the stalled ones are cut.
    assert (await api.request("GET", "/albums")).code == 200
    deadline = time.monotonic() + TIMEOUT * 2 + 6
    while open_blob_handles(data_dir) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert open_blob_handles(data_dir) == 0, "every stalled response released its file"
    for sock in stalled:
        got = await read_all(sock, timeout=10)
        assert len(got) < len(IMAGE), "the connection was closed before the whole image"
        sock.close()
    # Deleting the image now frees its bytes: nothing holds the file.
    assert (await api.request("DELETE", "/albums/a/images/big.png")).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_slow_reader_that_keeps_reading_gets_everything(api, http_port):
    image = png(width=2, height=2, padding=3 * MiB)
    await api.create_album("a")
    assert (await api.put_image("a", "slow.png", image)).code == 200
    sock = open_get(http_port, "/albums/a/images/slow.png")
    began = time.monotonic()
    got = await read_all(sock, timeout=40, pace=0.1)
    sock.close()
    assert time.monotonic() - began > TIMEOUT * 2, "slower than the timeout in all"
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == image


@pytest.mark.gen_test(timeout=60)
# The catalog is filled through SQLite directly (through the API it would take a
# minute); what is tested is the HTTP side, the same for every backend.
@pytest.mark.parametrize("backend", ["sqlite+file"], indirect=True)
async def test_a_large_list_that_is_never_read_is_cut_too(api, http_port, data_dir):
    await api.create_album("a")
    # 8 MiB of names, more than the sockets' buffers hold; written in one transaction
    # (through the API this would take a minute of fsyncs).
    with sqlite3.connect(data_dir / "catalog.sqlite3") as catalog:
        catalog.executemany(
            "INSERT INTO albums (name, created_at) VALUES (?, 0)",
            ((f"album-{index:05}-{'x' * 240}",) for index in range(32000)),
        )
    sock = open_get(http_port, "/albums")
    await asyncio.sleep(TIMEOUT * 2 + 2)
    got = await read_all(sock, timeout=5)
    sock.close()
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    assert len(body) < length, "cut before the whole list was sent"
