"""List answers are cached until the catalog changes, in any worker process, and carry
an ETag for conditional requests."""

import json

import pytest
from conftest import body_json
from images import png
from process import create_album, request, serve


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
