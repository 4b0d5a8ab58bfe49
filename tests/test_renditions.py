"""Renditions: GET .../images/{image}?width=&height=&fit=&format=&quality= through
libvips on every backend; each answer decoded to check what it is."""

import asyncio
import struct
import time
import zlib
from urllib.parse import quote

import pytest
import pyvips
from conftest import body_json
from images import BMP, animated_gif, real
from prometheus_client.parser import text_string_to_metric_families

from handlers import make_app
from handlers.renditions import RenditionPolicy
from store import open_store
from store.signing import sign_url

KEYS = (b"the new key", b"the old key")


@pytest.fixture
def app(store, upload_limits):
    return make_app(store, limits=upload_limits, renditions=RenditionPolicy(signing_keys=KEYS))


def decoded(response) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(response.body, "")


def loader(image: pyvips.Image) -> str:
    return str(image.get("vips-loader")).split("_")[0]


async def stored(api, name: str, data: bytes, album: str = "pets") -> None:
    await api.create_album(album)
    assert (await api.put_image(album, name, data)).code == 200


async def rendition(api, name: str, query: str, album: str = "pets", **kwargs):
    return await api.request("GET", f"/albums/{album}/images/{quote(name)}?{query}", **kwargs)


@pytest.mark.gen_test(timeout=120)
async def test_every_fit_and_format_gives_the_size_asked_for(api):
    await stored(api, "photo.jpg", real(".jpg", 400, 300))
    expected = {
        "inside": (171, 128),
        "cover": (256, 128),
        "contain": (256, 128),
        "fill": (256, 128),
    }
    for fit, size in expected.items():
        for fmt, load in (
            ("jpeg", "jpegload"),
            ("png", "pngload"),
            ("webp", "webpload"),
            ("avif", "heifload"),
        ):
            response = await rendition(
                api, "photo.jpg", f"width=256&height=128&fit={fit}&format={fmt}"
            )
            assert response.code == 200, (fit, fmt, response.body[:200])
            image = decoded(response)
            assert (image.width, image.height) == size, (fit, fmt)
            assert loader(image) == load
            assert response.headers["Content-Type"] == f"image/{fmt}"
            assert (response.headers["X-Image-Width"], response.headers["X-Image-Height"]) == tuple(
                map(str, size)
            )
    # One side alone keeps the aspect ratio; the original's format by default.
    image = decoded(await rendition(api, "photo.jpg", "width=256"))
    assert (image.width, image.height, loader(image)) == (256, 192, "jpegload")
    image = decoded(await rendition(api, "photo.jpg", "height=64"))
    assert (image.width, image.height) == (85, 64)


@pytest.mark.gen_test(timeout=60)
async def test_contain_pads_and_cover_crops_around_the_centre(api):
    await stored(api, "wide.png", real(".png", 400, 100, bands=4))
    padded = decoded(await rendition(api, "wide.png", "width=128&height=128&fit=contain"))
    assert (padded.width, padded.height, padded.bands) == (128, 128, 4)
    assert padded(64, 2)[3] == 0, "transparent padding above the image"
    assert padded(64, 64)[3] == 128, "the image itself in the middle"
    white = decoded(
        await rendition(api, "wide.png", "width=128&height=128&fit=contain&format=jpeg")
    )
    assert white.bands == 3 and white(64, 2) == [255.0, 255.0, 255.0]


@pytest.mark.gen_test(timeout=60)
async def test_exif_orientation_is_applied_and_metadata_stripped_from_renditions_only(api):
    image = pyvips.Image.new_from_buffer(real(".png", 400, 300), "").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitude", "48/1 51/1 2400/100")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitudeRef", "N")
    original = image.write_to_buffer(".jpg")
    await stored(api, "rotated.jpg", original)

    response = await rendition(api, "rotated.jpg", "width=256&format=jpeg")
    made = decoded(response)
    assert (made.width, made.height) == (256, 341), "portrait: turned by the orientation"
    fields = made.get_fields()
    assert not [name for name in fields if name.startswith("exif-") or "GPS" in name], fields
    assert "icc-profile-data" not in fields and "xmp-data" not in fields
    assert made.get("orientation") == 1 if "orientation" in fields else True
    # The original is untouched, GPS and all.
    whole = await api.download("pets", "rotated.jpg")
    assert whole.body == original
    assert "exif-ifd3-GPSLatitude" in decoded(whole).get_fields()


@pytest.mark.gen_test(timeout=60)
async def test_colour_comes_out_as_8_bit_srgb(api):
    cmyk = pyvips.Image.new_from_buffer(real(".jpg", 64, 48), "").colourspace("cmyk")
    deep = (pyvips.Image.new_from_buffer(real(".png", 64, 48), "").cast("ushort") * 256).cast(
        "ushort"
    )
    await stored(api, "print.jpg", cmyk.write_to_buffer(".jpg"))
    assert (
        await api.put_image(
            "pets", "deep.tif", deep.copy(interpretation="rgb16").write_to_buffer(".tif")
        )
    ).code == 200
    assert (await api.put_image("pets", "grey.png", real(".png", 64, 48, bands=1))).code == 200
    for name in ("print.jpg", "deep.tif", "grey.png"):
        response = await rendition(api, name, "width=64&format=png")
        assert response.code == 200, response.body
        made = decoded(response)
        assert (made.interpretation, made.format, made.bands) == ("srgb", "uchar", 3), name


@pytest.mark.gen_test(timeout=60)
async def test_an_animation_gives_its_first_frame(api):
    await stored(api, "anim.gif", animated_gif(40, 20, 3))
    response = await rendition(api, "anim.gif", "width=64&format=webp")
    made = pyvips.Image.new_from_buffer(response.body, "", n=-1)
    assert (made.width, made.height) == (64, 32)
    assert made.get("n-pages") == 1 if "n-pages" in made.get_fields() else True
    # Its default format is PNG (GIF is not an output format).
    assert (await rendition(api, "anim.gif", "width=64")).headers["Content-Type"] == "image/png"


@pytest.mark.gen_test(timeout=60)
async def test_format_auto_follows_accept_and_says_so_in_vary(api):
    await stored(api, "photo.jpg", real(".jpg", 200, 100))
    cases = {
        "image/avif,image/webp,*/*": "image/avif",
        "image/webp,*/*;q=0.8": "image/webp",
        "image/avif;q=0,image/webp": "image/webp",
        "*/*": "image/jpeg",
        "": "image/jpeg",
    }
    for accept, expected in cases.items():
        response = await rendition(
            api, "photo.jpg", "width=64&format=auto", headers={"Accept": accept}
        )
        assert response.code == 200
        assert response.headers["Content-Type"] == expected, accept
        assert response.headers["Vary"] == "Accept"
        assert decoded(response).width == 64
    assert "Vary" not in (await rendition(api, "photo.jpg", "width=64&format=webp")).headers


@pytest.mark.gen_test(timeout=60)
async def test_head_etag_304_and_range_work_on_renditions(api):
    await stored(api, "photo.jpg", real(".jpg", 300, 200))
    whole = await rendition(api, "photo.jpg", "width=128&format=webp")
    etag = whole.headers["ETag"]
    assert etag != (await api.download("pets", "photo.jpg")).headers["ETag"]
    head = await api.request("HEAD", "/albums/pets/images/photo.jpg?width=128&format=webp")
    assert head.code == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(whole.body)) and head.headers["ETag"] == etag
    again = await rendition(
        api, "photo.jpg", "width=128&format=webp", headers={"If-None-Match": etag}
    )
    assert again.code == 304 and again.body == b""
    other = await rendition(
        api, "photo.jpg", "width=128&format=png", headers={"If-None-Match": etag}
    )
    assert other.code == 200
    part = await rendition(
        api, "photo.jpg", "width=128&format=webp", headers={"Range": "bytes=0-9"}
    )
    assert part.code == 206 and part.body == whole.body[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(whole.body)}"
    outside = await rendition(
        api, "photo.jpg", "width=128&format=webp", headers={"Range": "bytes=999999-"}
    )
    assert outside.code == 416
    assert whole.body == (await rendition(api, "photo.jpg", "width=128&format=webp")).body


@pytest.mark.gen_test(timeout=60)
async def test_originals_carry_their_dimensions_and_no_parameter_means_the_original(api):
    data = real(".png", 30, 20)
    await stored(api, "pic.png", data)
    response = await api.download("pets", "pic.png")
    assert response.body == data
    assert (response.headers["X-Image-Width"], response.headers["X-Image-Height"]) == ("30", "20")
    head = await api.download("pets", "pic.png", method="HEAD")
    assert head.headers["X-Image-Width"] == "30"
    assert (await rendition(api, "pic.png", "download=1")).body == data


@pytest.mark.gen_test(timeout=60)
async def test_bad_parameters_get_400_with_a_sentence(api):
    await stored(api, "photo.jpg", real(".jpg", 100, 100))
    bad = {
        "width=abc": "width is a whole number",
        "width=0": "width is a whole number",
        "width=-5": "width is a whole number",
        "width=99999999": "width is a whole number",
        "width=%C2%B2": "width is a whole number",
        "width=64&width=128": "width is given more than once",
        "fit=cover": "a rendition needs a width or a height",
        "width=64&fit=squash": "fit is one of inside, cover, contain, fill",
        "width=64&format=gif": "format is one of jpeg, png, webp, avif or auto",
        "width=64&quality=0": "quality is a whole number from 1 to 100",
        "width=64&quality=101": "quality is a whole number from 1 to 100",
        "width=64&format=%FF": "format is not valid UTF-8",
    }
    for query, sentence in bad.items():
        response = await rendition(api, "photo.jpg", query)
        assert response.code == 400, query
        assert sentence in body_json(response)["error"], (query, response.body)
    response = await rendition(api, "ghost.jpg", "width=64")
    assert response.code == 404


@pytest.mark.gen_test(timeout=60)
async def test_unsigned_sizes_come_from_the_allow_list(api):
    await stored(api, "photo.jpg", real(".jpg", 3000, 1500))
    for asked, served in ((1, 64), (64, 64), (65, 128), (300, 512), (2048, 2048)):
        response = await rendition(api, "photo.jpg", f"width={asked}&format=jpeg")
        assert decoded(response).width == served, asked
    response = await rendition(api, "photo.jpg", "width=2049")
    assert response.code == 400
    assert "larger ones need a signed URL" in body_json(response)["error"]


def signed(name: str, query: str, key: bytes = KEYS[0], expires: int | None = None) -> str:
    path = f"/api/v1/albums/pets/images/{quote(name)}?{query}"
    return sign_url(path, key, int(time.time()) + 600 if expires is None else expires)


@pytest.mark.gen_test(timeout=60)
async def test_a_signed_url_may_ask_any_size_and_nothing_else(api, base_url, http_client):
    await stored(api, "photo.jpg", real(".jpg", 3000, 1500))
    assert (await api.put_image("pets", "other.jpg", real(".jpg", 30, 15))).code == 200

    async def get(url: str):
        return await http_client.fetch(base_url + url, raise_error=False)

    exact = await get(signed("photo.jpg", "width=300&format=png"))
    assert exact.code == 200 and decoded(exact).width == 300
    rotated = await get(signed("photo.jpg", "width=2500&format=jpeg", key=KEYS[1]))
    assert rotated.code == 200 and decoded(rotated).width == 2500, "the old key still verifies"

    url = signed("photo.jpg", "width=300&format=png")
    refusals = {
        "expired": signed("photo.jpg", "width=300", expires=int(time.time()) - 1),
        "tampered width": url.replace("width=300", "width=301"),
        "parameter added": url + "&quality=5",
        "parameter removed": url.replace("&format=png", ""),
        "wrong key": signed("photo.jpg", "width=300", key=b"not a key of ours"),
        "bad signature": url[:-3] + "abc",
        "non-ascii signature": url[:-3] + "%C3%A9",
        "no signature": url.split("&signature=")[0],
        "other image": url.replace("photo.jpg", "other.jpg"),
    }
    for why, bad in refusals.items():
        response = await get(bad)
        assert response.code == 403, why
        assert body_json(response)["error"], why
    # The order of the query does not matter: it is signed sorted.
    pieces = url.split("?")[1].split("&")
    shuffled = url.split("?")[0] + "?" + "&".join(reversed(pieces))
    assert (await get(shuffled)).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_decompression_bomb_costs_nothing_and_gets_422(api):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    # 30000 x 30000 claimed; a few hundred bytes of data.
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10000))
        + chunk(b"IEND", b"")
    )
    await stored(api, "bomb.png", bomb)
    response = await rendition(api, "bomb.png", "width=64")
    assert response.code == 422
    assert "30000x30000 pixels, over the limit of 100000000" in body_json(response)["error"]


@pytest.fixture
def max_pixels():
    return 100_000_000


@pytest.mark.gen_test(timeout=60)
async def test_the_pixel_limit_is_checked_from_the_header(api, store):
    await stored(api, "photo.jpg", real(".jpg", 200, 100))
    store.max_pixels = 200 * 100 - 1
    response = await rendition(api, "photo.jpg", "width=64")
    assert response.code == 422
    assert (
        "200x100 pixels, over the limit of 19999 (IMAGESTORE_MAX_PIXELS)"
        in body_json(response)["error"]
    )
    store.max_pixels = 200 * 100
    assert (await rendition(api, "photo.jpg", "width=64")).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_full_imaging_pool_answers_503_with_retry_after(api, store):
    await stored(api, "photo.jpg", real(".jpg", 200, 100))
    pool = store.imaging
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocked = [
        asyncio.ensure_future(
            pool.run(lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result())
        )
        for _ in range(pool.workers + pool.queue)
    ]
    await asyncio.sleep(0)
    response = await rendition(api, "photo.jpg", "width=64")
    assert response.code == 503
    assert response.headers["Retry-After"] == "1"
    assert "image workers are busy" in body_json(response)["error"]
    release.set()
    await asyncio.gather(*blocked)
    assert (await rendition(api, "photo.jpg", "width=64")).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_formats_libvips_does_not_read_get_422_and_their_original(api):
    await stored(api, "old.bmp", BMP)
    response = await rendition(api, "old.bmp", "width=64")
    assert response.code == 422
    assert "image/bmp images cannot be rendered" in body_json(response)["error"]
    assert (await api.download("pets", "old.bmp")).body == BMP


# --- the rendition cache -------------------------------------------------------------


@pytest.fixture
def rendition_cache_bytes():
    return 64 * 1024**2


@pytest.fixture
def store(backend, max_upload_bytes, rendition_cache_bytes, io_loop):
    image_store = open_store(
        backend.backends, max_upload_bytes, rendition_cache_bytes=rendition_cache_bytes
    )
    yield image_store
    io_loop.run_sync(image_store.settled)  # the renditions being cached
    image_store.close()


async def cached_keys(store, backend) -> set[str]:
    """The blobs that are not originals."""
    originals = set()
    for album in await store.list_albums():
        for image in await store.list_images(album):
            originals.add((await store.get_image(album, image)).blob_key)
    return set(backend.published()) - originals


@pytest.mark.gen_test(timeout=60)
async def test_a_rendition_is_made_once_then_served_from_the_cache(api, store, backend):
    await stored(api, "photo.jpg", real(".jpg", 300, 200))
    before = store.imaging.jobs_done
    first = await asyncio.gather(
        *(rendition(api, "photo.jpg", "width=64&format=webp") for _ in range(6))
    )
    assert {response.code for response in first} == {200}
    assert len({response.body for response in first}) == 1
    assert store.imaging.jobs_done == before + 1, "six at once, made once"
    await store.settled()
    assert len(await cached_keys(store, backend)) == 1
    hit = await rendition(api, "photo.jpg", "width=64&format=webp")
    assert hit.body == first[0].body and hit.headers["ETag"] == first[0].headers["ETag"]
    assert hit.headers["X-Image-Width"] == "64"
    part = await rendition(api, "photo.jpg", "width=64&format=webp", headers={"Range": "bytes=2-5"})
    assert part.code == 206 and part.body == first[0].body[2:6]
    assert store.imaging.jobs_done == before + 1, "the cache served them"
    # Another parameter is another rendition.
    assert (await rendition(api, "photo.jpg", "width=64&format=png")).code == 200
    assert store.imaging.jobs_done == before + 2
    # /metrics counts them by source: made (and shared by the five asking meanwhile
    # when they were), then from the cache.
    response = await api.http.fetch(api.base.removesuffix("/api/v1") + "/metrics")
    served = {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
        if sample.name == "imagestore_renditions_total"
    }
    assert served.get("made", 0) == 2 and served.get("cache", 0) == 2
    assert served.get("made", 0) + served.get("shared", 0) + served.get("cache", 0) == 9


@pytest.mark.gen_test(timeout=60)
async def test_renditions_go_with_their_original(api, store, backend):
    await stored(api, "photo.jpg", real(".jpg", 300, 200))
    assert (await api.put_image("pets", "other.jpg", real(".jpg", 200, 300))).code == 200
    for query in ("width=64", "width=128&format=png"):
        for name in ("photo.jpg", "other.jpg"):
            assert (await rendition(api, name, query)).code == 200
    await store.settled()
    assert len(await cached_keys(store, backend)) == 4
    assert (await api.request("DELETE", "/albums/pets/images/photo.jpg")).code == 200
    assert len(await cached_keys(store, backend)) == 2
    assert (await api.request("DELETE", "/albums/pets")).code == 200
    assert backend.published() == []


@pytest.mark.gen_test(timeout=60)
async def test_the_cache_stays_within_its_budget_evicting_the_least_recently_used(
    api, store, backend
):
    await stored(api, "photo.jpg", real(".png", 400, 400))
    store.rendition_cache_bytes = 0  # first, only learn the sizes
    sizes = {}
    for width in (64, 128, 256):
        sizes[width] = len((await rendition(api, "photo.jpg", f"width={width}&format=png")).body)
    await store.settled()
    assert await cached_keys(store, backend) == set()
    # Room for the two largest but one byte.
    store.rendition_cache_bytes = sizes[128] + sizes[256] - 1
    for width in sizes:
        assert (await rendition(api, "photo.jpg", f"width={width}&format=png")).code == 200
        await store.settled()
    record = await store.get_image("pets", "photo.jpg")
    kept = {
        width: await store.catalog.find_rendition(record.blob_key, f"w{width}h0inside.pngq0")
        for width in sizes
    }
    assert kept[256] is not None, "the newest stays"
    assert kept[64] is None and kept[128] is None, "the oldest went first, then the next"
    in_cache = sum(entry.size for entry in kept.values() if entry is not None)
    assert in_cache <= store.rendition_cache_bytes
    assert await cached_keys(store, backend) == {e.blob_key for e in kept.values() if e is not None}
    # An evicted rendition is made again.
    assert (await rendition(api, "photo.jpg", "width=64&format=png")).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_the_sweep_recovers_the_cache_after_a_crash(api, store, backend):
    await stored(api, "photo.jpg", real(".jpg", 300, 200))
    assert (await rendition(api, "photo.jpg", "width=64")).code == 200
    await store.settled()
    (kept,) = await cached_keys(store, backend)
    # A crash after the original's catalog delete, before its renditions went...
    await store.catalog.delete_image("pets", "photo.jpg", '{"event":"x","message":"x"}')
    # ... and one after a rendition's bytes were stored, before the catalog knew.
    writer = await store.blobs.begin("f" * 32)
    await writer.write(b"half-cached")
    await writer.publish()
    await store.sweep()
    assert backend.published() == [
        record for record in backend.published() if record not in (kept, "f" * 32)
    ]
    assert kept not in backend.published() and "f" * 32 not in backend.published()
    assert await store.catalog.drop_renditions(None) == []


@pytest.mark.gen_test(timeout=60)
async def test_a_rendition_over_its_time_limit_is_stopped_with_503(api, store):
    await stored(api, "photo.jpg", real(".jpg", 2000, 1500))
    store.render_seconds = 1e-6
    response = await rendition(api, "photo.jpg", "width=64")
    assert response.code == 503
    assert response.headers["Retry-After"] == "5"
    assert (
        "took longer than" in body_json(response)["error"]
        or "too long" in body_json(response)["error"]
    )
    store.render_seconds = 30.0
    assert (await rendition(api, "photo.jpg", "width=64")).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_eager_renditions_are_made_after_the_upload_answer(backend):
    eager = open_store(
        backend.backends, 1 << 20, rendition_cache_bytes=1 << 20, renditions_on_upload=(64, 256)
    )
    try:
        await eager.create_album("pets")
        upload = await eager.begin_upload("pets", "photo.jpg")
        await upload.write(real(".jpg", 300, 200))
        record = await upload.commit()
        await eager.settled()
        for key in ("w64h0inside.jpegq0", "w256h0inside.jpegq0"):
            cached = await eager.catalog.find_rendition(record.blob_key, key)
            assert cached is not None and cached.content_type == "image/jpeg", key
        assert (
            await eager.catalog.find_rendition(record.blob_key, "w64h0inside.jpegq0")
        ).width == 64
    finally:
        eager.close()


@pytest.mark.gen_test(timeout=60)
async def test_png_renditions_ignore_quality(api, store):
    await stored(api, "pic.png", real(".png", 100, 100))
    a = await rendition(api, "pic.png", "width=64&quality=10")
    b = await rendition(api, "pic.png", "width=64&quality=90")
    assert a.headers["ETag"] == b.headers["ETag"] and a.body == b.body
