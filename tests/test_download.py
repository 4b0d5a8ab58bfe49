"""Downloads: GET and HEAD of one image, with its headers, conditional requests,
byte ranges, and a large image streamed whole."""

import email.utils
import hashlib
import re
import time
from datetime import timedelta
from urllib.parse import unquote

import pytest
from conftest import body_json
from images import png

# An image of 1000 bytes, so that ranges are easy to reason about.
SIZE = 1000
DATA = png(padding=SIZE - (len(png(padding=1)) - 1))
assert len(DATA) == SIZE
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = f'"{SHA}"'


async def add_image(api) -> tuple[int, float]:
    """Album "a" holding DATA as "x.png"; returns bounds of its Last-Modified."""
    before = int(time.time())
    await api.create_album("a")
    response = await api.put_image("a", "x.png", DATA)
    assert response.code == 200
    return before, time.time()


async def get(api, headers=None, method="GET", image="x.png", query=""):
    path = f"/albums/a/images/{api.path(image)}{query}"
    return await api.request(method, path, headers=headers)


def http_date(value) -> str:
    return email.utils.format_datetime(value, usegmt=True)


def parse_date(header: str):
    return email.utils.parsedate_to_datetime(header)


def disposition_parts(header: str) -> tuple[str, str, str]:
    """(kind, filename, filename*) of a Content-Disposition header."""
    match = re.fullmatch(
        r'(inline|attachment); filename="([^"]*)"; filename\*=UTF-8\'\'(\S*)', header
    )
    assert match, header
    return match.group(1), match.group(2), match.group(3)


def assert_full(response) -> None:
    assert response.code == 200
    assert response.body == DATA
    assert response.headers["Content-Length"] == str(SIZE)
    assert "Content-Range" not in response.headers


# --- headers --------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_get_sends_the_bytes_and_their_headers(api):
    before, after = await add_image(api)
    response = await get(api)
    assert response.code == 200
    assert response.body == DATA
    assert hashlib.sha256(response.body).hexdigest() == SHA
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["ETag"] == ETAG
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Disposition"] == (
        "inline; filename=\"x.png\"; filename*=UTF-8''x.png"
    )
    last_modified = parse_date(response.headers["Last-Modified"])
    assert last_modified.tzinfo is not None
    assert before <= last_modified.timestamp() <= after
    assert "Content-Range" not in response.headers


@pytest.mark.gen_test
async def test_the_etag_is_the_sha256_of_each_image(api):
    await add_image(api)
    other = png(3, 3, padding=77)
    assert (await api.put_image("a", "y.png", other)).code == 200
    response = await get(api, image="y.png")
    assert response.headers["ETag"] == f'"{hashlib.sha256(other).hexdigest()}"'
    assert response.body == other
    assert (await get(api)).headers["ETag"] == ETAG


@pytest.mark.gen_test
async def test_head_sends_the_same_headers_and_no_body(api):
    await add_image(api)
    full = await get(api)
    response = await get(api, method="HEAD")
    assert response.code == 200
    assert response.body == b""
    for name in [
        "Content-Type",
        "Content-Length",
        "ETag",
        "Last-Modified",
        "Content-Disposition",
        "X-Content-Type-Options",
        "Accept-Ranges",
    ]:
        assert response.headers[name] == full.headers[name], name
    assert response.headers["Content-Length"] == str(SIZE)


@pytest.mark.gen_test
async def test_a_non_ascii_name_has_an_ascii_fallback_and_an_exact_utf8_name(api):
    await add_image(api)
    name = "café 猫.png"
    assert (await api.put_image("a", name, DATA)).code == 200
    for method in ["GET", "HEAD"]:
        response = await get(api, image=name, method=method)
        assert response.code == 200
        header = response.headers["Content-Disposition"]
        assert (
            header == "inline; filename=\"caf_ _.png\"; filename*=UTF-8''caf%C3%A9%20%E7%8C%AB.png"
        )
        kind, fallback, encoded = disposition_parts(header)
        assert kind == "inline"
        assert unquote(encoded, encoding="utf-8", errors="strict") == name
        assert fallback.isascii() and all(0x20 <= ord(ch) < 0x7F for ch in fallback)
        header.encode("latin-1")  # a header value any client can read


@pytest.mark.gen_test
async def test_quotes_and_percents_in_a_name_cannot_break_the_header(api):
    await add_image(api)
    name = 'say "hi" 100%;x.png'
    assert (await api.put_image("a", name, DATA)).code == 200
    header = (await get(api, image=name)).headers["Content-Disposition"]
    kind, fallback, encoded = disposition_parts(header)
    assert kind == "inline"
    assert fallback == "say _hi_ 100_;x.png"
    assert unquote(encoded) == name
    assert not set(encoded) & set(' ";\\')


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "query, kind",
    [
        ("?download=1", "attachment"),
        ("?download=true", "attachment"),
        ("?download=0", "inline"),
        ("?download=false", "inline"),
        ("", "inline"),
    ],
)
async def test_download_query_asks_for_an_attachment(api, query, kind):
    await add_image(api)
    for method in ["GET", "HEAD"]:
        response = await get(api, query=query, method=method)
        assert response.code == 200
        assert response.headers["Content-Disposition"] == (
            f"{kind}; filename=\"x.png\"; filename*=UTF-8''x.png"
        )
    assert (await get(api, query=query)).body == DATA


@pytest.mark.gen_test
async def test_a_missing_image_is_a_json_404(api):
    await add_image(api)
    response = await get(api, image="nope.png")
    assert response.code == 404
    assert body_json(response) == {"error": "image nope.png does not exist in album a"}
    response = await get(api, image="nope.png", method="HEAD")
    assert response.code == 404 and response.body == b""


# --- conditional requests -------------------------------------------------------------


def assert_not_modified(response) -> None:
    assert response.code == 304
    assert response.body == b""
    assert response.headers["ETag"] == ETAG
    assert "Content-Range" not in response.headers


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "if_none_match",
    [ETAG, f'"0000", {ETAG}', f'{ETAG},"0000"', f"W/{ETAG}", f'"aaaa", W/{ETAG} , "bbbb"', "*"],
    ids=["exact", "list", "list-first", "weak", "weak-in-list", "star"],
)
async def test_a_matching_if_none_match_is_304_without_body(api, method, if_none_match):
    await add_image(api)
    response = await get(api, {"If-None-Match": if_none_match}, method=method)
    assert_not_modified(response)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "if_none_match", ['"0000"', f'"{SHA[:-1]}"', SHA, f'W/"{SHA}x"', '"a", "b"']
)
async def test_a_non_matching_if_none_match_is_200(api, if_none_match):
    await add_image(api)
    assert_full(await get(api, {"If-None-Match": if_none_match}))


@pytest.mark.gen_test
async def test_if_modified_since(api):
    await add_image(api)
    last_modified = (await get(api)).headers["Last-Modified"]
    moment = parse_date(last_modified)
    for since in [
        last_modified,
        http_date(moment + timedelta(seconds=1)),
        http_date(moment + timedelta(days=3)),
    ]:
        assert_not_modified(await get(api, {"If-Modified-Since": since}))
        assert_not_modified(await get(api, {"If-Modified-Since": since}, method="HEAD"))
    for since in [
        http_date(moment - timedelta(seconds=1)),
        http_date(moment - timedelta(days=400)),
        "not a date",
        "",
    ]:
        assert_full(await get(api, {"If-Modified-Since": since}))


@pytest.mark.gen_test
async def test_if_none_match_takes_precedence_over_if_modified_since(api):
    await add_image(api)
    last_modified = (await get(api)).headers["Last-Modified"]
    response = await get(api, {"If-None-Match": '"0000"', "If-Modified-Since": last_modified})
    assert_full(response)
    moment = parse_date(last_modified)
    response = await get(
        api, {"If-None-Match": ETAG, "If-Modified-Since": http_date(moment - timedelta(days=1))}
    )
    assert_not_modified(response)


# --- ranges -----------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "range_header, start, end",
    [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, SIZE),
        ("bytes=-5", SIZE - 5, SIZE),
        ("bytes=5-5", 5, 6),
        ("bytes=0-", 0, SIZE),
        ("bytes=990-999", 990, SIZE),
        ("bytes=990-5000", 990, SIZE),  # an end past the size is clamped
        ("bytes=0-99999999999", 0, SIZE),
        ("bytes=-5000", 0, SIZE),  # a suffix longer than the image is all of it
        ("bytes=999-", 999, SIZE),
    ],
)
async def test_a_satisfiable_range_is_206(api, range_header, start, end):
    await add_image(api)
    response = await get(api, {"Range": range_header})
    assert response.code == 206
    assert response.body == DATA[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert response.headers["Content-Length"] == str(end - start)
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["ETag"] == ETAG
    head = await get(api, {"Range": range_header}, method="HEAD")
    assert head.code == 206 and head.body == b""
    assert head.headers["Content-Range"] == response.headers["Content-Range"]
    assert head.headers["Content-Length"] == str(end - start)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "range_header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"]
)
async def test_an_unsatisfiable_range_is_416(api, range_header):
    await add_image(api)
    response = await get(api, {"Range": range_header})
    assert response.code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert body_json(response) == {"error": f"the range is outside the image's {SIZE} bytes"}
    head = await get(api, {"Range": range_header}, method="HEAD")
    assert head.code == 416 and head.body == b""
    assert head.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,5-6",
        "bytes=0-9, 20-29",
        "bytes=abc",
        "bytes=5-2",
        "bytes=",
        "bytes=-",
        "items=0-5",
        "0-5",
        "bytes=1.5-3",
        "bytes=--5",
        "bytes=-5-",
        "bytes=+1-2",
    ],
)
async def test_several_or_malformed_ranges_get_the_whole_image(api, range_header):
    await add_image(api)
    assert_full(await get(api, {"Range": range_header}))


@pytest.mark.gen_test
async def test_if_range(api):
    await add_image(api)
    full = await get(api)
    response = await get(api, {"Range": "bytes=0-9", "If-Range": ETAG})
    assert response.code == 206 and response.body == DATA[:10]
    assert response.headers["Content-Range"] == f"bytes 0-9/{SIZE}"
    response = await get(api, {"Range": "bytes=0-9", "If-Range": full.headers["Last-Modified"]})
    assert response.code == 206 and response.body == DATA[:10]
    # Another (or weak) validator: the client's copy is stale, it gets everything.
    for stale in [
        '"0000"',
        f"W/{ETAG}",
        http_date(parse_date(full.headers["Last-Modified"]) - timedelta(days=1)),
    ]:
        assert_full(await get(api, {"Range": "bytes=0-9", "If-Range": stale}))
    # A stale If-Range turns an unsatisfiable range into the whole image, too.
    assert_full(await get(api, {"Range": f"bytes={SIZE}-", "If-Range": '"0000"'}))


@pytest.mark.gen_test
async def test_a_conditional_match_beats_a_range(api):
    await add_image(api)
    response = await get(api, {"Range": "bytes=0-9", "If-None-Match": ETAG})
    assert_not_modified(response)


# --- a large image --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_a_large_image_streams_whole_and_in_ranges(api):
    big = png(padding=20 * 1024 * 1024)
    digest = hashlib.sha256(big).hexdigest()
    await api.create_album("big")
    response = await api.put_image("big", "huge.png", big)
    assert response.code == 200
    assert body_json(response) == {"message": "huge.png image added to album big"}

    response = await api.download("big", "huge.png")
    assert response.code == 200
    assert response.headers["Content-Length"] == str(len(big))
    assert len(response.body) == len(big)
    assert hashlib.sha256(response.body).hexdigest() == digest
    assert response.headers["ETag"] == f'"{digest}"'

    # A range across the store's read chunks (256 KiB) and one at the very end.
    start, end = 262_000, 3 * 262_144 + 17
    response = await api.download("big", "huge.png", headers={"Range": f"bytes={start}-{end - 1}"})
    assert response.code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(big)}"
    assert response.body == big[start:end]
    response = await api.download("big", "huge.png", headers={"Range": "bytes=-100"})
    assert response.code == 206 and response.body == big[-100:]
