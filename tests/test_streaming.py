"""Uploads stream to disk as the bytes arrive, and a client that goes away leaves
nothing behind.

These tests talk raw HTTP/1.1 over a TCP connection (the server runs on the same
IOLoop), so they control exactly how many bytes the server has been given and can
look at the data folder between two writes.
"""

import asyncio
import json
import os
import time
import uuid

import pytest
from conftest import blob_files, body_json
from images import png
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

MiB = 1 << 20
DECLARED = 64 * MiB  # what the requests announce; never sent in full

# Pinned to the file blob store: these tests watch the temporary file itself (its
# bytes as they arrive, its removal). test_s3.py watches the S3 side of streaming (the
# multipart upload while the body arrives, aborted when the client goes).
pytestmark = pytest.mark.parametrize("backend", ["sqlite+file"], indirect=True)


# --- helpers --------------------------------------------------------------------------


async def eventually(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` (yielding to the IOLoop) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def temp_files(data_dir) -> list[str]:
    tmp = data_dir / "blobs" / "tmp"
    return sorted(os.path.join(tmp, name) for name in os.listdir(tmp))


def temp_holding(data_dir, expected: bytes):
    """The one temporary file, once it holds at least ``len(expected)`` bytes; its
    content is then checked by the caller."""
    files = temp_files(data_dir)
    if len(files) == 1 and os.path.getsize(files[0]) >= len(expected):
        return files[0]
    return None


def read_file(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def filler(size: int) -> bytes:
    """Bytes with no CR, so a multipart parser has no reason to hold any back."""
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def image_prefix(size: int) -> bytes:
    """``size`` bytes that start with a valid PNG (the rest is filler)."""
    head = png(width=4, height=4)
    return head + filler(size - len(head))


async def connect(http_port: int) -> IOStream:
    return await TCPClient().connect("127.0.0.1", http_port)


def request_head(method: str, path: str, port: int, length: int, content_type: str) -> bytes:
    return (
        f"{method} /api/v1{path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def multipart_preamble(boundary: str, filename: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()


def multipart_epilogue(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


async def read_response(stream: IOStream, timeout: float = 20.0) -> tuple[int, dict, bytes]:
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    body = await asyncio.wait_for(
        stream.read_bytes(int(headers.get("content-length", "0"))), timeout
    )
    return status, headers, body


def body_json_bytes(body: bytes):
    return json.loads(body)


async def image_names(api, album: str) -> list[str]:
    response = await api.list_images(album)
    assert response.code == 200
    return body_json(response)["imageList"]


async def assert_nothing_left(api, data_dir, album: str = "pets") -> None:
    """After an abandoned upload: no temp file (bounded wait), no blob, no catalog row."""
    await eventually(lambda: temp_files(data_dir) == [], what="the temporary file to go")
    assert blob_files(data_dir) == []
    assert await image_names(api, album) == []


class StartedUpload:
    """An upload whose headers and first bytes are on the wire, the rest withheld."""

    def __init__(self, stream: IOStream, image_bytes_sent: bytes, boundary: str | None):
        self.stream = stream
        self.image_bytes_sent = image_bytes_sent
        self.boundary = boundary

    async def send_image_bytes(self, data: bytes) -> None:
        await self.stream.write(data)
        self.image_bytes_sent += data


async def start_put(
    http_port: int, name: str, first: bytes, declared: int = DECLARED
) -> StartedUpload:
    stream = await connect(http_port)
    head = request_head("PUT", f"/albums/pets/images/{name}", http_port, declared, "image/png")
    await stream.write(head + first)
    return StartedUpload(stream, first, None)


async def start_multipart(
    http_port: int,
    name: str,
    first: bytes,
    declared: int = DECLARED,
    preamble_only: int | None = None,
) -> StartedUpload:
    """``preamble_only``: send only that many bytes of the part headers, and no image."""
    boundary = uuid.uuid4().hex
    preamble = multipart_preamble(boundary, name)
    stream = await connect(http_port)
    head = request_head(
        "POST",
        "/albums/pets/images",
        http_port,
        declared,
        f"multipart/form-data; boundary={boundary}",
    )
    if preamble_only is not None:
        await stream.write(head + preamble[:preamble_only])
        return StartedUpload(stream, b"", boundary)
    await stream.write(head + preamble + first)
    return StartedUpload(stream, first, boundary)


START = {"put": start_put, "multipart": start_multipart}


# --- the temp file grows with the bytes sent ------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("kind", ["put", "multipart"])
async def test_an_upload_streams_into_a_temp_file_and_vanishes_on_close(
    api, data_dir, http_port, kind
):
    assert (await api.create_album("pets")).code == 200
    upload = await START[kind](http_port, "big.png", image_prefix(MiB))

    temp = await eventually(
        lambda: temp_holding(data_dir, upload.image_bytes_sent),
        what="the first MiB in a temporary file",
    )
    # exactly the image bytes received so far: no multipart headers, nothing more,
    # and nothing kept back in memory until the (never sent) end of the body
    assert read_file(temp) == upload.image_bytes_sent
    assert temp.endswith(".part")
    assert not read_file(temp).startswith(b"--")

    # not visible while it is arriving; the server keeps answering meanwhile
    assert await image_names(api, "pets") == []
    assert (await api.download("pets", "big.png")).code == 404
    assert blob_files(data_dir) == []

    # more bytes: the same temp file grows by exactly them
    await upload.send_image_bytes(filler(3 * MiB + 12345))
    await eventually(
        lambda: temp_holding(data_dir, upload.image_bytes_sent),
        what="the next bytes in the temporary file",
    )
    assert temp_files(data_dir) == [temp]
    assert read_file(temp) == upload.image_bytes_sent
    assert await image_names(api, "pets") == []

    upload.stream.close()
    await assert_nothing_left(api, data_dir)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("kind", ["put", "multipart"])
async def test_a_streamed_upload_completes_over_a_slow_connection(api, data_dir, http_port, kind):
    """Sent in pieces with pauses: after each piece the temp file holds exactly the
    bytes so far; at the end the image is stored whole and the temp file is gone."""
    assert (await api.create_album("pets")).code == 200
    image = png(width=8, height=8, padding=5 * MiB)
    pieces = [image[i : i + 700 * 1024] for i in range(0, len(image), 700 * 1024)]
    boundary = uuid.uuid4().hex
    if kind == "put":
        declared = len(image)
    else:
        declared = (
            len(multipart_preamble(boundary, "slow.png"))
            + len(image)
            + len(multipart_epilogue(boundary))
        )

    stream = await connect(http_port)
    if kind == "put":
        await stream.write(
            request_head("PUT", "/albums/pets/images/slow.png", http_port, declared, "image/png")
        )
    else:
        await stream.write(
            request_head(
                "POST",
                "/albums/pets/images",
                http_port,
                declared,
                f"multipart/form-data; boundary={boundary}",
            )
            + multipart_preamble(boundary, "slow.png")
        )
    sent = b""
    for piece in pieces[:-1]:
        await stream.write(piece)
        sent += piece
        # a PNG chunk holds bytes that look like CR: allow the multipart parser to
        # hold back less than one delimiter's worth, never more
        slack = 0 if kind == "put" else len(boundary) + 4
        expected = sent[: len(sent) - slack]
        temp = await eventually(
            lambda expected=expected: temp_holding(data_dir, expected),
            what="the piece in the temporary file",
        )
        content = read_file(temp)
        assert sent.startswith(content) and len(content) >= len(sent) - slack
        assert await image_names(api, "pets") == []
    await stream.write(pieces[-1] + (multipart_epilogue(boundary) if kind == "multipart" else b""))

    status, headers, body = await read_response(stream)
    stream.close()
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    assert body_json_bytes(body) == {"message": "slow.png image added to album pets"}
    assert temp_files(data_dir) == []
    assert len(blob_files(data_dir)) == 1
    response = await api.download("pets", "slow.png")
    assert response.code == 200 and response.body == image


# --- a client that disconnects mid-upload ---------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("sent", [0, 100, 8191, 8192, 300 * 1024, 2 * MiB], ids=lambda n: f"{n}B")
@pytest.mark.parametrize("kind", ["put", "multipart"])
async def test_a_client_that_disconnects_mid_upload_leaves_nothing(
    api, data_dir, http_port, kind, sent
):
    assert (await api.create_album("pets")).code == 200
    first = image_prefix(sent) if sent >= 100 else png()[:sent]
    upload = await START[kind](http_port, "cat.png", first)
    # wait until the server has really started the upload and written what it got
    temp = await eventually(lambda: temp_holding(data_dir, first), what="the temporary file")
    assert read_file(temp) == first

    upload.stream.close()
    await assert_nothing_left(api, data_dir)

    # the name is free: the same upload now succeeds
    image = png(width=3, height=2, padding=sent)
    response = await (
        api.put_image("pets", "cat.png", image)
        if kind == "put"
        else api.upload("pets", "cat.png", image)
    )
    assert response.code == 200, response.body
    assert await image_names(api, "pets") == ["cat.png"]
    assert (await api.download("pets", "cat.png")).body == image
    assert temp_files(data_dir) == []
    assert len(blob_files(data_dir)) == 1


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("preamble_bytes", [0, 20, 60])
async def test_a_disconnect_inside_the_multipart_headers_leaves_nothing(
    api, data_dir, http_port, preamble_bytes
):
    assert (await api.create_album("pets")).code == 200
    upload = await start_multipart(http_port, "cat.png", b"", preamble_only=preamble_bytes)
    await asyncio.sleep(0.1)
    assert temp_files(data_dir) == []  # no part header yet: no upload begun
    upload.stream.close()
    await asyncio.sleep(0.1)
    await assert_nothing_left(api, data_dir)
    assert (await api.upload("pets", "cat.png", png())).code == 200
    assert await image_names(api, "pets") == ["cat.png"]


@pytest.mark.gen_test(timeout=60)
async def test_many_abandoned_uploads_leave_nothing_and_free_their_names(api, data_dir, http_port):
    assert (await api.create_album("pets")).code == 200
    uploads = []
    for index in range(12):
        start = start_put if index % 2 else start_multipart
        uploads.append(await start(http_port, f"img{index}.png", image_prefix(256 * 1024)))
    await eventually(
        lambda: (
            len(temp_files(data_dir)) == 12
            and all(os.path.getsize(path) >= 256 * 1024 for path in temp_files(data_dir))
        ),
        what="twelve temporary files",
    )
    assert await image_names(api, "pets") == []
    for upload in uploads:
        upload.stream.close()
    await assert_nothing_left(api, data_dir)
    for index in range(12):
        response = await api.put_image("pets", f"img{index}.png", png(padding=index))
        assert response.code == 200, response.body
    assert await image_names(api, "pets") == sorted(f"img{i}.png" for i in range(12))
    assert temp_files(data_dir) == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("kind", ["put", "multipart"])
async def test_an_album_deleted_mid_upload_gets_404_and_keeps_nothing(
    api, data_dir, http_port, kind
):
    """The album goes away while the body is still arriving: the upload ends 404
    when it finishes, and neither a blob nor a temp file nor a row remains."""
    assert (await api.create_album("pets")).code == 200
    image = png(width=2, height=2, padding=2 * MiB)
    boundary = uuid.uuid4().hex
    preamble = multipart_preamble(boundary, "late.png") if kind == "multipart" else b""
    epilogue = multipart_epilogue(boundary) if kind == "multipart" else b""
    stream = await connect(http_port)
    content_type = "image/png" if kind == "put" else f"multipart/form-data; boundary={boundary}"
    path = "/albums/pets/images/late.png" if kind == "put" else "/albums/pets/images"
    method = "PUT" if kind == "put" else "POST"
    await stream.write(
        request_head(
            method, path, http_port, len(preamble) + len(image) + len(epilogue), content_type
        )
        + preamble
        + image[:MiB]
    )
    await eventually(lambda: temp_holding(data_dir, image[: MiB - 64]), what="the temporary file")

    response = await api.request("DELETE", "/albums/pets")
    assert response.code == 200

    await stream.write(image[MiB:] + epilogue)
    status, _headers, body = await read_response(stream)
    stream.close()
    assert status == 404, body
    assert body_json_bytes(body) == {"error": "album pets does not exist"}
    assert temp_files(data_dir) == []
    assert blob_files(data_dir) == []
    assert body_json(await api.request("GET", "/albums")) == {"albumList": []}


@pytest.mark.gen_test(timeout=60)
async def test_an_album_deleted_before_the_file_part_arrives_gets_404(api, data_dir, http_port):
    """Multipart: the album exists when the request starts but is gone by the time
    the "file" part header arrives: 404 at once, nothing stored."""
    assert (await api.create_album("pets")).code == 200
    image = png(width=2, height=2, padding=MiB)
    boundary = uuid.uuid4().hex
    preamble = multipart_preamble(boundary, "late.png")
    epilogue = multipart_epilogue(boundary)
    stream = await connect(http_port)
    await stream.write(
        request_head(
            "POST",
            "/albums/pets/images",
            http_port,
            len(preamble) + len(image) + len(epilogue),
            f"multipart/form-data; boundary={boundary}",
        )
        + preamble[:30]
    )
    await asyncio.sleep(0.05)
    assert (await api.request("DELETE", "/albums/pets")).code == 200
    await stream.write(preamble[30:] + image + epilogue)
    status, _headers, body = await read_response(stream)
    stream.close()
    assert status == 404, body
    assert body_json_bytes(body) == {"error": "album pets does not exist"}
    await eventually(lambda: temp_files(data_dir) == [], what="no temporary file")
    assert blob_files(data_dir) == []
    assert body_json(await api.request("GET", "/albums")) == {"albumList": []}


# --- the album an upload began in -----------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("kind", ["put", "multipart"])
async def test_an_upload_lands_in_its_album_when_the_album_is_renamed_meanwhile(
    api, data_dir, http_port, kind
):
    assert (await api.create_album("pets")).code == 200
    image = png(width=3, height=3, padding=2 * MiB)
    first, rest = image[: MiB // 2], image[MiB // 2 :]
    boundary = uuid.uuid4().hex
    declared = len(image) + (
        len(multipart_preamble(boundary, "cat.png")) + len(multipart_epilogue(boundary))
        if kind == "multipart"
        else 0
    )
    stream = await connect(http_port)
    if kind == "put":
        head = request_head("PUT", "/albums/pets/images/cat.png", http_port, declared, "image/png")
        await stream.write(head + first)
    else:
        head = request_head(
            "POST",
            "/albums/pets/images",
            http_port,
            declared,
            f"multipart/form-data; boundary={boundary}",
        )
        await stream.write(head + multipart_preamble(boundary, "cat.png") + first)
    await eventually(lambda: temp_holding(data_dir, first), what="the upload to be under way")

    response = await api.request("PATCH", "/albums/pets", {"albumName": "animals"})
    assert response.code == 200
    await stream.write(rest + (multipart_epilogue(boundary) if kind == "multipart" else b""))
    status, _, body = await read_response(stream)
    stream.close()
    assert status == 200, body
    assert body_json_bytes(body) == {"message": "cat.png image added to album animals"}
    assert await image_names(api, "animals") == ["cat.png"]
    assert (await api.download("animals", "cat.png")).body == image


@pytest.mark.gen_test(timeout=60)
async def test_an_upload_into_an_album_deleted_meanwhile_is_404_and_leaves_nothing(
    api, data_dir, http_port
):
    assert (await api.create_album("pets")).code == 200
    image = png(width=3, height=3, padding=MiB)
    first, rest = image[: MiB // 2], image[MiB // 2 :]
    upload = await start_put(http_port, "cat.png", first, declared=len(image))
    await eventually(lambda: temp_holding(data_dir, first), what="the upload to be under way")
    assert (await api.request("DELETE", "/albums/pets")).code == 200
    # Another album of the same name is another album: the upload does not land there.
    assert (await api.create_album("pets")).code == 200
    await upload.stream.write(rest)
    status, _, body = await read_response(upload.stream)
    upload.stream.close()
    assert status == 404
    assert body_json_bytes(body) == {"error": "album pets does not exist"}
    await assert_nothing_left(api, data_dir)
