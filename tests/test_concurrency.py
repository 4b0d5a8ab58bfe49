"""Many requests at once end in a consistent state: the catalog, the blob files and
the temp folder agree, every race has exactly one winner, and nothing answers 5xx."""

import asyncio
import hashlib
import random

import pytest
from conftest import Api, body_json
from images import JPEG, png
from tornado.httpclient import AsyncHTTPClient

KiB = 1 << 10


# --- helpers --------------------------------------------------------------------------


@pytest.fixture
def wide_api(http_server, base_url):
    """A client allowed to keep 200 requests in flight at once (the default keeps
    10 and queues the rest, which would hide most races)."""
    client = AsyncHTTPClient(force_instance=True, max_clients=200)
    yield Api(client, base_url)
    client.close()


def image_bytes(seed: int, size: int) -> bytes:
    """A distinct valid PNG of about ``size`` bytes."""
    return png(width=1 + seed % 7, height=1 + seed % 5, padding=size + seed)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_hashes(backend) -> list[str]:
    return sorted(sha(data) for data in backend.blob_bytes())


def temp_files(backend) -> list[str]:
    return backend.unfinished()


async def upload(api: Api, album: str, name: str, data: bytes, multipart: bool):
    if multipart:
        return await api.upload(album, name, data)
    return await api.put_image(album, name, data)


async def listed(api: Api, album: str) -> list[str]:
    response = await api.list_images(album)
    assert response.code == 200, response.body
    return body_json(response)["imageList"]


async def assert_album_holds(api: Api, backend, album: str, expected: dict[str, bytes]) -> None:
    """The album lists exactly ``expected``, each downloads with its bytes, and the
    blob folder holds exactly these images' bytes (no orphan, no missing blob)."""
    assert await listed(api, album) == sorted(expected)
    for name, data in expected.items():
        response = await api.download(album, name)
        assert response.code == 200, (name, response.code)
        assert response.body == data, name
    assert blob_hashes(backend) == sorted(sha(data) for data in expected.values())
    assert temp_files(backend) == []


def assert_no_5xx(responses) -> None:
    codes = [r.code for r in responses]
    assert all(code < 500 for code in codes), codes


# --- many uploads and renames at once -------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_many_simultaneous_uploads_and_renames_end_consistent(wide_api, backend):
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    old = {f"old{i:02}.png": image_bytes(100 + i, 30 * KiB * (i % 4)) for i in range(20)}
    for name, data in old.items():
        assert (await api.put_image("pets", name, data)).code == 200

    new = {f"new{i:02}.png": image_bytes(i, 60 * KiB * (i % 5) + i) for i in range(40)}
    renames = {f"old{i:02}.png": f"renamed{i:02}.png" for i in range(0, 20, 2)}

    jobs = []
    for index, (name, data) in enumerate(new.items()):
        jobs.append(upload(api, "pets", name, data, multipart=index % 2 == 0))
    for source, target in renames.items():
        jobs.append(api.request("PATCH", f"/albums/pets/images/{source}", {"imageName": target}))
    jobs += [api.list_images("pets") for _ in range(10)]
    random.Random(7).shuffle(jobs)
    responses = await asyncio.gather(*jobs)

    assert_no_5xx(responses)
    assert [r.code for r in responses] == [200] * len(responses), [
        (r.code, r.body) for r in responses if r.code != 200
    ]
    expected = dict(new)
    for name, data in old.items():
        expected[renames.get(name, name)] = data
    assert len(expected) == 60
    await assert_album_holds(api, backend, "pets", expected)


@pytest.mark.gen_test(timeout=120)
async def test_simultaneous_uploads_into_several_albums_and_deletes_of_others(wide_api, backend):
    """Uploads into three albums while images of a fourth are deleted one by one."""
    api = wide_api
    for album in ("a", "b", "c", "gone"):
        assert (await api.create_album(album)).code == 200
    doomed = {f"d{i}.png": image_bytes(500 + i, 20 * KiB) for i in range(15)}
    for name, data in doomed.items():
        assert (await api.upload("gone", name, data)).code == 200

    plan = {
        (album, f"{album}{i}.png"): image_bytes(i * 3 + ord(album), 40 * KiB * (i % 3))
        for album in "abc"
        for i in range(12)
    }
    jobs = [
        upload(api, album, name, data, multipart=(i % 3 == 0))
        for i, ((album, name), data) in enumerate(plan.items())
    ]
    jobs += [api.request("DELETE", f"/albums/gone/images/{name}") for name in doomed]
    random.Random(11).shuffle(jobs)
    responses = await asyncio.gather(*jobs)
    assert [r.code for r in responses] == [200] * len(responses), [
        (r.code, r.body) for r in responses if r.code != 200
    ]
    assert await listed(api, "gone") == []
    for album in "abc":
        expected = {name: data for (a, name), data in plan.items() if a == album}
        assert await listed(api, album) == sorted(expected)
        for name, data in expected.items():
            assert (await api.download(album, name)).body == data
    assert blob_hashes(backend) == sorted(sha(d) for d in plan.values())
    assert temp_files(backend) == []


# --- races for one name ---------------------------------------------------------------


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("racers", [2, 8, 20])
async def test_uploads_racing_for_one_name_have_exactly_one_winner(wide_api, backend, racers):
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    for round_ in range(4):
        name = f"same{round_}.png"
        contents = [
            image_bytes(racer + 1000 * round_, 200 * KiB + racer) for racer in range(racers)
        ]
        responses = await asyncio.gather(
            *[
                upload(api, "pets", name, data, multipart=(racer + round_) % 2 == 0)
                for racer, data in enumerate(contents)
            ]
        )
        codes = [r.code for r in responses]
        assert codes.count(200) == 1, codes
        assert codes.count(409) == racers - 1, codes
        winner = codes.index(200)
        assert body_json(responses[winner]) == {"message": f"{name} image added to album pets"}
        for response in responses:
            if response.code == 409:
                assert body_json(response) == {
                    "error": f"image {name} already exists in album pets"
                }
        response = await api.download("pets", name)
        assert response.code == 200 and response.body == contents[winner]
    assert await listed(api, "pets") == [f"same{r}.png" for r in range(4)]
    assert len(backend.published()) == 4
    assert temp_files(backend) == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("racers", [2, 8])
async def test_renames_onto_one_target_have_exactly_one_winner(wide_api, backend, racers):
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    images = {f"src{i}.png": image_bytes(i, 10 * KiB) for i in range(racers)}
    for name, data in images.items():
        assert (await api.put_image("pets", name, data)).code == 200

    responses = await asyncio.gather(
        *[
            api.request("PATCH", f"/albums/pets/images/{name}", {"imageName": "target.png"})
            for name in images
        ]
    )
    codes = [r.code for r in responses]
    assert codes.count(200) == 1, codes
    assert codes.count(409) == racers - 1, codes
    winner = list(images)[codes.index(200)]
    assert body_json(responses[codes.index(200)]) == {
        "message": f"{winner} image modified to target.png"
    }
    for response in responses:
        if response.code == 409:
            assert body_json(response) == {"error": "image target.png already exists in album pets"}
    expected = {("target.png" if name == winner else name): data for name, data in images.items()}
    await assert_album_holds(api, backend, "pets", expected)


@pytest.mark.gen_test(timeout=60)
async def test_album_renames_onto_one_target_have_exactly_one_winner(wide_api, backend):
    api = wide_api
    sources = [f"album{i}" for i in range(8)]
    for index, album in enumerate(sources):
        assert (await api.create_album(album)).code == 200
        assert (await api.put_image(album, "x.png", image_bytes(index, 1000))).code == 200
    responses = await asyncio.gather(
        *[api.request("PATCH", f"/albums/{album}", {"albumName": "target"}) for album in sources]
    )
    codes = [r.code for r in responses]
    assert codes.count(200) == 1 and codes.count(409) == 7, codes
    winner = codes.index(200)
    albums = body_json(await api.request("GET", "/albums"))["albumList"]
    assert albums == sorted([a for i, a in enumerate(sources) if i != winner] + ["target"])
    assert (await api.download("target", "x.png")).body == image_bytes(winner, 1000)
    assert len(backend.published()) == 8


@pytest.mark.gen_test(timeout=60)
async def test_an_upload_and_a_rename_racing_for_one_name_have_one_winner(wide_api, backend):
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    for round_ in range(6):
        source, target = f"src{round_}.png", f"dst{round_}.png"
        renamed, uploaded = image_bytes(round_, 5 * KiB), image_bytes(round_ + 50, 300 * KiB)
        assert (await api.put_image("pets", source, renamed)).code == 200
        upload_response, rename_response = await asyncio.gather(
            upload(api, "pets", target, uploaded, multipart=round_ % 2 == 0),
            api.request("PATCH", f"/albums/pets/images/{source}", {"imageName": target}),
        )
        codes = sorted([upload_response.code, rename_response.code])
        assert codes == [200, 409], (upload_response.body, rename_response.body)
        body = (await api.download("pets", target)).body
        assert body == (uploaded if upload_response.code == 200 else renamed)
        names = await listed(api, "pets")
        assert target in names and (source in names) == (upload_response.code == 200)
    assert temp_files(backend) == []
    assert len(backend.published()) == len(await listed(api, "pets"))


# --- album deletes while uploads run into it ------------------------------------------


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_album_deletes_during_uploads_leave_no_orphans(wide_api, backend, seed):
    api = wide_api
    rng = random.Random(seed)
    assert (await api.create_album("pets")).code == 200
    contents = {
        f"img{i:02}.png": image_bytes(i + 100 * seed, rng.randrange(0, 600 * KiB))
        for i in range(30)
    }

    admin_codes: list[tuple[str, int]] = []

    async def churn() -> None:
        """Delete the album, recreate it, delete it again... while uploads run."""
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0, 0.03))
            response = await api.request("DELETE", "/albums/pets")
            admin_codes.append(("DELETE", response.code))
            await asyncio.sleep(rng.uniform(0, 0.03))
            response = await api.create_album("pets")
            admin_codes.append(("POST", response.code))
        response = await api.request("DELETE", "/albums/pets")
        admin_codes.append(("DELETE", response.code))

    async def late_upload(index: int, name: str, data: bytes):
        await asyncio.sleep(rng.uniform(0, 0.15))
        return await upload(api, "pets", name, data, multipart=index % 2 == 0)

    uploads = [late_upload(i, name, data) for i, (name, data) in enumerate(contents.items())]
    *responses, _ = await asyncio.gather(*uploads, churn())

    codes = [r.code for r in responses]
    assert set(codes) <= {200, 404}, [(r.code, r.body) for r in responses]
    for response in responses:
        if response.code == 404:
            assert body_json(response) == {"error": "album pets does not exist"}
    for method, code in admin_codes:
        assert code in ((200, 404) if method == "DELETE" else (200, 409)), admin_codes
    assert admin_codes[-1] == ("DELETE", 200)

    # the album is gone, and every image with it: no blob, no temp file remains
    response = await api.list_images("pets")
    assert response.code == 404
    assert body_json(await api.request("GET", "/albums")) == {"albumList": []}
    assert backend.published() == []
    assert temp_files(backend) == []


@pytest.mark.gen_test(timeout=120)
async def test_album_deleted_once_during_uploads_keeps_only_what_it_lists(wide_api, backend):
    """One delete and one recreate in the middle of 40 uploads: whatever ends 200
    and is still listed has its blob; nothing else has one."""
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    contents = {f"img{i:02}.png": image_bytes(i, 150 * KiB + i) for i in range(40)}

    async def delete_then_recreate():
        await asyncio.sleep(0.02)
        deleted = await api.request("DELETE", "/albums/pets")
        created = await api.create_album("pets")
        return deleted, created

    *responses, (deleted, created) = await asyncio.gather(
        *[
            upload(api, "pets", name, data, multipart=i % 2 == 1)
            for i, (name, data) in enumerate(contents.items())
        ],
        delete_then_recreate(),
    )
    assert deleted.code == 200 and created.code == 200
    codes = {name: r.code for name, r in zip(contents, responses, strict=True)}
    assert set(codes.values()) <= {200, 404}, codes

    names = await listed(api, "pets")
    # every listed image was answered 200 (a 404 never leaves a row behind)
    assert all(codes[name] == 200 for name in names), (names, codes)
    for name in names:
        assert (await api.download("pets", name)).body == contents[name]
    assert blob_hashes(backend) == sorted(sha(contents[name]) for name in names)
    assert temp_files(backend) == []


@pytest.mark.gen_test(timeout=60)
async def test_image_deletes_racing_with_downloads_and_each_other(wide_api, backend):
    api = wide_api
    assert (await api.create_album("pets")).code == 200
    images = {
        f"i{i}.jpg" if i % 2 else f"i{i}.png": (JPEG if i % 2 else image_bytes(i, 100 * KiB))
        for i in range(10)
    }
    for name, data in images.items():
        assert (await api.put_image("pets", name, data)).code == 200
    jobs = []
    for name in images:
        jobs += [api.request("DELETE", f"/albums/pets/images/{name}") for _ in range(3)]
        jobs += [api.download("pets", name) for _ in range(3)]
    random.Random(3).shuffle(jobs)
    responses = await asyncio.gather(*jobs)
    assert_no_5xx(responses)
    deletes = [r for r in responses if r.request.method == "DELETE"]
    downloads = [r for r in responses if r.request.method == "GET"]
    assert sorted(r.code for r in deletes).count(200) == len(images)
    assert all(r.code in (200, 404) for r in deletes)
    for response in downloads:
        assert response.code in (200, 404)
        if response.code == 200:
            name = response.request.url.rsplit("/", 1)[1]
            assert response.body == images[name]
    assert await listed(api, "pets") == []
    assert backend.published() == []
    assert temp_files(backend) == []
