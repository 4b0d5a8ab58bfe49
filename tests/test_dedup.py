"""Identical bytes are stored once: two names, one blob; the blob goes with the last
name that points at it; the API and the events are as without dedup."""

import hashlib

import pytest
from conftest import body_json
from images import png

A = png(width=3, padding=50_000)
B = png(width=4, padding=50_001)


@pytest.mark.gen_test
async def test_two_names_share_one_blob_until_both_are_gone(api, backend):
    await api.create_album("pets")
    await api.create_album("backup")
    assert body_json(await api.upload("pets", "cat.png", A)) == {
        "message": "cat.png image added to album pets"
    }
    assert (await api.put_image("backup", "cat-copy.png", A)).code == 200
    assert (await api.put_image("pets", "other.png", B)).code == 200
    assert len(backend.published()) == 2, "the same bytes are stored once"
    for album, image in (("pets", "cat.png"), ("backup", "cat-copy.png")):
        response = await api.download(album, image)
        assert response.body == A
        assert response.headers["ETag"] == f'"{hashlib.sha256(A).hexdigest()}"'

    assert (await api.request("DELETE", "/albums/pets/images/cat.png")).code == 200
    assert (await api.download("backup", "cat-copy.png")).body == A, "still served"
    assert len(backend.published()) == 2
    assert (await api.request("DELETE", "/albums/backup")).code == 200
    assert len(backend.published()) == 1, "the last name took the blob with it"
    assert (await api.download("pets", "other.png")).body == B


@pytest.mark.gen_test
async def test_renaming_and_uploading_again_keep_one_blob(api, backend):
    await api.create_album("a")
    assert (await api.put_image("a", "x.png", A)).code == 200
    assert (
        await api.request("PATCH", "/albums/a/images/x.png", {"imageName": "y.png"})
    ).code == 200
    assert (await api.put_image("a", "x.png", A)).code == 200
    assert (await api.put_image("a", "z.png", A)).code == 200
    assert len(backend.published()) == 1
    assert body_json(await api.list_images("a")) == {"imageList": ["x.png", "y.png", "z.png"]}
    for name in ("x.png", "y.png"):
        assert (await api.request("DELETE", f"/albums/a/images/{name}")).code == 200
    assert len(backend.published()) == 1
    assert (await api.download("a", "z.png")).body == A
    assert (await api.request("DELETE", "/albums/a/images/z.png")).code == 200
    assert backend.published() == []
