"""List answers are cached until the catalog changes, in any worker process, and carry
an ETag for conditional requests."""

import itertools
import json
import unicodedata

import pytest
from conftest import body_json
from images import png
from process import create_album, request, serve

from handlers.base import ListCache


@pytest.mark.gen_test
async def test_a_list_has_an_etag_and_answers_304_while_unchanged(api):
    await api.create_album("pets")
    first = await api.request("GET", "/albums")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    again = await api.request("GET", "/albums", headers={"If-None-Match": etag})
    assert again.code == 304 and again.body == b""
    await api.create_album("cats")
    changed = await api.request("GET", "/albums", headers={"If-None-Match": etag})
    assert changed.code == 200 and body_json(changed) == {"albumList": ["cats", "pets"]}
    assert changed.headers["ETag"] != etag


@pytest.mark.gen_test
async def test_image_lists_follow_every_kind_of_change(api):
    await api.create_album("pets")
    seen = []

    async def listing():
        response = await api.list_images("pets")
        seen.append(response.headers["ETag"])
        return body_json(response)["imageList"]

    assert await listing() == []
    await api.put_image("pets", "a.png", png())
    assert await listing() == ["a.png"]
    await api.request("PATCH", "/albums/pets/images/a.png", {"imageName": "b.png"})
    assert await listing() == ["b.png"]
    await api.request("DELETE", "/albums/pets/images/b.png")
    assert await listing() == []
    assert len(set(seen[1:])) == 3 and seen[0] == seen[-1], "same list, same ETag"
    await api.request("PATCH", "/albums/pets", {"albumName": "cats"})
    assert (await api.list_images("pets")).code == 404
    assert body_json(await api.list_images("cats")) == {"imageList": []}


def test_a_change_made_in_one_worker_is_listed_by_every_worker(run, tmp_path):
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db"), "--workers", "2"),
            {"IMAGESTORE_MQTT": "off"},
        ),
    )
    assert "2 workers" in proc.log()
    for index in range(40):
        create_album(port, f"album-{index:02d}")
        # A new connection each time: the kernel hands it to either worker.
        status, headers, body = request(port, "GET", "/api/v1/albums")
        assert status == 200
        assert json.loads(body)["albumList"][-1] == f"album-{index:02d}"


# --- the cache is bounded -------------------------------------------------------------


def spellings(word: str) -> list[str]:
    """Every spelling of ``word``'s accented letters, composed (NFC) or decomposed."""
    choices = [{ch, unicodedata.normalize("NFD", ch)} for ch in word]
    return ["".join(parts) for parts in itertools.product(*choices)]


@pytest.mark.gen_test(timeout=60)
async def test_every_spelling_of_an_album_name_is_one_cache_entry(api, app, store):
    album = "éèêëàâçù"  # 2^8 = 256 spellings of one name
    await api.create_album(album)
    for index in range(200):
        await store.create_album(f"filler-{index}")  # a list worth caching
    for index in range(100):
        assert (await api.put_image(album, f"photo-{index:04}.png", png())).code == 200
    cache = app.settings["list_cache"]
    names = spellings(album)
    assert len(set(names)) == 256
    bodies = set()
    for name in names:
        response = await api.list_images(name)
        assert response.code == 200
        bodies.add(response.body)
    assert len(bodies) == 1
    assert len(cache) == 1
    assert cache.bytes == len(bodies.pop())


@pytest.mark.gen_test(timeout=60)
async def test_the_list_cache_stays_within_its_bytes(api, app):
    cache = app.settings["list_cache"]
    cache.max_bytes = 64 * 1024
    for album in range(40):
        await api.create_album(f"album-{album:02}")
        for index in range(40):
            assert (
                await api.put_image(f"album-{album:02}", f"image-{index:03}-{'x' * 40}.png", png())
            ).code == 200
    for album in range(40):
        response = await api.list_images(f"album-{album:02}")
        assert response.code == 200 and len(body_json(response)["imageList"]) == 40
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) < 40  # the oldest were let go
    # What was let go is produced again, equal.
    first = await api.list_images("album-00")
    assert len(body_json(first)["imageList"]) == 40


def test_a_body_over_a_quarter_of_the_cache_is_served_but_not_kept():
    cache = ListCache(max_bytes=1000)
    answer = cache.keep(("albums",), 1, b"x" * 251)
    assert answer.body == b"x" * 251 and answer.etag and len(cache) == 0 and cache.bytes == 0
    cache.keep(("albums",), 1, b"y" * 250)
    assert len(cache) == 1 and cache.bytes == 250
    assert cache.lookup(("albums",), 1) is not None
    assert cache.lookup(("albums",), 2) is None
    off = ListCache(max_bytes=0)
    off.keep(("albums",), 1, b"z")
    assert len(off) == 0
