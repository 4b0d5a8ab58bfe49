"""Albums: every endpoint's success body and each error, asserted exactly."""

import pytest
from conftest import body_json


@pytest.mark.gen_test
async def test_album_lifecycle_has_the_original_sentences(api):
    response = await api.request("GET", "/albums")
    assert response.code == 200 and body_json(response) == {"albumList": []}

    response = await api.create_album("pets")
    assert response.code == 200 and body_json(response) == {"message": "pets album added"}

    response = await api.request("PATCH", "/albums/pets", {"albumName": "animals"})
    assert response.code == 200
    assert body_json(response) == {"message": "album pets modified to animals"}

    response = await api.request("GET", "/albums")
    assert body_json(response) == {"albumList": ["animals"]}

    response = await api.request("DELETE", "/albums/animals")
    assert response.code == 200 and body_json(response) == {"message": "animals album deleted"}
    assert body_json(await api.request("GET", "/albums")) == {"albumList": []}


@pytest.mark.gen_test
async def test_albums_are_listed_sorted_by_name(api):
    for name in ["zebra", "Apple", "mango", "éclair", "banana"]:
        assert (await api.create_album(name)).code == 200
    response = await api.request("GET", "/albums")
    assert body_json(response) == {"albumList": ["Apple", "banana", "mango", "zebra", "éclair"]}


@pytest.mark.gen_test
async def test_creating_a_taken_album_is_409(api):
    await api.create_album("pets")
    response = await api.create_album("pets")
    assert response.code == 409
    assert body_json(response) == {"error": "album pets already exists"}


@pytest.mark.gen_test
async def test_renaming_onto_a_taken_album_is_409_and_changes_nothing(api, backend):
    await api.create_album("a")
    await api.create_album("b")
    response = await api.request("PATCH", "/albums/a", {"albumName": "b"})
    assert response.code == 409
    assert body_json(response) == {"error": "album b already exists"}
    assert body_json(await api.request("GET", "/albums")) == {"albumList": ["a", "b"]}


@pytest.mark.gen_test
async def test_missing_albums_are_404(api):
    response = await api.request("DELETE", "/albums/ghost")
    assert response.code == 404 and body_json(response) == {"error": "album ghost does not exist"}
    response = await api.request("PATCH", "/albums/ghost", {"albumName": "x"})
    assert response.code == 404 and body_json(response) == {"error": "album ghost does not exist"}
    response = await api.request("GET", "/albums/ghost/images")
    assert response.code == 404 and body_json(response) == {"error": "album ghost does not exist"}


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "body, error",
    [
        ("{not json", "the request body is not valid JSON"),
        ("", "the request body is not valid JSON"),
        (b"\xff\xfe", "the request body is not valid JSON"),
        ('["pets"]', "the request body must be a JSON object"),
        ("{}", 'the field "albumName" is missing from the request body'),
        ('{"albumname": "pets"}', 'the field "albumName" is missing from the request body'),
        ('{"albumName": 7}', 'the field "albumName" must be a string'),
        ('{"albumName": null}', 'the field "albumName" must be a string'),
        ('{"albumName": ["a"]}', 'the field "albumName" must be a string'),
        ('{"albumName": ""}', "album name must not be empty"),
    ],
)
async def test_bad_json_bodies_are_400(api, body, error):
    response = await api.request("POST", "/albums", body)
    assert response.code == 400
    assert body_json(response) == {"error": error}
    await api.create_album("pets")
    response = await api.request("PATCH", "/albums/pets", body)
    assert response.code == 400
    assert body_json(response)["error"] == error.replace("albumName", "albumName")


@pytest.mark.gen_test
async def test_an_oversized_json_body_is_413(api):
    response = await api.request("POST", "/albums", '{"albumName": "' + "a" * 70000 + '"}')
    assert response.code == 413
    assert body_json(response) == {"error": "the request body is larger than 65536 bytes"}


@pytest.mark.gen_test
async def test_deleting_an_album_deletes_its_images_and_their_files(api, backend):
    from images import png

    await api.create_album("pets")
    for index in range(3):
        assert (await api.upload("pets", f"{index}.png", png(padding=index))).code == 200
    assert len(backend.published()) == 3
    response = await api.request("DELETE", "/albums/pets")
    assert response.code == 200
    assert backend.published() == []
    await api.create_album("pets")
    assert body_json(await api.list_images("pets")) == {"imageList": []}


@pytest.mark.gen_test
async def test_unknown_paths_and_methods_answer_json(api):
    response = await api.request("GET", "/nothing/here")
    assert response.code == 404 and body_json(response) == {"error": "no such endpoint"}
    response = await api.request("PUT", "/albums", {"albumName": "x"})
    assert response.code == 405
    assert body_json(response) == {"error": "method PUT is not allowed here"}
    response = await api.http.fetch(api.base.replace("/api/v1", "/"), raise_error=False)
    assert response.code == 404 and body_json(response) == {"error": "no such endpoint"}


@pytest.mark.gen_test
async def test_every_api_response_carries_nosniff_and_csp(api):
    for response in [await api.request("GET", "/albums"), await api.request("GET", "/x")]:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
