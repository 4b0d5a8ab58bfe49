"""Album and image names: what is accepted end to end, what is refused with which
sentence, NFC equivalence, and path traversal attempts that must never escape the
data folder."""

import json
import os
import unicodedata
from urllib.parse import quote

import pytest
from conftest import blob_files, body_json, multipart_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import JPEG, png

from store.errors import InvalidInput
from store.names import MAX_NAME_BYTES, validate_name

# --- helpers --------------------------------------------------------------------------

CATALOG_FILES = {"catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"}
DATA_DIR_ENTRIES = CATALOG_FILES | {"blobs", "catalog.sqlite3.lock", "catalog.sqlite3.writer"}


def q(name: str) -> str:
    """One URL path segment for ``name``."""
    return quote(name, safe="")


def assert_data_dir_clean(backend, blob_count: int | None = None) -> None:
    """The data folder holds only the catalog and blobs/ (when they are local); blobs
    are store-named (with files, two shard levels down); no upload is left unfinished."""
    data_dir = backend.data_dir
    entries = set(os.listdir(data_dir)) if os.path.isdir(data_dir) else set()
    assert entries <= DATA_DIR_ENTRIES, entries - DATA_DIR_ENTRIES
    if backend.name.endswith("+file"):
        assert "blobs" in entries  # and the catalog, when it is SQLite
        assert set(os.listdir(data_dir / "blobs")) - {"tmp", "lock"} <= {
            f"{a}{b}" for a in "0123456789abcdef" for b in "0123456789abcdef"
        }
        for blob in blob_files(data_dir):
            parts = blob.split(os.sep)
            assert len(parts) == 3, blob
            shard1, shard2, key = parts
            assert (shard1, shard2) == (key[0:2], key[2:4]), blob
    assert backend.unfinished() == []
    blobs = backend.published()
    for key in blobs:
        assert len(key) == 32 and all(c in "0123456789abcdef" for c in key), key
    if blob_count is not None:
        assert len(blobs) == blob_count, blobs


def tree_snapshot(root, exclude) -> dict[str, tuple]:
    """Every path under ``root`` (but not under ``exclude``) with its kind, size and mtime."""
    root, exclude = str(root), str(exclude)
    snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != exclude]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            snapshot[os.path.relpath(path, root)] = (
                st_.st_mode,
                st_.st_size if not os.path.isdir(path) else 0,
                st_.st_mtime_ns,
            )
    return snapshot


# What a successful traversal would have created next to (or above) the data folder.
TRAVERSAL_TARGETS = {"evil.png", "moved", "moved.png", "x.png", "b.png", "etc", "passwd", "b", "x"}


def suspects_near(data_dir) -> dict[str, set[str]]:
    """Traversal targets present in the folders a "../" could reach from the data
    folder (or that a relative path could hit from the working directory). Only
    these names are compared: other sessions may be creating files in these folders."""
    folders = {os.getcwd(), os.path.join(os.getcwd(), "tests"), "/", "/tmp", "/etc"}
    folder = str(data_dir)
    for _ in range(5):
        folder = os.path.dirname(folder)
        folders.add(folder)
    return {
        folder: set(os.listdir(folder)) & TRAVERSAL_TARGETS
        for folder in folders
        if os.path.isdir(folder)
    }


async def images_of(api, album: str) -> list[str]:
    response = await api.list_images(album)
    assert response.code == 200, response.body
    return body_json(response)["imageList"]


async def albums(api) -> list[str]:
    response = await api.request("GET", "/albums")
    assert response.code == 200
    return body_json(response)["albumList"]


def error_of(response) -> str:
    payload = body_json(response)
    assert set(payload) == {"error"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    return payload["error"]


# --- accepted names ------------------------------------------------------------------

ACCEPTED_NAMES = [
    "with space",
    " leading and trailing spaces ",
    "café",
    "猫",
    "😺 cat 🐈‍⬛",  # a zero-width joiner inside an emoji sequence is part of it
    "family 👩‍👩‍👧 and 👋🏽‍➡️",
    "a+b",
    "+",
    "100%",
    "50%25",
    "%2F",
    "a#b",
    "#",
    "why?",
    "?x=1&y=2",
    'say "hi"',
    "it's",
    "`back`",
    ".hidden",
    "trailing.",
    "...",
    ". .",
    "a..b",
    "..a",
    "semi;colon,comma=eq",
    "<tag>&amp;",
    "Ω≈ç√∫",
    "ﾊﾝｶｸ",
    "a\u2215b",  # DIVISION SLASH: looks like "/", is just a character
    "a\uff0fb",  # FULLWIDTH SOLIDUS (NFKC would make it "/", NFC does not)
    "Cat",
    "cat",  # names are case-sensitive: "Cat" and "cat" are two names
    "a" * 255,
    "é" * 127 + "a",  # 255 bytes of 2-byte characters
    "猫" * 85,  # 255 bytes of 3-byte characters
    "😺" * 63 + "abc",  # 252 bytes of 4-byte characters + 3
]


def test_accepted_names_are_what_the_brief_says():
    for name in ACCEPTED_NAMES:
        assert unicodedata.is_normalized("NFC", name)
        assert 1 <= len(name.encode()) <= MAX_NAME_BYTES
        assert validate_name(name, "album") == name
    assert len(("é" * 127 + "a").encode()) == 255
    assert len(("猫" * 85).encode()) == 255
    assert len(("😺" * 63 + "abc").encode()) == 255


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("name", ACCEPTED_NAMES, ids=lambda n: repr(n)[:40])
async def test_album_name_round_trip(api, data_dir, name, backend):
    response = await api.create_album(name)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} album added"}
    assert await albums(api) == [name]
    assert await images_of(api, name) == []

    image = png(padding=10)
    response = await api.upload(name, "pic.png", image)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"pic.png image added to album {name}"}
    response = await api.put_image(name, "raw.jpg", JPEG)
    assert response.code == 200, response.body
    assert await images_of(api, name) == ["pic.png", "raw.jpg"]
    response = await api.download(name, "pic.png")
    assert response.code == 200 and response.body == image

    response = await api.request("PATCH", f"/albums/{q(name)}", {"albumName": "elsewhere"})
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"album {name} modified to elsewhere"}
    assert await albums(api) == ["elsewhere"]
    assert (await api.list_images(name)).code == 404
    response = await api.request("PATCH", "/albums/elsewhere", {"albumName": name})
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"album elsewhere modified to {name}"}
    assert await albums(api) == [name]
    assert (await api.download(name, "raw.jpg")).body == JPEG

    response = await api.request("DELETE", f"/albums/{q(name)}")
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} album deleted"}
    assert await albums(api) == []
    assert_data_dir_clean(backend, blob_count=0)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("name", ACCEPTED_NAMES, ids=lambda n: repr(n)[:40])
async def test_image_name_round_trip(api, data_dir, name, backend):
    assert (await api.create_album("pets")).code == 200
    image = png(padding=7)

    # multipart upload: the name travels in the Content-Disposition filename
    response = await api.upload("pets", name, image)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} image added to album pets"}
    assert await images_of(api, "pets") == [name]
    response = await api.download("pets", name)
    assert response.code == 200 and response.body == image
    assert response.headers["Content-Type"] == "image/png"
    assert f"filename*=UTF-8''{q(name)}" in response.headers["Content-Disposition"]

    # the same name again is taken
    response = await api.put_image("pets", name, JPEG)
    assert response.code == 409
    assert body_json(response) == {"error": f"image {name} already exists in album pets"}

    # rename away and back
    response = await api.request("PATCH", f"/albums/pets/images/{q(name)}", {"imageName": "other"})
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} image modified to other"}
    assert await images_of(api, "pets") == ["other"]
    assert (await api.download("pets", name)).code == 404
    response = await api.request("PATCH", "/albums/pets/images/other", {"imageName": name})
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"other image modified to {name}"}
    assert (await api.download("pets", name)).body == image

    # delete, then upload again with a raw PUT: the name travels in the URL
    response = await api.request("DELETE", f"/albums/pets/images/{q(name)}")
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} image deleted from album pets"}
    assert await images_of(api, "pets") == []
    assert_data_dir_clean(backend, blob_count=0)

    response = await api.put_image("pets", name, JPEG)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{name} image added to album pets"}
    response = await api.download("pets", name)
    assert response.code == 200 and response.body == JPEG
    assert response.headers["Content-Type"] == "image/jpeg"
    assert await images_of(api, "pets") == [name]
    assert_data_dir_clean(backend, blob_count=1)


@pytest.mark.gen_test(timeout=30)
async def test_many_odd_names_coexist_sorted_in_one_album(api, data_dir, backend):
    assert (await api.create_album("mix")).code == 200
    for index, name in enumerate(ACCEPTED_NAMES):
        upload = api.upload if index % 2 else api.put_image
        response = await upload("mix", name, png(padding=index))
        assert response.code == 200, (name, response.body)
    assert await images_of(api, "mix") == sorted(ACCEPTED_NAMES)
    for index, name in enumerate(ACCEPTED_NAMES):
        assert (await api.download("mix", name)).body == png(padding=index), name
    assert_data_dir_clean(backend, blob_count=len(ACCEPTED_NAMES))


# --- NFC ------------------------------------------------------------------------------

DECOMPOSED = "cafe\u0301"  # "café" as e + combining acute accent
COMPOSED = "caf\u00e9"


@pytest.mark.gen_test
async def test_album_names_are_nfc_normalised(api):
    assert DECOMPOSED != COMPOSED and unicodedata.normalize("NFC", DECOMPOSED) == COMPOSED
    response = await api.create_album(DECOMPOSED)
    assert response.code == 200
    assert body_json(response) == {"message": f"{COMPOSED} album added"}
    assert await albums(api) == [COMPOSED]

    response = await api.create_album(COMPOSED)
    assert response.code == 409
    assert body_json(response) == {"error": f"album {COMPOSED} already exists"}
    response = await api.create_album("e\u0301")
    assert response.code == 200
    response = await api.create_album("\u00e9")
    assert response.code == 409
    assert body_json(response) == {"error": "album \u00e9 already exists"}

    # lookups through either form find the same album
    assert (await api.upload(DECOMPOSED, "a.png", png())).code == 200
    assert await images_of(api, COMPOSED) == ["a.png"]
    assert await images_of(api, DECOMPOSED) == ["a.png"]
    assert (await api.download(COMPOSED, "a.png")).body == png()
    assert (await api.download(DECOMPOSED, "a.png")).body == png()

    # renaming onto the other form of a taken name is a conflict too
    response = await api.request("PATCH", "/albums/" + q("\u00e9"), {"albumName": DECOMPOSED})
    assert response.code == 409
    assert body_json(response) == {"error": f"album {COMPOSED} already exists"}

    response = await api.request("PATCH", "/albums/" + q(DECOMPOSED), {"albumName": "x"})
    assert response.code == 200
    assert body_json(response) == {"message": f"album {COMPOSED} modified to x"}
    response = await api.request("DELETE", "/albums/" + q("e\u0301"))
    assert response.code == 200
    assert body_json(response) == {"message": "\u00e9 album deleted"}
    assert await albums(api) == ["x"]


@pytest.mark.gen_test
async def test_image_names_are_nfc_normalised(api, data_dir, backend):
    await api.create_album("pets")
    response = await api.upload("pets", DECOMPOSED + ".png", png())
    assert response.code == 200
    assert body_json(response) == {"message": f"{COMPOSED}.png image added to album pets"}
    assert await images_of(api, "pets") == [COMPOSED + ".png"]

    for taken in (COMPOSED + ".png", DECOMPOSED + ".png"):
        response = await api.put_image("pets", taken, JPEG)
        assert response.code == 409
        assert body_json(response) == {
            "error": f"image {COMPOSED}.png already exists in album pets"
        }
        response = await api.upload("pets", taken, JPEG)
        assert response.code == 409
    assert_data_dir_clean(backend, blob_count=1)

    for form in (COMPOSED + ".png", DECOMPOSED + ".png"):
        response = await api.download("pets", form)
        assert response.code == 200 and response.body == png()
        assert (await api.download("pets", form, method="HEAD")).code == 200

    await api.put_image("pets", "other.png", png(padding=1))
    response = await api.request(
        "PATCH", "/albums/pets/images/other.png", {"imageName": DECOMPOSED + ".png"}
    )
    assert response.code == 409
    response = await api.request(
        "PATCH", "/albums/pets/images/" + q(DECOMPOSED + ".png"), {"imageName": "n\u0303.png"}
    )
    assert response.code == 200
    assert body_json(response) == {"message": f"{COMPOSED}.png image modified to \u00f1.png"}
    assert await images_of(api, "pets") == ["other.png", "\u00f1.png"]
    response = await api.request("DELETE", "/albums/pets/images/" + q("n\u0303.png"))
    assert response.code == 200
    assert body_json(response) == {"message": "\u00f1.png image deleted from album pets"}
    assert await images_of(api, "pets") == ["other.png"]


@pytest.mark.gen_test
async def test_the_byte_limit_is_measured_after_nfc(api):
    decomposed = "e\u0301" * 127 + "a"  # 382 bytes as sent, 255 bytes once composed
    assert len(decomposed.encode()) == 382
    composed = unicodedata.normalize("NFC", decomposed)
    assert len(composed.encode()) == 255
    response = await api.create_album(decomposed)
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{composed} album added"}
    response = await api.upload(decomposed, decomposed, png())
    assert response.code == 200, response.body
    assert await images_of(api, decomposed) == [composed]
    assert (await api.download(composed, decomposed)).body == png()


# --- refused names --------------------------------------------------------------------

# (name, sentence with {kind} for "album"/"image")
REFUSED = [
    ("", "{kind} name must not be empty"),
    ("a" * 256, "{kind} name is 256 bytes long; the limit is 255 bytes of UTF-8"),
    ("é" * 128, "{kind} name is 256 bytes long; the limit is 255 bytes of UTF-8"),
    ("😺" * 64 + "a", "{kind} name is 257 bytes long; the limit is 255 bytes of UTF-8"),
    ("e\u0301" * 128, "{kind} name is 256 bytes long; the limit is 255 bytes of UTF-8"),
    (".", '{kind} name must not be "." or ".."'),
    ("..", '{kind} name must not be "." or ".."'),
    ("/", '{kind} name must not contain "/"'),
    ("a/b", '{kind} name must not contain "/"'),
    ("../../etc", '{kind} name must not contain "/"'),
    ("\\", '{kind} name must not contain "\\"'),
    ("..\\..\\x", '{kind} name must not contain "\\"'),
    ("\x00", "{kind} name must not contain NUL"),
    ("a\x00b", "{kind} name must not contain NUL"),
    ("\x7f", "{kind} name must not contain U+007F (a control character) at position 1"),
    ("a\x85b", "{kind} name must not contain U+0085 (a control character) at position 2"),
    ("\x9f", "{kind} name must not contain U+009F (a control character) at position 1"),
    ("a\nb", "{kind} name must not contain U+000A (a control character) at position 2"),
    ("\r", "{kind} name must not contain U+000D (a control character) at position 1"),
    ("tab\there", "{kind} name must not contain U+0009 (a control character) at position 4"),
    ("\x1b[31m", "{kind} name must not contain U+001B (a control character) at position 1"),
    # Names that lie about what they say: bidi overrides, zero-width characters,
    # separators other than the plain space, blank names.
    (
        "cat\u202egpj.exe",
        "{kind} name must not contain U+202E RIGHT-TO-LEFT OVERRIDE"
        " (an invisible format character) at position 4",
    ),
    (
        "a\u2066b",
        "{kind} name must not contain U+2066 LEFT-TO-RIGHT ISOLATE"
        " (an invisible format character) at position 2",
    ),
    (
        "a\u200bb.png",
        "{kind} name must not contain U+200B ZERO WIDTH SPACE"
        " (an invisible format character) at position 2",
    ),
    (
        "\ufeffx",
        "{kind} name must not contain U+FEFF ZERO WIDTH NO-BREAK SPACE"
        " (an invisible format character) at position 1",
    ),
    (
        "soft\u00adhyphen",
        "{kind} name must not contain U+00AD SOFT HYPHEN"
        " (an invisible format character) at position 5",
    ),
    (
        "line\u2028break",
        "{kind} name must not contain U+2028 LINE SEPARATOR (a line separator) at position 5",
    ),
    (
        "para\u2029x",
        "{kind} name must not contain U+2029 PARAGRAPH SEPARATOR"
        " (a paragraph separator) at position 5",
    ),
    (
        "no\u00a0break",
        "{kind} name must not contain U+00A0 NO-BREAK SPACE"
        " (a space other than the plain space) at position 3",
    ),
    (
        "wide\u3000space",
        "{kind} name must not contain U+3000 IDEOGRAPHIC SPACE"
        " (a space other than the plain space) at position 5",
    ),
    (" ", "{kind} name must not be blank"),
    ("   ", "{kind} name must not be blank"),
    (
        "\u00a0\u2003",
        "{kind} name must not contain U+00A0 NO-BREAK SPACE"
        " (a space other than the plain space) at position 1",
    ),
    ("\ud800", "{kind} name is not valid UTF-8"),
    ("a\udfffb", "{kind} name is not valid UTF-8"),
]
REFUSED_IDS = [repr(name)[:30] for name, _ in REFUSED]
# A URL path segment can be neither empty nor hold a lone surrogate (it would be
# invalid UTF-8, tested apart).
REFUSED_IN_URLS = [
    (name, sentence)
    for name, sentence in REFUSED
    if name and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name)
]
REFUSED_IN_URLS_IDS = [repr(name)[:30] for name, _ in REFUSED_IN_URLS]


def json_dumps_surrogates(payload: dict) -> bytes:
    """JSON with lone surrogates written as \\uXXXX escapes (json.dumps does that)."""
    return json.dumps(payload).encode("ascii")


@pytest.mark.parametrize("name, sentence", REFUSED, ids=REFUSED_IDS)
def test_validate_name_refuses_with_the_sentence(name, sentence):
    for kind in ("album", "image"):
        with pytest.raises(InvalidInput) as caught:
            validate_name(name, kind)
        assert str(caught.value) == sentence.format(kind=kind)


@pytest.mark.gen_test
@pytest.mark.parametrize("name, sentence", REFUSED, ids=REFUSED_IDS)
async def test_refused_album_names_are_400_in_json_bodies(api, data_dir, name, sentence, backend):
    expected = {"error": sentence.format(kind="album")}
    response = await api.request("POST", "/albums", json_dumps_surrogates({"albumName": name}))
    assert response.code == 400 and body_json(response) == expected
    assert await albums(api) == []

    await api.create_album("pets")
    response = await api.request(
        "PATCH", "/albums/pets", json_dumps_surrogates({"albumName": name})
    )
    assert response.code == 400 and body_json(response) == expected
    assert await albums(api) == ["pets"]
    assert_data_dir_clean(backend, blob_count=0)


@pytest.mark.gen_test
@pytest.mark.parametrize("name, sentence", REFUSED, ids=REFUSED_IDS)
async def test_refused_image_names_are_400_in_json_multipart_and_urls(
    api, data_dir, name, sentence, backend
):
    expected = {"error": sentence.format(kind="image")}
    await api.create_album("pets")
    await api.put_image("pets", "cat.png", png())

    response = await api.request(
        "PATCH", "/albums/pets/images/cat.png", json_dumps_surrogates({"imageName": name})
    )
    assert response.code == 400 and body_json(response) == expected

    if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name) and not {"/", "\\"} & set(name):
        # a multipart filename is UTF-8 text: no lone surrogate can travel there; and
        # there a path's base name is kept (tests/test_compat.py)
        response = await api.upload("pets", name, png(padding=3))
        assert response.code == 400, response.body
        assert body_json(response) == expected

    if name and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name) and name not in (".", ".."):
        # "" cannot be a path segment; "." and ".." are checked literally below
        response = await api.put_image("pets", name, png(padding=3))
        assert response.code == 400 and body_json(response) == expected
        for method in ("GET", "HEAD", "DELETE"):
            response = await api.request(method, f"/albums/pets/images/{q(name)}")
            assert response.code == 400, (method, response.code)
            if method != "HEAD":
                assert body_json(response) == expected
        response = await api.request(
            "PATCH", f"/albums/pets/images/{q(name)}", {"imageName": "x.png"}
        )
        assert response.code == 400 and body_json(response) == expected

    assert await images_of(api, "pets") == ["cat.png"]
    assert (await api.download("pets", "cat.png")).body == png()
    assert_data_dir_clean(backend, blob_count=1)


@pytest.mark.gen_test
@pytest.mark.parametrize("name, sentence", REFUSED_IN_URLS, ids=REFUSED_IN_URLS_IDS)
async def test_refused_album_names_are_400_in_urls(api, data_dir, name, sentence, backend):
    expected = {"error": sentence.format(kind="album")}
    await api.create_album("pets")
    segment = q(name)
    for method, path, body in [
        ("GET", f"/albums/{segment}/images", None),
        ("POST", f"/albums/{segment}/images", None),
        ("DELETE", f"/albums/{segment}", None),
        ("PATCH", f"/albums/{segment}", {"albumName": "x"}),
        ("PUT", f"/albums/{segment}/images/x.png", png()),
        ("GET", f"/albums/{segment}/images/x.png", None),
        ("DELETE", f"/albums/{segment}/images/x.png", None),
        ("PATCH", f"/albums/{segment}/images/x.png", {"imageName": "y.png"}),
    ]:
        headers = None
        if method == "POST":
            content_type, body = multipart_body("x.png", png())
            headers = {"Content-Type": content_type}
        response = await api.request(method, path, body, headers=headers)
        assert response.code == 400, (method, path, response.code, response.body)
        assert body_json(response) == expected, (method, path)
    assert await albums(api) == ["pets"]
    assert_data_dir_clean(backend, blob_count=0)


@pytest.mark.gen_test
async def test_dot_segments_sent_literally_are_refused(api, data_dir, backend):
    await api.create_album("pets")
    await api.put_image("pets", "cat.png", png())
    for path, sentence in [
        ("/albums/./images", 'album name must not be "." or ".."'),
        ("/albums/../images", 'album name must not be "." or ".."'),
        ("/albums/pets/images/.", 'image name must not be "." or ".."'),
        ("/albums/pets/images/..", 'image name must not be "." or ".."'),
        ("/albums/%2e%2e/images", 'album name must not be "." or ".."'),
        ("/albums/pets/images/%2E", 'image name must not be "." or ".."'),
    ]:
        for method in ("GET", "DELETE", "PUT", "PATCH"):
            if path.endswith("/images") and method in ("DELETE", "PUT", "PATCH"):
                continue  # not methods of the image list
            body = (
                png() if method == "PUT" else {"imageName": "n.png"} if method == "PATCH" else None
            )
            response = await api.request(method, path, body)
            assert response.code == 400, (method, path, response.code)
            assert body_json(response) == {"error": sentence}, (method, path)
    assert await images_of(api, "pets") == ["cat.png"]
    assert_data_dir_clean(backend, blob_count=1)


def test_non_strings_are_refused():
    for value in (None, 7, b"bytes", ["a"]):
        with pytest.raises(InvalidInput) as caught:
            validate_name(value, "image")
        assert str(caught.value) == "image name must be a string"


# --- traversal ------------------------------------------------------------------------

TRAVERSAL_URLS = [
    "/albums/..%2F..%2Fetc/images",
    "/albums/..%2F..%2Fetc",
    "/albums/..%2F..%2Fetc/images/passwd",
    "/albums/a%2F..%2F..%2Fb/images/x",
    "/albums/a%2F..%2F..%2Fb/images",
    "/albums/%2Fetc%2Fpasswd/images",
    "/albums/..%5C..%5Cetc/images",
    "/albums/pets/images/..%2F..%2F..%2Fevil.png",
    "/albums/pets/images/..%2F..%2Ftmp%2Fevil.png",
    "/albums/pets/images/%2Fetc%2Fpasswd",
    "/albums/pets/images/..%5C..%5Cevil.png",
    "/albums/pets/images/%2e%2e%2f%2e%2e%2fevil.png",
    "/albums/pets/images/%C0%AF..%C0%AFevil.png",  # overlong "/" (invalid UTF-8)
    "/albums/%2e%2e/images/evil.png",
    "/albums/../../etc/images",
    "/albums/pets/images/../../../evil.png",
    "/albums/pets/../../../evil.png",
    "/albums/pets/images/x/../../../evil.png",
]


@pytest.mark.gen_test(timeout=60)
async def test_traversal_urls_are_refused_and_touch_nothing(api, data_dir, tmp_path, backend):
    await api.create_album("pets")
    await api.put_image("pets", "cat.png", png())
    outside_before = tree_snapshot(tmp_path.parent, data_dir)
    suspects_before = suspects_near(data_dir)

    for path in TRAVERSAL_URLS:
        for method in ("GET", "HEAD", "DELETE", "PUT", "PATCH", "POST"):
            headers = None
            body = None
            if method == "PUT":
                body = png(padding=5)
            elif method == "PATCH":
                body = {"albumName": "../../moved", "imageName": "../../moved.png"}
            elif method == "POST":
                content_type, body = multipart_body("../../evil.png", png(padding=5))
                headers = {"Content-Type": content_type}
            response = await api.request(method, path, body, headers=headers)
            assert response.code in (400, 404, 405), (method, path, response.code, response.body)
            if "%" in path:
                # the route matched: the name itself is refused (or the method is not one
                # of that route's); 404 would mean a lookup happened with a bad name
                assert response.code in (400, 405), (method, path, response.code)
            if method != "HEAD":
                error = error_of(response)
                if response.code == 400:
                    assert (
                        " name must not " in error or error == "the URL path is not valid UTF-8"
                    ), error

    assert tree_snapshot(tmp_path.parent, data_dir) == outside_before
    assert suspects_near(data_dir) == suspects_before
    assert await albums(api) == ["pets"]
    assert await images_of(api, "pets") == ["cat.png"]
    assert (await api.download("pets", "cat.png")).body == png()
    assert_data_dir_clean(backend, blob_count=1)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "path, sentence",
    [
        ("/albums/..%2F..%2Fetc/images", 'album name must not contain "/"'),
        ("/albums/a%2F..%2F..%2Fb/images/x", 'album name must not contain "/"'),
        ("/albums/pets/images/..%2F..%2Fevil.png", 'image name must not contain "/"'),
        ("/albums/pets/images/..%5C..%5Cevil.png", 'image name must not contain "\\"'),
    ],
)
async def test_traversal_urls_get_the_name_sentence(api, path, sentence):
    await api.create_album("pets")
    response = await api.request("GET", path)
    assert response.code == 400
    assert body_json(response) == {"error": sentence}


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "filename, stored",
    [
        ("../../evil.png", "evil.png"),
        ("a/../../b.png", "b.png"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\x.png", "x.png"),
        ("a\\..\\..\\b.png", "b.png"),
    ],
)
async def test_traversal_multipart_filenames_store_only_their_base_name(
    api, data_dir, tmp_path, filename, stored, backend
):
    # As the Go service did, the path is dropped; nothing lands outside the data folder.
    await api.create_album("pets")
    outside_before = tree_snapshot(tmp_path.parent, data_dir)
    suspects_before = suspects_near(data_dir)
    response = await api.upload("pets", filename, png(padding=9))
    assert response.code == 200, response.body
    assert body_json(response) == {"message": f"{stored} image added to album pets"}
    assert tree_snapshot(tmp_path.parent, data_dir) == outside_before
    assert suspects_near(data_dir) == suspects_before
    assert await images_of(api, "pets") == [stored]
    assert_data_dir_clean(backend, blob_count=1)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "filename, sentence",
    [
        ("..", 'image name must not be "." or ".."'),
        (".", 'image name must not be "." or ".."'),
        ("../..", 'image name must not be "." or ".."'),
        ("..\\..", 'image name must not be "." or ".."'),
        ("../../tmp/", "image name must not be empty"),
        ("../../tmp/" + "x" * 300, "image name is 300 bytes long; the limit is 255 bytes of UTF-8"),
    ],
)
async def test_traversal_multipart_filenames_are_400(
    api, data_dir, tmp_path, filename, sentence, backend
):
    await api.create_album("pets")
    outside_before = tree_snapshot(tmp_path.parent, data_dir)
    suspects_before = suspects_near(data_dir)
    response = await api.upload("pets", filename, png(padding=9))
    assert response.code == 400, response.body
    assert body_json(response) == {"error": sentence}
    assert tree_snapshot(tmp_path.parent, data_dir) == outside_before
    assert suspects_near(data_dir) == suspects_before
    assert await images_of(api, "pets") == []
    assert_data_dir_clean(backend, blob_count=0)


@pytest.mark.gen_test(timeout=30)
async def test_traversal_json_names_are_400(api, data_dir, tmp_path, backend):
    await api.create_album("pets")
    await api.put_image("pets", "cat.png", png())
    outside_before = tree_snapshot(tmp_path.parent, data_dir)
    suspects_before = suspects_near(data_dir)
    for name in ("../../etc", "..", "../", "a/../../b", "..\\..\\etc", "/etc"):
        for method, path, field in [
            ("POST", "/albums", "albumName"),
            ("PATCH", "/albums/pets", "albumName"),
            ("PATCH", "/albums/pets/images/cat.png", "imageName"),
        ]:
            response = await api.request(method, path, {field: name})
            assert response.code == 400, (name, method, path, response.body)
            assert error_of(response).startswith(field[:5] + " name must not"), response.body
    assert tree_snapshot(tmp_path.parent, data_dir) == outside_before
    assert suspects_near(data_dir) == suspects_before
    assert await albums(api) == ["pets"]
    assert await images_of(api, "pets") == ["cat.png"]
    assert_data_dir_clean(backend, blob_count=1)


# --- invalid UTF-8 in a URL path ------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("segment", ["%ff", "a%ffb", "%C3%28", "%ED%A0%80", "%C0%AF", "%80"])
async def test_invalid_utf8_in_the_path_is_a_json_400(api, data_dir, segment, backend):
    await api.create_album("pets")
    await api.put_image("pets", "cat.png", png())
    content_type, multipart = multipart_body("x.png", png())
    cases = [
        ("GET", f"/albums/{segment}/images", None, None),
        ("POST", f"/albums/{segment}/images", multipart, {"Content-Type": content_type}),
        ("DELETE", f"/albums/{segment}", None, None),
        ("PATCH", f"/albums/{segment}", {"albumName": "x"}, None),
        ("GET", f"/albums/pets/images/{segment}", None, None),
        ("PUT", f"/albums/pets/images/{segment}", png(), None),
        ("DELETE", f"/albums/pets/images/{segment}", None, None),
        ("PATCH", f"/albums/pets/images/{segment}", {"imageName": "y.png"}, None),
        ("PUT", f"/albums/{segment}/images/x.png", png(), None),
    ]
    for method, path, body, headers in cases:
        response = await api.request(method, path, body, headers=headers)
        assert response.code == 400, (method, path, response.code, response.body)
        assert error_of(response) == "the URL path is not valid UTF-8"
    assert await images_of(api, "pets") == ["cat.png"]
    assert_data_dir_clean(backend, blob_count=1)


# --- property test --------------------------------------------------------------------

FORBIDDEN = {"/", "\\", "\x00"}

any_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=80),  # surrogates too
    st.text(
        st.sampled_from(
            [
                "a",
                "é",
                "e",
                "猫",
                "😺",
                ".",
                "/",
                "\\",
                "\x00",
                "\x7f",
                "\x85",
                "\n",
                " ",
                "\u2028",
                "\ud800",
                "\u0301",
            ]
        ),
        max_size=140,
    ),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "é", "猫", "😺", "e\u0301", "."]),
        st.integers(0, 260),
    ),
)


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(any_text)
def test_validate_name_property(raw):
    try:
        name = validate_name(raw, "image")
    except InvalidInput as err:
        assert str(err).startswith("image name ")
        return
    assert isinstance(name, str)
    assert unicodedata.is_normalized("NFC", name)
    assert name == unicodedata.normalize("NFC", raw)
    encoded = name.encode("utf-8")  # never raises: no lone surrogate got through
    assert 1 <= len(encoded) <= MAX_NAME_BYTES
    assert name not in (".", "..")
    assert not FORBIDDEN & set(name)
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name)
    assert all(ch == " " for ch in name if unicodedata.category(ch) == "Zs")
    assert all(ch == "\u200d" for ch in name if unicodedata.category(ch) == "Cf")
    assert name.strip()
    assert validate_name(name, "album") == name  # idempotent


safe_char = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp", "Zs"),
    exclude_characters="/\\\x00",
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.text(safe_char, min_size=1, max_size=20), min_size=1, max_size=3).map(" ".join))
def test_every_safe_name_is_accepted(raw):
    name = unicodedata.normalize("NFC", raw)
    if name in (".", "..") or len(name.encode()) > MAX_NAME_BYTES:
        with pytest.raises(InvalidInput):
            validate_name(raw, "album")
    else:
        assert validate_name(raw, "album") == name


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "raw_filename",
    [b"\xff.png", b"caf\xe9.png", b"\xed\xa0\x80.png", b"\xc0\xaf..\xc0\xafevil.png"],
)
async def test_invalid_utf8_in_a_multipart_filename_is_a_json_400(
    api, data_dir, raw_filename, backend
):
    await api.create_album("pets")
    body = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="'
        + raw_filename
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + png()
        + b"\r\n--BOUNDARY--\r\n"
    )
    response = await api.request(
        "POST",
        "/albums/pets/images",
        body,
        headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
    )
    assert response.code == 400, response.body
    assert error_of(response) == "malformed multipart body: Segment header failed to decode"
    assert await images_of(api, "pets") == []
    assert_data_dir_clean(backend, blob_count=0)


@pytest.mark.parametrize(
    "name, position",
    [("a\u200db", 2), ("\u200d😺", 1), ("😺\u200d", 2), ("😺\u200da", 2), ("x\u200d\u200d⬛", 2)],
)
def test_a_zero_width_joiner_outside_an_emoji_sequence_is_refused(name, position):
    with pytest.raises(InvalidInput) as caught:
        validate_name(name, "image")
    assert str(caught.value) == (
        "image name must not contain U+200D ZERO WIDTH JOINER"
        f" (an invisible format character) at position {position}"
    )
