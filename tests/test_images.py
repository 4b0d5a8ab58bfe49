"""Images: uploads (multipart POST and raw PUT), listing, rename, delete, and every
refusal, each asserted by status and exact JSON body, with the disk checked after.

The upload limit is lowered to 64 KiB for this module so that limits are cheap to hit.
"""

import asyncio
import hashlib
import json

import pytest
from conftest import body_json
from images import ACCEPTED, NOT_IMAGES, png

LIMIT = 64 * 1024
LIMIT_MESSAGE = f"the image is larger than the limit of {LIMIT} bytes"
NOT_AN_IMAGE = (
    "the file is not an image of an accepted format "
    "(JPEG, PNG, GIF, WebP, BMP, TIFF, ICO, AVIF, HEIC)"
)
EXPECTED_MULTIPART = 'expected a multipart/form-data body with the image in the field "file"'
TRUNCATED = "the multipart body ended before its closing boundary"

A = png(padding=10)
B = png(2, 2, padding=20)
HOW = ["post", "put"]


@pytest.fixture
def max_upload_bytes():
    return LIMIT


# --- helpers -----------------------------------------------------------------------


def part(
    disposition: str, data: bytes, content_type: str | None = "application/octet-stream"
) -> bytes:
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode("utf-8") + b"\r\n" + data


def file_part(
    filename: str, data: bytes, content_type: str | None = "application/octet-stream"
) -> bytes:
    return part(f'form-data; name="file"; filename="{filename}"', data, content_type)


def form(*parts: bytes, boundary: str = "7MA4YWxkTrZu0gW") -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/form-data body made of ``parts`` as given."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return f"multipart/form-data; boundary={boundary}", body + b"--" + boundary.encode() + b"--\r\n"


async def post_form(api, album: str, content_type: str | None, body: bytes):
    headers = {"Content-Type": content_type} if content_type is not None else None
    return await api.request("POST", f"/albums/{api.path(album)}/images", body, headers=headers)


async def upload(
    api,
    how: str,
    album: str,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
):
    """Upload ``data`` as ``name`` by multipart POST or by raw PUT."""
    if how == "post":
        ctype, body = form(file_part(name, data, content_type))
        return await post_form(api, album, ctype, body)
    return await api.put_image(album, name, data, headers={"Content-Type": content_type})


def blobs(backend) -> list[str]:
    return backend.published()


def temps(backend) -> list[str]:
    return backend.unfinished()


def blob_bytes(backend) -> list[bytes]:
    return backend.blob_bytes()


async def until_uploads_running(store, count: int) -> None:
    """Until the store has ``count`` uploads begun and not finished (the upload held in
    memory or in the blob store, whichever the backend does)."""
    for _ in range(1000):
        if store.running_uploads == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{store.running_uploads} uploads running, not {count}")


async def assert_left_behind(api, backend, album: str, images: list[str]) -> None:
    """Exactly ``images`` are listed, each with one blob, and no upload is pending."""
    assert temps(backend) == []
    assert len(blobs(backend)) == len(images)
    response = await api.list_images(album)
    assert response.code == 200 and body_json(response) == {"imageList": images}


def png_of_size(size: int) -> bytes:
    overhead = len(png(padding=1)) - 1
    data = png(padding=size - overhead)
    assert len(data) == size
    return data


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 10
) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response (status, lower-cased headers, body) from a raw socket."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return code, headers, body


async def open_raw(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


def request_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} /api/v1{path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked_producer(data: bytes, tail_from: int | None = None, chunk: int = 8192):
    """Writes ``data`` in ``chunk``-sized pieces, and everything from ``tail_from`` on
    in one last piece."""
    tail_from = len(data) if tail_from is None else tail_from

    async def produce(write):
        for start in range(0, tail_from, chunk):
            await write(data[start : min(start + chunk, tail_from)])
            await asyncio.sleep(0)
        if tail_from < len(data):
            await write(data[tail_from:])

    return produce


async def fetch_chunked(
    api, method: str, path: str, data: bytes, content_type: str, tail_from: int | None = None
):
    """A request whose body has no Content-Length: Transfer-Encoding: chunked.

    A body meant to be refused puts the byte that crosses the limit in its last
    piece (``tail_from``): a server that answers and closes mid-body would otherwise
    make the client's next write fail (connection reset) before it reads the answer.
    The cut-off of a body that goes on is checked over a raw socket instead.
    """
    return await api.http.fetch(
        api.base + path,
        method=method,
        body_producer=chunked_producer(data, tail_from),
        headers={"Content-Type": content_type},
        raise_error=False,
        request_timeout=60,
    )


# --- the happy path ----------------------------------------------------------------


@pytest.mark.gen_test
async def test_multipart_upload_list_download_delete(api, backend):
    await api.create_album("a")
    response = await api.upload("a", "x.png", A)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    await assert_left_behind(api, backend, "a", ["x.png"])
    assert blob_bytes(backend) == [A]

    response = await api.download("a", "x.png")
    assert response.code == 200 and response.body == A
    assert response.headers["Content-Type"] == "image/png"

    response = await api.request("DELETE", "/albums/a/images/x.png")
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image deleted from album a"}
    await assert_left_behind(api, backend, "a", [])
    response = await api.download("a", "x.png")
    assert response.code == 404
    assert body_json(response) == {"error": "image x.png does not exist in album a"}


@pytest.mark.gen_test
async def test_raw_put_upload_has_the_same_sentence(api, backend):
    await api.create_album("a")
    response = await api.put_image("a", "x.png", A)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    await assert_left_behind(api, backend, "a", ["x.png"])
    response = await api.download("a", "x.png")
    assert response.code == 200 and response.body == A


@pytest.mark.gen_test
async def test_an_empty_album_lists_no_image(api):
    await api.create_album("a")
    response = await api.list_images("a")
    assert response.code == 200 and body_json(response) == {"imageList": []}


@pytest.mark.gen_test
async def test_images_are_listed_sorted_by_name(api, backend):
    await api.create_album("a")
    uploads = [
        ("zebra.png", "post"),
        ("Apple.png", "put"),
        ("mango.gif", "post"),
        ("éclair.png", "put"),
        ("banana.jpg", "post"),
    ]
    for index, (name, how) in enumerate(uploads):
        response = await upload(api, how, "a", name, png(padding=index + 1))
        assert response.code == 200
        assert body_json(response) == {"message": f"{name} image added to album a"}
    await assert_left_behind(
        api, backend, "a", ["Apple.png", "banana.jpg", "mango.gif", "zebra.png", "éclair.png"]
    )


@pytest.mark.gen_test
async def test_images_of_other_albums_are_not_listed(api):
    await api.create_album("a")
    await api.create_album("b")
    assert (await api.upload("a", "x.png", A)).code == 200
    assert (await api.upload("b", "y.png", B)).code == 200
    assert body_json(await api.list_images("a")) == {"imageList": ["x.png"]}
    assert body_json(await api.list_images("b")) == {"imageList": ["y.png"]}
    # The same name in another album is no conflict.
    response = await api.put_image("b", "x.png", B)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album b"}
    assert (await api.download("a", "x.png")).body == A
    assert (await api.download("b", "x.png")).body == B


@pytest.mark.gen_test
async def test_a_non_ascii_name_round_trips(api, backend):
    await api.create_album("álbum 猫")
    response = await api.upload("álbum 猫", "café 猫.png", A)
    assert response.code == 200
    assert body_json(response) == {"message": "café 猫.png image added to album álbum 猫"}
    response = await api.put_image("álbum 猫", "thé.png", B)
    assert response.code == 200
    assert body_json(response) == {"message": "thé.png image added to album álbum 猫"}
    await assert_left_behind(api, backend, "álbum 猫", ["café 猫.png", "thé.png"])
    assert (await api.download("álbum 猫", "café 猫.png")).body == A
    assert (await api.download("álbum 猫", "thé.png")).body == B


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_names_are_nfc_normalised_on_every_operation(api, backend, how):
    nfd, nfc = "cafe\u0301.png", "caf\u00e9.png"
    await api.create_album("a")
    response = await upload(api, how, "a", nfd, A)
    assert response.code == 200
    assert body_json(response) == {"message": f"{nfc} image added to album a"}
    await assert_left_behind(api, backend, "a", [nfc])
    for name in (nfd, nfc):
        assert (await api.download("a", name)).body == A
    response = await upload(api, HOW[1 - HOW.index(how)], "a", nfc, B)
    assert response.code == 409
    assert body_json(response) == {"error": f"image {nfc} already exists in album a"}
    response = await api.request("DELETE", f"/albums/a/images/{api.path(nfd)}")
    assert response.code == 200
    assert body_json(response) == {"message": f"{nfc} image deleted from album a"}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_rename_keeps_the_bytes_and_moves_no_file(api, backend):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    files_before = blobs(backend)
    response = await api.request("PATCH", "/albums/a/images/x.png", {"imageName": "y.png"})
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image modified to y.png"}
    await assert_left_behind(api, backend, "a", ["y.png"])
    assert blobs(backend) == files_before  # a catalog update: the blob did not move
    response = await api.download("a", "y.png")
    assert response.code == 200 and response.body == A
    assert hashlib.sha256(response.body).hexdigest() == hashlib.sha256(A).hexdigest()
    response = await api.download("a", "x.png")
    assert response.code == 404
    assert body_json(response) == {"error": "image x.png does not exist in album a"}
    # The old name is free again.
    response = await api.put_image("a", "x.png", B)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    await assert_left_behind(api, backend, "a", ["x.png", "y.png"])
    assert (await api.download("a", "x.png")).body == B
    assert (await api.download("a", "y.png")).body == A


@pytest.mark.gen_test
async def test_blob_files_follow_uploads_and_deletes(api, backend):
    await api.create_album("a")
    assert blobs(backend) == []
    contents = {f"{i}.png": png(padding=100 + i) for i in range(4)}
    for count, (name, data) in enumerate(contents.items(), start=1):
        assert (await upload(api, HOW[count % 2], "a", name, data)).code == 200
        assert len(blobs(backend)) == count
    assert blob_bytes(backend) == sorted(contents.values())
    for count, name in enumerate(["2.png", "0.png"], start=1):
        response = await api.request("DELETE", f"/albums/a/images/{name}")
        assert response.code == 200
        assert body_json(response) == {"message": f"{name} image deleted from album a"}
        assert len(blobs(backend)) == 4 - count
    assert blob_bytes(backend) == sorted([contents["1.png"], contents["3.png"]])
    await assert_left_behind(api, backend, "a", ["1.png", "3.png"])


# --- what is accepted, what is not ---------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("mime", sorted(ACCEPTED))
async def test_every_accepted_format_is_served_with_its_sniffed_type(api, backend, how, mime):
    data = ACCEPTED[mime]
    # The client lies about the name and the type: only the bytes count.
    lie_name, lie_type = (
        ("photo.png", "image/png") if mime == "image/jpeg" else ("photo.jpg", "image/jpeg")
    )
    await api.create_album("a")
    response = await upload(api, how, "a", lie_name, data, content_type=lie_type)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{lie_name} image added to album a"}
    response = await api.download("a", lie_name)
    assert response.code == 200
    assert response.headers["Content-Type"] == mime
    assert response.body == data
    await assert_left_behind(api, backend, "a", [lie_name])


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_png_named_jpg_is_served_as_png(api, how):
    await api.create_album("a")
    response = await upload(api, how, "a", "photo.jpg", A, content_type="image/jpeg")
    assert response.code == 200
    response = await api.download("a", "photo.jpg")
    assert response.headers["Content-Type"] == "image/png" and response.body == A


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("kind", sorted(NOT_IMAGES))
async def test_what_is_not_an_image_is_415_and_leaves_nothing(api, backend, how, kind):
    await api.create_album("a")
    for name, content_type in [(f"evil.{kind}", "image/svg+xml"), ("looks.png", "image/png")]:
        response = await upload(api, how, "a", name, NOT_IMAGES[kind], content_type=content_type)
        assert response.code == 415
        assert body_json(response) == {"error": NOT_AN_IMAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_large_non_image_is_refused_while_streaming(api, backend, how):
    # Past the sniffing window (8 KiB), so refused during the upload, not at its end.
    await api.create_album("a")
    response = await upload(api, how, "a", "big.png", b"not an image at all. " * 2000)
    assert response.code == 415
    assert body_json(response) == {"error": NOT_AN_IMAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_an_empty_file_is_400(api, backend, how):
    await api.create_album("a")
    response = await upload(api, how, "a", "x.png", b"")
    assert response.code == 400
    assert body_json(response) == {"error": "the file is empty"}
    await assert_left_behind(api, backend, "a", [])


# --- absent albums and images ----------------------------------------------------------


@pytest.mark.gen_test
async def test_a_missing_album_is_404_everywhere(api, backend):
    missing = {"error": "album ghost does not exist"}
    for how in HOW:
        response = await upload(api, how, "ghost", "x.png", A)
        assert response.code == 404 and body_json(response) == missing, how
    response = await api.download("ghost", "x.png")
    assert response.code == 404 and body_json(response) == missing
    response = await api.download("ghost", "x.png", method="HEAD")
    assert response.code == 404 and response.body == b""
    response = await api.request("DELETE", "/albums/ghost/images/x.png")
    assert response.code == 404 and body_json(response) == missing
    response = await api.request("PATCH", "/albums/ghost/images/x.png", {"imageName": "y.png"})
    assert response.code == 404 and body_json(response) == missing
    assert temps(backend) == [] and blobs(backend) == []


@pytest.mark.gen_test
async def test_a_missing_image_is_404(api, backend):
    await api.create_album("a")
    assert (await api.upload("a", "other.png", A)).code == 200
    missing = {"error": "image nope.png does not exist in album a"}
    response = await api.download("a", "nope.png")
    assert response.code == 404 and body_json(response) == missing
    response = await api.request("DELETE", "/albums/a/images/nope.png")
    assert response.code == 404 and body_json(response) == missing
    response = await api.request("PATCH", "/albums/a/images/nope.png", {"imageName": "y.png"})
    assert response.code == 404 and body_json(response) == missing
    await assert_left_behind(api, backend, "a", ["other.png"])


@pytest.mark.gen_test
async def test_deleting_twice_is_404_the_second_time(api, backend):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    assert (await api.request("DELETE", "/albums/a/images/x.png")).code == 200
    response = await api.request("DELETE", "/albums/a/images/x.png")
    assert response.code == 404
    assert body_json(response) == {"error": "image x.png does not exist in album a"}
    await assert_left_behind(api, backend, "a", [])


# --- taken names ------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_an_upload_onto_a_taken_name_is_409_and_keeps_the_first(api, backend, how):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    response = await upload(api, how, "a", "x.png", B)
    assert response.code == 409
    assert body_json(response) == {"error": "image x.png already exists in album a"}
    await assert_left_behind(api, backend, "a", ["x.png"])
    assert blob_bytes(backend) == [A]
    assert (await api.download("a", "x.png")).body == A


@pytest.mark.gen_test
async def test_a_rename_onto_a_taken_name_is_409_and_changes_nothing(api, backend):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    assert (await api.put_image("a", "y.png", B)).code == 200
    response = await api.request("PATCH", "/albums/a/images/x.png", {"imageName": "y.png"})
    assert response.code == 409
    assert body_json(response) == {"error": "image y.png already exists in album a"}
    await assert_left_behind(api, backend, "a", ["x.png", "y.png"])
    assert (await api.download("a", "x.png")).body == A
    assert (await api.download("a", "y.png")).body == B


# --- bad names and bad JSON -------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "body, error",
    [
        ("{not json", "the request body is not valid JSON"),
        ("", "the request body is not valid JSON"),
        (b"\xff\xfe", "the request body is not valid JSON"),
        ('["y.png"]', "the request body must be a JSON object"),
        ("{}", 'the field "imageName" is missing from the request body'),
        ('{"imagename": "y.png"}', 'the field "imageName" is missing from the request body'),
        ('{"imageName": 7}', 'the field "imageName" must be a string'),
        ('{"imageName": null}', 'the field "imageName" must be a string'),
        ('{"imageName": ""}', "image name must not be empty"),
        ('{"imageName": "a/b.png"}', 'image name must not contain "/"'),
        ('{"imageName": ".."}', 'image name must not be "." or ".."'),
        (
            '{"imageName": "a\\u0007.png"}',
            "image name must not contain U+0007 (a control character) at position 2",
        ),
    ],
)
async def test_a_bad_rename_body_is_400_and_changes_nothing(api, backend, body, error):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    response = await api.request("PATCH", "/albums/a/images/x.png", body)
    assert response.code == 400
    assert body_json(response) == {"error": error}
    await assert_left_behind(api, backend, "a", ["x.png"])
    assert (await api.download("a", "x.png")).body == A


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "how, name, error",
    [
        *[(how, "..", 'image name must not be "." or ".."') for how in HOW],
        *[
            (
                how,
                "x" * 252 + ".png",
                "image name is 256 bytes long; the limit is 255 bytes of UTF-8",
            )
            for how in HOW
        ],
        # In a URL a backslash is part of the name; in a multipart filename it separates
        # a path, whose base name is kept (test_a_multipart_filename_with_a_path...).
        ("put", "a\\b.png", 'image name must not contain "\\"'),
    ],
)
async def test_a_bad_image_name_on_upload_is_400(api, backend, how, name, error):
    await api.create_album("a")
    response = await upload(api, how, "a", name, A)
    assert response.code == 400
    assert body_json(response) == {"error": error}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "filename, stored",
    [
        ("sub/dir/deep.png", "deep.png"),
        ("../../etc/x.png", "x.png"),
        ("C:\\fakepath\\win.png", "win.png"),
        ("mixed\\and/both.png", "both.png"),
        ("/abs.png", "abs.png"),
    ],
)
async def test_a_multipart_filename_with_a_path_stores_its_base_name(
    api, backend, filename, stored
):
    # As the Go service did: only the last component of / and \\ paths names the image.
    await api.create_album("a")
    response = await api.upload("a", filename, A)
    assert response.code == 200
    assert body_json(response) == {"message": f"{stored} image added to album a"}
    assert (await api.download("a", stored)).body == A
    await assert_left_behind(api, backend, "a", [stored])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "filename, error",
    [
        ("sub/", "image name must not be empty"),
        ("sub\\", "image name must not be empty"),
        ("sub/..", 'image name must not be "." or ".."'),
        ("sub/.", 'image name must not be "." or ".."'),
    ],
)
async def test_a_multipart_filename_whose_base_name_breaks_the_rules_is_400(
    api, backend, filename, error
):
    await api.create_album("a")
    response = await api.upload("a", filename, A)
    assert response.code == 400
    assert body_json(response) == {"error": error}
    await assert_left_behind(api, backend, "a", [])


# --- size limits ------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_an_image_of_exactly_the_limit_is_accepted(api, backend, how):
    data = png_of_size(LIMIT)
    await api.create_album("a")
    response = await upload(api, how, "a", "x.png", data)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    assert (await api.download("a", "x.png")).body == data
    await assert_left_behind(api, backend, "a", ["x.png"])


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_an_image_one_byte_over_the_limit_is_413(api, backend, how):
    # For a multipart body this is caught while streaming (the body itself is
    # within the multipart allowance); for PUT by the declared Content-Length.
    await api.create_album("a")
    response = await upload(api, how, "a", "x.png", png_of_size(LIMIT + 1))
    assert response.code == 413
    assert body_json(response) == {"error": LIMIT_MESSAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_declared_content_length_over_the_limit_is_413(api, backend, how):
    await api.create_album("a")
    response = await upload(api, how, "a", "x.png", png_of_size(3 * LIMIT))
    assert response.code == 413
    assert body_json(response) == {"error": LIMIT_MESSAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_a_chunked_put_within_the_limit_is_stored(api, backend):
    data = png_of_size(LIMIT - 100)
    await api.create_album("a")
    response = await fetch_chunked(api, "PUT", "/albums/a/images/x.png", data, "image/png")
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    assert (await api.download("a", "x.png")).body == data
    await assert_left_behind(api, backend, "a", ["x.png"])


@pytest.mark.gen_test
async def test_a_chunked_multipart_post_within_the_limit_is_stored(api, backend):
    data = png_of_size(LIMIT - 100)
    await api.create_album("a")
    ctype, body = form(file_part("x.png", data))
    response = await fetch_chunked(api, "POST", "/albums/a/images", body, ctype)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    assert (await api.download("a", "x.png")).body == data
    await assert_left_behind(api, backend, "a", ["x.png"])


@pytest.mark.gen_test
async def test_a_chunked_put_over_the_limit_is_413_and_leaves_nothing(api, backend):
    await api.create_album("a")
    data = png_of_size(LIMIT + 1)
    response = await fetch_chunked(
        api, "PUT", "/albums/a/images/x.png", data, "image/png", tail_from=LIMIT - 4096
    )
    assert response.code == 413
    assert body_json(response) == {"error": LIMIT_MESSAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_a_chunked_multipart_post_over_the_limit_is_413_and_leaves_nothing(api, backend):
    await api.create_album("a")
    ctype, body = form(file_part("x.png", png_of_size(LIMIT + 1)))
    response = await fetch_chunked(
        api, "POST", "/albums/a/images", body, ctype, tail_from=LIMIT - 4096
    )
    assert response.code == 413
    assert body_json(response) == {"error": LIMIT_MESSAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_oversized_other_form_fields_are_413(api, backend):
    await api.create_album("a")
    ctype, body = form(
        part('form-data; name="comment"', b"c" * (64 * 1024 + 1), None),
        file_part("x.png", A),
    )
    response = await post_form(api, "a", ctype, body)
    assert response.code == 413
    assert body_json(response) == {"error": 'form fields other than "file" exceed 65536 bytes'}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_small_other_form_fields_are_ignored(api, backend):
    await api.create_album("a")
    ctype, body = form(
        part('form-data; name="comment"', b"a cat", None),
        file_part("x.png", A),
        part('form-data; name="after"', b"ignored too", "text/plain"),
    )
    response = await post_form(api, "a", ctype, body)
    assert response.code == 200
    assert body_json(response) == {"message": "x.png image added to album a"}
    assert (await api.download("a", "x.png")).body == A
    await assert_left_behind(api, backend, "a", ["x.png"])


# --- malformed multipart bodies ---------------------------------------------------------


def _no_file_field():
    return form(part('form-data; name="image"; filename="x.png"', A))


def _file_without_filename():
    return form(part('form-data; name="file"', A))


def _two_file_fields():
    return form(file_part("x.png", A), file_part("y.png", B))


def _truncated():
    ctype, body = form(file_part("x.png", A))
    return ctype, body[:-30]


def _no_closing_boundary():
    ctype, body = form(file_part("x.png", A))
    return ctype, body[: -len(b"--7MA4YWxkTrZu0gW--\r\n")]


def _garbage():
    return "multipart/form-data; boundary=7MA4YWxkTrZu0gW", b"this is no multipart body at all"


def _bad_part_header():
    ctype, body = form(b"this line is no header\r\n\r\n" + A)
    return ctype, body


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "make, error",
    [
        (_no_file_field, 'the multipart body has no field "file" with the image'),
        (_file_without_filename, 'the field "file" has no filename: it names the image'),
        (_two_file_fields, 'send one image per request: the field "file" appears twice'),
        (_truncated, TRUNCATED),
        (_no_closing_boundary, TRUNCATED),
        (_garbage, TRUNCATED),
        (_bad_part_header, "malformed multipart body: Malformed segment header"),
    ],
    ids=[
        "no-file-field",
        "no-filename",
        "two-files",
        "truncated",
        "no-closing-boundary",
        "garbage",
        "bad-part-header",
    ],
)
async def test_a_malformed_multipart_body_is_400_and_leaves_nothing(api, backend, make, error):
    await api.create_album("a")
    ctype, body = make()
    response = await post_form(api, "a", ctype, body)
    assert response.code == 400
    assert body_json(response) == {"error": error}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "image/png",
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "text/plain; boundary=7MA4YWxkTrZu0gW",
        "multipart/mixed; boundary=7MA4YWxkTrZu0gW",
    ],
)
async def test_a_post_that_is_not_multipart_form_data_is_400(api, backend, content_type):
    await api.create_album("a")
    _ctype, body = form(file_part("x.png", A))
    response = await post_form(api, "a", content_type, body if content_type else A)
    assert response.code == 400
    assert body_json(response) == {"error": EXPECTED_MULTIPART}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_a_chunked_rename_body_over_the_json_limit_is_413(api, backend):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    body = json.dumps({"imageName": "y" * (70 * 1024)}).encode()
    response = await fetch_chunked(
        api, "PATCH", "/albums/a/images/x.png", body, "application/json", tail_from=60 * 1024
    )
    assert response.code == 413
    assert body_json(response) == {"error": "the request body is larger than 65536 bytes"}
    await assert_left_behind(api, backend, "a", ["x.png"])


# --- concurrency ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_concurrent_uploads_of_one_name_store_exactly_one(api, backend):
    await api.create_album("a")
    contents = [png(padding=200 + i) for i in range(6)]
    responses = await asyncio.gather(
        *(upload(api, HOW[i % 2], "a", "x.png", data) for i, data in enumerate(contents))
    )
    codes = sorted(r.code for r in responses)
    assert codes == [200] + [409] * 5
    winner = next(data for data, r in zip(contents, responses, strict=True) if r.code == 200)
    for response in responses:
        if response.code == 409:
            assert body_json(response) == {"error": "image x.png already exists in album a"}
    await assert_left_behind(api, backend, "a", ["x.png"])
    assert blob_bytes(backend) == [winner]
    assert (await api.download("a", "x.png")).body == winner


@pytest.mark.gen_test
async def test_an_album_deleted_during_an_upload_makes_it_404(api, http_port, backend, store):
    await api.create_album("a")
    data = png_of_size(LIMIT // 2)
    reader, writer = await open_raw(http_port)
    try:
        writer.write(
            request_head(
                "PUT",
                "/albums/a/images/x.png",
                http_port,
                {
                    "Content-Length": str(len(data)),
                },
            )
            + data[:1000]
        )
        await writer.drain()
        await until_uploads_running(store, 1)
        response = await api.request("DELETE", "/albums/a")
        assert response.code == 200
        writer.write(data[1000:])
        await writer.drain()
        code, _headers, body = await read_response(reader)
    finally:
        writer.close()
    assert code == 404
    assert json.loads(body) == {"error": "album a does not exist"}
    assert temps(backend) == [] and blobs(backend) == []
    assert body_json(await api.request("GET", "/albums")) == {"albumList": []}


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_chunked_stream_that_goes_on_is_cut_off_at_the_limit(api, http_port, backend, how):
    """The server answers 413 as soon as the limit is crossed, without waiting for
    the end of the body (here four times the limit, never finished)."""
    await api.create_album("a")
    image = png_of_size(4 * LIMIT)
    if how == "post":
        boundary = "7MA4YWxkTrZu0gW"
        ctype = f"multipart/form-data; boundary={boundary}"
        body = f"--{boundary}\r\n".encode() + file_part("x.png", image)  # no closing boundary
        method, path = "POST", "/albums/a/images"
    else:
        ctype, body = "image/png", image
        method, path = "PUT", "/albums/a/images/x.png"
    reader, writer = await open_raw(http_port)
    answer = asyncio.ensure_future(read_response(reader, timeout=30))
    sent = 0
    try:
        writer.write(
            request_head(
                method, path, http_port, {"Content-Type": ctype, "Transfer-Encoding": "chunked"}
            )
        )
        for start in range(0, len(body), 4096):
            if answer.done():
                break
            piece = body[start : start + 4096]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0.005)  # the server answers meanwhile; the reader reads it
        code, _headers, response_body = await answer
    finally:
        writer.close()
    assert code == 413
    assert json.loads(response_body) == {"error": LIMIT_MESSAGE}
    assert LIMIT < sent < 2 * LIMIT  # refused soon after the limit, long before the end
    await assert_left_behind(api, backend, "a", [])


# --- refusals before the body is sent ---------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_missing_album_is_404_before_a_large_body_is_sent(api, http_port, backend, how):
    path = "/albums/ghost/images" if how == "post" else "/albums/ghost/images/x.png"
    method = "POST" if how == "post" else "PUT"
    reader, writer = await open_raw(http_port)
    try:
        writer.write(
            request_head(
                method,
                path,
                http_port,
                {
                    "Content-Type": "multipart/form-data; boundary=7MA4YWxkTrZu0gW",
                    # the largest body that could be accepted: the limit itself
                    "Content-Length": str(LIMIT),
                    "Expect": "100-continue",
                },
            )
        )
        await writer.drain()
        code, headers, body = await read_response(reader)  # not one body byte sent
    finally:
        writer.close()
    assert code == 404  # straight away, and no "100 Continue" before it
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "album ghost does not exist"}
    assert temps(backend) == [] and blobs(backend) == []


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_a_declared_oversize_is_413_before_the_body_is_sent(api, http_port, backend, how):
    await api.create_album("a")
    path = "/albums/a/images" if how == "post" else "/albums/a/images/x.png"
    method = "POST" if how == "post" else "PUT"
    reader, writer = await open_raw(http_port)
    try:
        writer.write(
            request_head(
                method,
                path,
                http_port,
                {
                    "Content-Type": "multipart/form-data; boundary=7MA4YWxkTrZu0gW",
                    "Content-Length": str(10 << 30),
                    "Expect": "100-continue",
                },
            )
        )
        await writer.drain()
        code, headers, body = await read_response(reader)
    finally:
        writer.close()
    assert code == 413
    assert json.loads(body) == {"error": LIMIT_MESSAGE}
    await assert_left_behind(api, backend, "a", [])


@pytest.mark.gen_test
async def test_a_put_onto_a_taken_name_is_409_before_the_body_is_sent(api, http_port, backend):
    await api.create_album("a")
    assert (await api.upload("a", "x.png", A)).code == 200
    reader, writer = await open_raw(http_port)
    try:
        writer.write(
            request_head(
                "PUT",
                "/albums/a/images/x.png",
                http_port,
                {
                    "Content-Length": str(LIMIT),
                    "Expect": "100-continue",
                },
            )
        )
        await writer.drain()
        code, _headers, body = await read_response(reader)
    finally:
        writer.close()
    assert code == 409
    assert json.loads(body) == {"error": "image x.png already exists in album a"}
    await assert_left_behind(api, backend, "a", ["x.png"])


@pytest.mark.gen_test
async def test_expect_100_continue_is_honoured_for_an_acceptable_upload(api, http_port, backend):
    await api.create_album("a")
    reader, writer = await open_raw(http_port)
    try:
        writer.write(
            request_head(
                "PUT",
                "/albums/a/images/x.png",
                http_port,
                {
                    "Content-Length": str(len(A)),
                    "Expect": "100-continue",
                },
            )
        )
        await writer.drain()
        code, _headers, _body = await read_response(reader)
        assert code == 100
        writer.write(A)
        await writer.drain()
        code, _headers, body = await read_response(reader)
    finally:
        writer.close()
    assert code == 200
    assert json.loads(body) == {"message": "x.png image added to album a"}
    assert (await api.download("a", "x.png")).body == A
    await assert_left_behind(api, backend, "a", ["x.png"])


# --- a client that goes away -----------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("how", HOW)
async def test_an_upload_cut_off_by_the_client_leaves_nothing(api, http_port, backend, store, how):
    await api.create_album("a")
    data = png_of_size(LIMIT // 2)
    if how == "post":
        ctype, body = form(file_part("x.png", data))
        method, path = "POST", "/albums/a/images"
    else:
        ctype, body = "image/png", data
        method, path = "PUT", "/albums/a/images/x.png"
    reader, writer = await open_raw(http_port)
    writer.write(
        request_head(
            method,
            path,
            http_port,
            {
                "Content-Type": ctype,
                "Content-Length": str(len(body)),
            },
        )
        + body[: len(body) // 2]
    )
    await writer.drain()
    await until_uploads_running(store, 1)  # the server has begun the upload
    writer.close()
    await until_uploads_running(store, 0)
    await assert_left_behind(api, backend, "a", [])
