"""Lists a page at a time (limit, after, next, Link), with details, by prefix: over
HTTP, on every backend. The catalog's side (keyset reads, kept counts, 10,000-image
walks) is in tests/store/test_catalog_pages.py."""

import hashlib
import re
import time
import unicodedata
from datetime import datetime
from urllib.parse import quote, urlencode

import pytest
from conftest import body_json
from images import GIF, JPEG, png


async def get(api, path: str, **query):
    url = path + ("?" + urlencode(query) if query else "")
    return await api.request("GET", url)


def next_link(response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    match = re.fullmatch(r'<(/api/v1[^>]*)>; rel="next"', link)
    assert match, link
    return match.group(1).removeprefix("/api/v1")


async def walk(api, path: str, **query) -> list:
    """Every item, following the Link headers from the first page."""
    items = []
    response = await get(api, path, **query)
    while True:
        assert response.code == 200, response.body
        body = body_json(response)
        field = "albumList" if "albumList" in body else "imageList"
        items += body[field]
        link = next_link(response)
        assert (link is None) == ("next" not in body), "a Link exactly when there is a next"
        if link is None:
            return items
        name = body[field][-1] if isinstance(body[field][-1], str) else body[field][-1]["name"]
        assert body["next"] == name, "next is the last name of the page"
        response = await api.request("GET", link)


@pytest.mark.gen_test(timeout=120)
async def test_pages_of_7_follow_the_link_headers_through_every_image(api):
    await api.create_album("big")
    names = [f"img-{index:03d}.png" for index in range(50)]
    for name in reversed(names):
        assert (await api.put_image("big", name, png(padding=len(name)))).code == 200
    assert await walk(api, "/albums/big/images", limit=7) == names
    first = await get(api, "/albums/big/images", limit=7)
    assert body_json(first) == {"imageList": names[:7], "next": names[6]}
    assert (
        first.headers["Link"] == f'</api/v1/albums/big/images?limit=7&after={names[6]}>; rel="next"'
    )
    last = await get(api, "/albums/big/images", limit=7, after=names[48])
    assert body_json(last) == {"imageList": names[49:]} and "Link" not in last.headers
    exact = await get(api, "/albums/big/images", limit=50)
    assert body_json(exact) == {"imageList": names}, "a full last page has no next"
    assert await walk(api, "/albums/big/images", after="img-020.png") == names[21:], (
        "after alone: pages of 1000"
    )


@pytest.mark.gen_test
async def test_without_limit_the_whole_list_is_the_go_services_answer(api):
    await api.create_album("pets")
    for name in ("b.png", "a.png"):
        await api.put_image("pets", name, png(padding=len(name)))
    response = await get(api, "/albums/pets/images")
    assert body_json(response) == {"imageList": ["a.png", "b.png"]}
    assert "Link" not in response.headers
    assert body_json(await get(api, "/albums")) == {"albumList": ["pets"]}


@pytest.mark.gen_test
async def test_image_details_are_the_uploads_own(api):
    await api.create_album("pets")
    uploads = {"cat.png": png(3, 2), "dog.jpg": JPEG, "fish.gif": GIF}
    before = time.time()
    for name, data in uploads.items():
        assert (await api.put_image("pets", name, data)).code == 200
    after = time.time()
    response = await get(api, "/albums/pets/images", detail="true")
    items = body_json(response)["imageList"]
    assert [item["name"] for item in items] == sorted(uploads)
    types = {"cat.png": "image/png", "dog.jpg": "image/jpeg", "fish.gif": "image/gif"}
    # From the header, as libvips reads it (tests/images.py's real JPEG is 2 x 2).
    dimensions = {"cat.png": (3, 2), "dog.jpg": (2, 2), "fish.gif": (1, 1)}
    for item in items:
        data = uploads[item["name"]]
        assert item["size"] == len(data)
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["contentType"] == types[item["name"]]
        assert (item["width"], item["height"]) == dimensions[item["name"]]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["createdAt"])
        created = datetime.fromisoformat(item["createdAt"].replace("Z", "+00:00")).timestamp()
        assert before - 0.001 <= created <= after + 0.001
        head = await api.download("pets", item["name"], method="HEAD")
        assert head.headers["ETag"] == f'"{item["sha256"]}"'


@pytest.mark.gen_test(timeout=60)
async def test_album_details_count_images_and_bytes_after_every_change(api):
    async def details() -> dict:
        response = await get(api, "/albums", detail="true")
        assert "next" not in body_json(response)
        return {album["name"]: album for album in body_json(response)["albumList"]}

    await api.create_album("a")
    await api.create_album("b")
    empty = (await details())["a"]
    assert (empty["images"], empty["bytes"]) == (0, 0)
    assert empty["createdAt"] == empty["updatedAt"]
    one, two = png(padding=100), png(padding=2000)
    await api.put_image("a", "1.png", one)
    await api.put_image("a", "2.png", two)
    await api.put_image("b", "1.png", one)  # the same bytes: counted in each album
    assert (await api.put_image("a", "1.png", two)).code == 409
    a = (await details())["a"]
    assert (a["images"], a["bytes"]) == (2, len(one) + len(two))
    assert a["createdAt"] == empty["createdAt"] and a["updatedAt"] >= empty["updatedAt"]
    assert ((await details())["b"]["images"], (await details())["b"]["bytes"]) == (1, len(one))
    await api.request("PATCH", "/albums/a/images/1.png", {"imageName": "3.png"})
    await api.request("DELETE", "/albums/a/images/2.png")
    await api.request("PATCH", "/albums/a", {"albumName": "c"})
    c = (await details())["c"]
    assert (c["images"], c["bytes"], c["createdAt"]) == (1, len(one), empty["createdAt"])
    assert "a" not in await details()
    await api.request("DELETE", "/albums/c/images/3.png")
    c = (await details())["c"]
    assert (c["images"], c["bytes"]) == (0, 0)


@pytest.mark.gen_test(timeout=60)
async def test_a_prefix_narrows_both_lists_in_every_spelling(api):
    for album in ("été", "étuve", "eta", "zoo"):
        await api.create_album(album)
    for name in ("IMG_001.png", "IMG_002.png", "DSC_001.png", "IMG.png"):
        await api.put_image("zoo", name, png(padding=len(name)))
    assert body_json(await get(api, "/albums", prefix="ét")) == {"albumList": ["étuve", "été"]}
    decomposed = unicodedata.normalize("NFD", "ét")
    assert body_json(await get(api, "/albums", prefix=decomposed))["albumList"] == ["étuve", "été"]
    assert body_json(await get(api, "/albums", prefix="x")) == {"albumList": []}
    images = await get(api, "/albums/zoo/images", prefix="IMG_", limit=1)
    assert body_json(images) == {"imageList": ["IMG_001.png"], "next": "IMG_001.png"}
    query = urlencode({"limit": 1, "after": "IMG_001.png", "prefix": "IMG_"})
    assert images.headers["Link"] == f'</api/v1/albums/zoo/images?{query}>; rel="next"'
    assert await walk(api, "/albums/zoo/images", prefix="IMG_", limit=1) == [
        "IMG_001.png",
        "IMG_002.png",
    ]
    detailed = await walk(api, "/albums/zoo/images", prefix="IMG", limit=2, detail="true")
    assert [item["name"] for item in detailed] == ["IMG.png", "IMG_001.png", "IMG_002.png"]
    assert body_json(await get(api, "/albums/zoo/images", prefix="DSC")) == {
        "imageList": ["DSC_001.png"]
    }


@pytest.mark.gen_test
async def test_each_page_has_its_own_etag(api):
    await api.create_album("pets")
    for name in ("a.png", "b.png", "c.png"):
        await api.put_image("pets", name, png(padding=len(name)))
    first = await get(api, "/albums/pets/images", limit=2)
    second = await get(api, "/albums/pets/images", limit=2, after="b.png")
    assert first.headers["ETag"] != second.headers["ETag"]
    again = await api.request(
        "GET", "/albums/pets/images?limit=2", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.code == 304 and again.headers["Link"] == first.headers["Link"]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "query, error",
    [
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=1001", "limit must be a whole number from 1 to 1000"),
        ("limit=-1", "limit must be a whole number from 1 to 1000"),
        ("limit=ten", "limit must be a whole number from 1 to 1000"),
        ("limit=" + quote("٣"), "limit must be a whole number from 1 to 1000"),
        ("limit=" + "9" * 40, "limit must be a whole number from 1 to 1000"),
        ("detail=maybe", "detail must be true or false"),
        ("after=a%00b", "after must not contain NUL"),
        ("prefix=%00", "prefix must not contain NUL"),
        ("prefix=" + "x" * 256, "prefix is 256 bytes long; names are at most 255"),
        ("after=%FF", "the URL path is not valid UTF-8"),
    ],
)
async def test_bad_list_arguments_are_refused_with_a_sentence(api, query, error):
    await api.create_album("pets")
    for path in ("/albums", "/albums/pets/images"):
        response = await api.request("GET", f"{path}?{query}")
        assert response.code == 400, (path, query, response.body)
        assert body_json(response) == {"error": error}


@pytest.mark.gen_test
async def test_a_page_of_a_missing_album_is_404(api):
    response = await get(api, "/albums/ghost/images", limit=5)
    assert response.code == 404
    assert body_json(response) == {"error": "album ghost does not exist"}
