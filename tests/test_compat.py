"""Old clients of the Go service keep working: trailing slashes, filenames with a path.

Gin redirected a path with a trailing slash to the one without; here it is served as
is (no redirect: some clients do not follow one on POST), and the OpenAPI document
stays slash-free.
"""

import hashlib

import pytest
from conftest import body_json, multipart_body
from images import png

from handlers import API_ROUTES, ROOT_ROUTES, api_server_url
from handlers.openapi import build_spec

A = png(padding=10)
B = png(2, 2, padding=20)


@pytest.mark.gen_test
async def test_every_api_path_answers_with_one_trailing_slash_as_without(api):
    async def call(method, path, body=None, headers=None):
        response = await api.request(method, path, body, headers=headers, follow_redirects=False)
        return response.code, response.body

    assert await call("POST", "/albums/", {"albumName": "pets"}) == (
        200,
        b'{"message": "pets album added"}',
    )
    assert body_json(await api.request("GET", "/albums/")) == {"albumList": ["pets"]}
    assert (await call("PATCH", "/albums/pets/", {"albumName": "animals"}))[0] == 200

    content_type, body = multipart_body("cat.png", A)
    code, answer = await call(
        "POST", "/albums/animals/images/", body, {"Content-Type": content_type}
    )
    assert (code, answer) == (200, b'{"message": "cat.png image added to album animals"}')
    assert (await call("PUT", "/albums/animals/images/dog.png/", B))[0] == 200
    assert body_json(await api.request("GET", "/albums/animals/images/")) == {
        "imageList": ["cat.png", "dog.png"]
    }
    response = await api.request("GET", "/albums/animals/images/cat.png/")
    assert response.code == 200 and response.body == A
    response = await api.request("HEAD", "/albums/animals/images/cat.png/")
    assert response.code == 200 and response.headers["ETag"] == f'"{hashlib.sha256(A).hexdigest()}"'
    response = await api.request(
        "PATCH", "/albums/animals/images/cat.png/", {"imageName": "kitty.png"}
    )
    assert body_json(response) == {"message": "cat.png image modified to kitty.png"}
    response = await api.request("DELETE", "/albums/animals/images/kitty.png/")
    assert body_json(response) == {"message": "kitty.png image deleted from album animals"}
    response = await api.request("DELETE", "/albums/animals/")
    assert body_json(response) == {"message": "animals album deleted"}
    response = await api.request("OPTIONS", "/albums/", headers={"Origin": "https://a.example"})
    assert response.code == 204


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/albums//", "/albums/pets//images", "/albums/pets/images//"])
async def test_more_than_one_slash_is_still_no_such_endpoint(api, path):
    await api.create_album("pets")
    response = await api.request("GET", path)
    assert response.code == 404
    assert body_json(response) == {"error": "no such endpoint"}


@pytest.mark.gen_test
async def test_errors_on_a_slashed_path_are_the_same_as_without(api):
    response = await api.request("DELETE", "/albums/ghost/")
    assert response.code == 404 and body_json(response) == {"error": "album ghost does not exist"}
    await api.create_album("pets")
    response = await api.request("POST", "/albums/", {"albumName": "pets"})
    assert response.code == 409 and body_json(response) == {"error": "album pets already exists"}


def test_the_openapi_document_has_no_trailing_slash(store):
    document = build_spec(API_ROUTES, ROOT_ROUTES, api_server_url("", 3333))
    assert all(not path.endswith("/") and "?" not in path for path in document["paths"])
