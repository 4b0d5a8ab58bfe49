"""Who may call the API and from where: API keys (401 + WWW-Authenticate, Bearer or
X-API-Key, public or private reads, key files, nothing in the logs, the OpenAPI
document's security), CORS (preflights, simple requests, any or narrowed origins,
errors included), and the headers every response carries (nosniff, CSP)."""

import hashlib
import http.client
import json
import signal
import time

import pytest
from conftest import Api, body_json, multipart_body
from images import png
from openapi_spec_validator import validate
from process import free_port, path_of, request, serve
from wire import Closed, Wire, request_bytes

from handlers import make_app
from handlers.access import AccessPolicy

KEYS = ("k3y-alpha-7f2c9e41d0b8a6", "k3y-beta-94ab12cd56ef03")
GOOD = KEYS[0]
IMAGE = png(2, 2)

# Every way of presenting no valid key: each must be refused.
BAD_CREDENTIALS = {
    "no key": {},
    "wrong bearer": {"Authorization": "Bearer not-the-key"},
    "truncated bearer": {"Authorization": f"Bearer {GOOD[:-1]}"},
    "bearer with a suffix": {"Authorization": f"Bearer {GOOD}0"},
    "empty bearer": {"Authorization": "Bearer "},
    "wrong X-API-Key": {"X-API-Key": "x" * len(GOOD)},
    "truncated X-API-Key": {"X-API-Key": GOOD[:-1]},
    "half a key": {"X-API-Key": GOOD[: len(GOOD) // 2]},
    "key without a scheme": {"Authorization": GOOD},
    "key as Basic credentials": {"Authorization": f"Basic {GOOD}"},
}
# Every way of presenting a valid key: each must be accepted.
GOOD_CREDENTIALS = {
    "bearer": {"Authorization": f"Bearer {GOOD}"},
    "X-API-Key": {"X-API-Key": GOOD},
    "the second key": {"Authorization": f"Bearer {KEYS[1]}"},
    "bearer, scheme in lower case": {"Authorization": f"bearer {KEYS[1]}"},
}
AUTH = GOOD_CREDENTIALS["bearer"]
ATTEMPTS = len(BAD_CREDENTIALS) + len(GOOD_CREDENTIALS)

CHANGES = ["create album", "rename album", "delete album", "post image", "put image"]
CHANGES += ["rename image", "delete image"]


@pytest.fixture
def access():
    return AccessPolicy(keys=KEYS)


@pytest.fixture
def app(store, upload_limits, access):
    return make_app(store, limits=upload_limits, access=access)


async def albums(api: Api) -> list[str]:
    response = await api.request("GET", "/albums", headers=AUTH)
    assert response.code == 200, response.body
    return body_json(response)["albumList"]


async def images(api: Api, album: str) -> list[str]:
    response = await api.request("GET", f"/albums/{Api.path(album)}/images", headers=AUTH)
    assert response.code == 200, response.body
    return body_json(response)["imageList"]


async def add_album(api: Api, album: str) -> None:
    response = await api.request("POST", "/albums", {"albumName": album}, headers=AUTH)
    assert response.code == 200, response.body


async def add_image(api: Api, album: str, image: str, data: bytes = IMAGE) -> None:
    response = await api.request(
        "PUT", f"/albums/{Api.path(album, 'images', image)}", data, headers=AUTH
    )
    assert response.code == 200, response.body


async def prepare(api: Api, change: str) -> None:
    """What attempts 0..ATTEMPTS-1 of ``change`` act on."""
    await add_album(api, "pets")
    for i in range(ATTEMPTS):
        if change == "rename album":
            await add_album(api, f"old{i}")
        elif change == "delete album":
            await add_album(api, f"doomed{i}")
        elif change == "rename image":
            await add_image(api, "pets", f"img{i}.png")
        elif change == "delete image":
            await add_image(api, "pets", f"del{i}.png")


async def attempt(api: Api, change: str, i: int, headers: dict):
    """Attempt number ``i`` of ``change`` with ``headers``."""
    if change == "create album":
        return await api.request("POST", "/albums", {"albumName": f"new{i}"}, headers=headers)
    if change == "rename album":
        return await api.request(
            "PATCH", f"/albums/old{i}", {"albumName": f"renamed{i}"}, headers=headers
        )
    if change == "delete album":
        return await api.request("DELETE", f"/albums/doomed{i}", headers=headers)
    if change == "post image":
        content_type, body = multipart_body(f"up{i}.png", IMAGE)
        return await api.request(
            "POST",
            "/albums/pets/images",
            body,
            headers={**headers, "Content-Type": content_type},
        )
    if change == "put image":
        return await api.request("PUT", f"/albums/pets/images/put{i}.png", IMAGE, headers=headers)
    if change == "rename image":
        return await api.request(
            "PATCH",
            f"/albums/pets/images/img{i}.png",
            {"imageName": f"moved{i}.png"},
            headers=headers,
        )
    assert change == "delete image"
    return await api.request("DELETE", f"/albums/pets/images/del{i}.png", headers=headers)


async def took_effect(api: Api, change: str, i: int) -> bool:
    if change == "create album":
        return f"new{i}" in await albums(api)
    if change == "rename album":
        listed = await albums(api)
        assert (f"old{i}" in listed) != (f"renamed{i}" in listed)
        return f"renamed{i}" in listed
    if change == "delete album":
        return f"doomed{i}" not in await albums(api)
    listed = await images(api, "pets")
    if change == "post image":
        return f"up{i}.png" in listed
    if change == "put image":
        return f"put{i}.png" in listed
    if change == "rename image":
        assert (f"img{i}.png" in listed) != (f"moved{i}.png" in listed)
        return f"moved{i}.png" in listed
    return f"del{i}.png" not in listed


def assert_unauthorized(response) -> None:
    assert response.code == 401, (response.code, response.body)
    assert body_json(response)["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer "), response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- API keys ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("change", CHANGES)
async def test_each_change_needs_a_valid_key(api, change):
    await prepare(api, change)
    for i, (label, headers) in enumerate(BAD_CREDENTIALS.items()):
        response = await attempt(api, change, i, headers)
        assert response.code == 401, (label, response.code, response.body)
        assert_unauthorized(response)
        assert not await took_effect(api, change, i), f"{change} happened with {label}"
    for i, (label, headers) in enumerate(GOOD_CREDENTIALS.items(), start=len(BAD_CREDENTIALS)):
        response = await attempt(api, change, i, headers)
        assert response.code == 200, (label, response.code, response.body)
        assert "message" in body_json(response)
        assert await took_effect(api, change, i), f"{change} did not happen with {label}"


READS = [
    ("GET", "/albums"),
    ("GET", "/albums/pets/images"),
    ("GET", "/albums/pets/images/cat.png"),
    ("HEAD", "/albums/pets/images/cat.png"),
]
PUBLIC_READS = AccessPolicy(keys=KEYS, public_read=True)
PRIVATE_READS = AccessPolicy(keys=KEYS, public_read=False)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("access", [PUBLIC_READS, PRIVATE_READS], ids=["public", "private"])
async def test_reads_need_a_key_only_when_reads_are_private(api, base_url, access):
    await add_album(api, "pets")
    await add_image(api, "pets", "cat.png")
    for method, path in READS:
        anonymous = await api.request(method, path)
        wrong = await api.request(method, path, headers={"X-API-Key": GOOD[:-1]})
        if access.public_read:
            assert anonymous.code == 200, (method, path, anonymous.code)
        else:
            for refused in (anonymous, wrong):
                assert refused.code == 401, (method, path, refused.code)
                assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
                if method != "HEAD":
                    assert_unauthorized(refused)
        for headers in GOOD_CREDENTIALS.values():
            response = await api.request(method, path, headers=headers)
            assert response.code == 200, (method, path, headers, response.code)
    got = await api.request("GET", "/albums/pets/images/cat.png", headers=AUTH)
    assert got.body == IMAGE
    # Whatever the policy, the health check needs no key.
    health = await api.http.fetch(base_url + "/healthz", raise_error=False)
    assert health.code == 200 and body_json(health)["status"] == "ok"


# --- the OpenAPI document ------------------------------------------------------------

CHANGING_OPERATIONS = {
    ("/albums", "post"),
    ("/albums/{album}", "patch"),
    ("/albums/{album}", "delete"),
    ("/albums/{album}/images", "post"),
    ("/albums/{album}/images/{image}", "put"),
    ("/albums/{album}/images/{image}", "patch"),
    ("/albums/{album}/images/{image}", "delete"),
}
READ_OPERATIONS = {
    ("/albums", "get"),
    ("/albums/{album}/images", "get"),
    ("/albums/{album}/images/{image}", "get"),
    ("/albums/{album}/images/{image}", "head"),
    ("/albums/{album}/archive", "get"),
}
# Outside the API keys: /healthz is public; /metrics has a key of its own (its 401).
ROOT_OPERATIONS = {("/healthz", "get"), ("/metrics", "get")}
OPERATION_KEYS = ("get", "head", "post", "put", "patch", "delete")


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in OPERATION_KEYS
    }


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "access",
    [AccessPolicy(), PUBLIC_READS, PRIVATE_READS],
    ids=["no keys", "keys, public reads", "keys, private reads"],
)
async def test_the_openapi_document_declares_the_keys_it_needs(api, base_url, access):
    response = await api.http.fetch(base_url + "/swagger/openapi.json", raise_error=False)
    assert response.code == 200  # the document itself needs no key
    document = json.loads(response.body)
    validate(document)
    ops = operations(document)
    assert CHANGING_OPERATIONS | READ_OPERATIONS | ROOT_OPERATIONS == set(ops)
    assert "security" not in ops[("/metrics", "get")]
    ops.pop(("/metrics", "get"))
    schemes = document.get("components", {}).get("securitySchemes")
    if not access.enabled:
        assert schemes is None
        assert "security" not in document
        for key, operation in ops.items():
            assert "security" not in operation, key
            assert "401" not in operation["responses"], key
        return
    assert schemes == {
        "bearerKey": {"type": "http", "scheme": "bearer"},
        "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    protected = CHANGING_OPERATIONS | (set() if access.public_read else READ_OPERATIONS)
    for key, operation in ops.items():
        if key in protected:
            assert operation["security"] == [{"bearerKey": []}, {"headerKey": []}], key
            ref = operation["responses"]["401"]["$ref"]
            name = ref.removeprefix("#/components/responses/")
            assert "key" in document["components"]["responses"][name]["description"]
        else:
            assert "security" not in operation, key
            assert "401" not in operation["responses"], key


# --- CORS ----------------------------------------------------------------------------

NARROW = AccessPolicy(cors_origins=("https://a.example",))
NARROW_WITH_KEYS = AccessPolicy(keys=KEYS, public_read=False, cors_origins=("https://a.example",))
ROUTES = ["/albums", "/albums/pets", "/albums/pets/images", "/albums/pets/images/cat.png"]


def header_set(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def preflight_headers(origin: str, method: str = "PUT") -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
    }


def assert_allowed_preflight(response, allowed_origin: str, method: str) -> None:
    assert response.code == 204, (response.code, response.body)
    assert response.headers["Access-Control-Allow-Origin"] == allowed_origin
    assert method.lower() in header_set(response.headers["Access-Control-Allow-Methods"])
    assert {"authorization", "x-api-key", "content-type"} <= header_set(
        response.headers["Access-Control-Allow-Headers"]
    )
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "WWW-Authenticate" not in response.headers


async def setup_pets(api: Api) -> None:
    await add_album(api, "pets")
    await add_image(api, "pets", "cat.png")


@pytest.mark.gen_test
@pytest.mark.parametrize("access", [AccessPolicy()], ids=["default"])
async def test_cors_by_default_any_origin(api, access):
    await setup_pets(api)
    for route in ROUTES:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            response = await api.request(
                "OPTIONS", route, headers=preflight_headers("https://x.example", method)
            )
            assert_allowed_preflight(response, "*", method)
    simple = await api.request("GET", "/albums/pets/images/cat.png", headers={"Origin": "null"})
    assert simple.code == 200 and simple.body == IMAGE
    assert simple.headers["Access-Control-Allow-Origin"] == "*"
    exposed = header_set(simple.headers["Access-Control-Expose-Headers"])
    assert {"etag", "content-disposition", "content-range", "retry-after"} <= exposed
    changed = await api.request(
        "POST", "/albums", {"albumName": "cors"}, headers={"Origin": "https://x.example"}
    )
    assert changed.code == 200
    assert changed.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test
@pytest.mark.parametrize("access", [NARROW], ids=["narrowed"])
async def test_cors_narrowed_to_one_origin(api, access):
    await setup_pets(api)
    for route in ROUTES:
        allowed = await api.request(
            "OPTIONS", route, headers=preflight_headers("https://a.example", "DELETE")
        )
        assert_allowed_preflight(allowed, "https://a.example", "DELETE")
        assert "origin" in header_set(allowed.headers.get("Vary"))
        simple = await api.request("GET", route, headers={"Origin": "https://a.example"})
        assert simple.code == (405 if route == "/albums/pets" else 200), (route, simple.code)
        assert simple.headers["Access-Control-Allow-Origin"] == "https://a.example"
        assert "origin" in header_set(simple.headers.get("Vary"))
    others = [
        "https://b.example",
        "http://a.example",  # another scheme is another origin
        "https://a.example.evil.example",
        "https://a.example:8443",
        "null",
    ]
    for origin in others:
        refused = await api.request("OPTIONS", "/albums", headers=preflight_headers(origin))
        assert refused.code < 500
        for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods"):
            assert name not in refused.headers, (origin, name)
        simple = await api.request("GET", "/albums", headers={"Origin": origin})
        assert simple.code == 200  # served; the browser keeps the answer from the page
        assert "Access-Control-Allow-Origin" not in simple.headers, origin
        # The answer depends on the origin: caches must not hand it to a.example.
        assert "origin" in header_set(simple.headers.get("Vary")), origin
    for path in ("/albums", "/albums/pets/images/cat.png"):
        plain = await api.request("GET", path)  # no Origin at all (an <img>, curl)
        assert "Access-Control-Allow-Origin" not in plain.headers
        assert "origin" in header_set(plain.headers.get("Vary")), path


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "access",
    [AccessPolicy(keys=KEYS, public_read=False), NARROW_WITH_KEYS],
    ids=["any origin", "narrowed"],
)
async def test_errors_carry_cors_and_preflights_need_no_key(api, access):
    origin = "https://a.example"
    allowed = "*" if "*" in access.cors_origins else origin
    await setup_pets(api)
    errors = [
        ("GET", "/albums/ghost/images", None, AUTH, 404),
        ("GET", "/nothing/here", None, AUTH, 404),
        ("GET", "/albums", None, {}, 401),
        ("POST", "/albums", {"albumName": "x"}, {"X-API-Key": "nope"}, 401),
        ("DELETE", "/albums/pets", None, {}, 401),
        ("POST", "/albums", b"{not json", AUTH, 400),
        ("PUT", "/albums", b"", AUTH, 405),
        ("PUT", "/albums/pets/images/cat.png", IMAGE, AUTH, 409),
    ]
    for method, path, body, headers, status in errors:
        response = await api.request(method, path, body, headers={**headers, "Origin": origin})
        assert response.code == status, (method, path, response.code, response.body)
        assert body_json(response)["error"]
        assert response.headers["Access-Control-Allow-Origin"] == allowed, (method, path)
        assert "www-authenticate" in header_set(response.headers["Access-Control-Expose-Headers"])
    for route in ROUTES:
        for method in ("GET", "PATCH", "DELETE"):
            response = await api.request(
                "OPTIONS", route, headers=preflight_headers(origin, method)
            )
            assert_allowed_preflight(response, allowed, method)


# --- headers on every response -------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("access", [PUBLIC_READS], ids=["keys"])
async def test_every_response_says_nosniff_and_api_json_a_strict_csp(api, base_url, access):
    await setup_pets(api)
    content_type, upload = multipart_body("dog.png", IMAGE)
    api_calls = [
        ("GET", "/albums", None, {}, 200),
        ("POST", "/albums", {"albumName": "birds"}, AUTH, 200),
        ("POST", "/albums/pets/images", upload, {**AUTH, "Content-Type": content_type}, 200),
        ("GET", "/albums/pets/images", None, {}, 200),
        ("GET", "/albums/pets/images/cat.png", None, {}, 200),
        ("HEAD", "/albums/pets/images/cat.png", None, {}, 200),
        ("GET", "/albums/pets/images/cat.png", None, {"Range": "bytes=0-9"}, 206),
        ("GET", "/albums/pets/images/cat.png", None, {"Range": "bytes=9999-"}, 416),
        ("GET", "/albums/ghost/images", None, {}, 404),
        ("GET", "/albums/pets/images/%C3%28", None, {}, 400),
        ("POST", "/albums", b"[]", AUTH, 400),
        ("POST", "/albums", b"x" * 70000, AUTH, 413),
        ("PUT", "/albums/pets/images/x.txt", b"plain text, no image", AUTH, 415),
        ("DELETE", "/albums", None, AUTH, 405),
        ("POST", "/albums", {"albumName": "x"}, {}, 401),
        ("OPTIONS", "/albums", None, preflight_headers("https://x.example"), 204),
    ]
    for method, path, body, headers, status in api_calls:
        response = await api.request(method, path, body, headers=headers)
        assert response.code == status, (method, path, response.code, response.body)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
        if response.code == 204:
            continue
        csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (method, path)
        if method != "HEAD" and not response.headers["Content-Type"].startswith("image/"):
            assert body_json(response)  # JSON, and carrying the API's CSP (checked above)

    root = [
        ("/healthz", 200),
        ("/nowhere", 404),
        ("/swagger", 301),
        ("/swagger/", 301),
        ("/swagger/index.html", 200),
        ("/swagger/swagger-ui.css", 200),
        ("/swagger/swagger-ui-bundle.js", 200),
        ("/swagger/swagger-initializer.js", 200),
        ("/swagger/openapi.json", 200),
        ("/swagger/doc.json", 200),
        ("/swagger/no-such-asset.js", 404),
    ]
    for path, status in root:
        response = await api.http.fetch(base_url + path, raise_error=False, follow_redirects=False)
        assert response.code == status, (path, response.code)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        if path in ("/healthz", "/nowhere", "/swagger/openapi.json"):
            assert "default-src 'none'" in response.headers["Content-Security-Policy"], path


# --- the real process: key files, environment, logs ----------------------------------

KEY_FILE = f"""# imagestore API keys: one per line
{KEYS[0]}   # the deploy bot

\t
# k3y-retired-000000000000 (revoked)
   {KEYS[1]}
"""
WRONG_KEYS = ["k3y-retired-000000000000", "the deploy bot", KEYS[0][:-1], KEYS[1][:-3]]


def serve_until_healthy(run, tmp_path, env: dict[str, str]):
    """imagestore on a free port, ready once /healthz answers (GET /albums may need a
    key, so the usual readiness probe cannot be used)."""
    for _attempt in range(3):
        port = free_port()
        proc = run("--port", str(port), "--data", str(tmp_path / "data"), env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.popen.poll() is None:
            try:
                if f":{port}/api/v1" in proc.log() and request(port, "GET", "/healthz")[0] == 200:
                    return proc, port
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        if "cannot listen" not in proc.log():
            break
    raise AssertionError(f"imagestore did not start:\n{proc.log()}")


def test_key_file_private_reads_and_no_key_in_the_debug_log(run, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(KEY_FILE)
    env = {
        "IMAGESTORE_API_KEYS": f"@{key_file}",
        "IMAGESTORE_PUBLIC_READ": "false",
        "IMAGESTORE_LOG_LEVEL": "DEBUG",
    }
    proc, port = serve_until_healthy(run, tmp_path, env)
    albums_path = path_of()
    body = json.dumps({"albumName": "pets"}).encode()
    json_type = {"Content-Type": "application/json"}
    for key in WRONG_KEYS:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            status, answer_headers, answer = request(
                port, "POST", albums_path, body, {**json_type, **headers}
            )
            assert status == 401, (key, status, answer)
            assert answer_headers["www-authenticate"].startswith("Bearer ")
            assert request(port, "GET", albums_path, headers=headers)[0] == 401
    assert request(port, "GET", albums_path)[0] == 401  # reads are private
    assert request(port, "GET", "/healthz")[0] == 200  # the health check is not
    for key in KEYS:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            status, _, answer = request(port, "GET", albums_path, headers=headers)
            assert status == 200, (key, answer)
    bearer = {"Authorization": f"Bearer {KEYS[1]}"}
    status, _, answer = request(port, "POST", albums_path, body, {**json_type, **bearer})
    assert status == 200, answer
    # An upload without a key is refused before its body is sent.
    with Wire(port) as wire:
        wire.send(
            request_bytes(
                "PUT",
                path_of("pets", "images", "cat.png"),
                {"Content-Length": str(len(IMAGE)), "Expect": "100-continue"},
            )
        )
        refused = wire.read_response(skip_continue=False)
    assert refused.status == 401 and json.loads(refused.body)["error"]
    status, _, answer = request(
        port, "PUT", path_of("pets", "images", "cat.png"), IMAGE, {"X-API-Key": KEYS[0]}
    )
    assert status == 200, answer
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    log = proc.log()
    assert "access control on: 2 API key(s); reads need a key too" in log
    assert " DEBUG " in log  # the most talkative level was on
    assert log.count(" 401 ") >= 2 * len(WRONG_KEYS)  # the refusals were logged...
    for secret in [*KEYS, *WRONG_KEYS]:  # ...but no key, right or wrong, nor its digest
        for form in (secret, hashlib.sha256(secret.encode()).hexdigest()):
            assert form not in log, f"{form!r} appears in the log"


def test_cors_origins_and_key_list_from_the_environment(run, tmp_path):
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "data")),
            {"IMAGESTORE_API_KEYS": ",".join(KEYS), "IMAGESTORE_CORS_ORIGINS": "https://a.example"},
        ),
    )
    ours, theirs = {"Origin": "https://a.example"}, {"Origin": "https://b.example"}
    status, headers, _ = request(port, "GET", path_of(), headers=ours)  # reads public by default
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://a.example"
    assert "origin" in header_set(headers["vary"])
    status, headers, _ = request(port, "GET", path_of(), headers=theirs)
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = request(
        port, "OPTIONS", path_of(), headers=preflight_headers("https://a.example", "POST")
    )
    assert status == 204 and headers["access-control-allow-origin"] == "https://a.example"
    assert "post" in header_set(headers["access-control-allow-methods"])
    status, headers, _ = request(
        port, "OPTIONS", path_of(), headers=preflight_headers("https://b.example", "POST")
    )
    assert "access-control-allow-origin" not in headers
    body = json.dumps({"albumName": "pets"}).encode()
    status, headers, answer = request(port, "POST", path_of(), body, ours)
    assert status == 401 and headers["access-control-allow-origin"] == "https://a.example"
    assert headers["x-content-type-options"] == "nosniff"
    status, _, answer = request(port, "POST", path_of(), body, {**ours, "X-API-Key": KEYS[1]})
    assert status == 200, answer
    assert proc.popen.poll() is None


def test_a_key_sent_with_bytes_tornado_refuses_is_never_logged(run, tmp_path):
    # Tornado refuses a header value holding a control byte and logs why, quoting the
    # value: a key (or a mistyped one) followed by such a byte must not reach the log.
    secret = "s3cr3t-Key-0123456789abcdef"
    env = {"IMAGESTORE_API_KEYS": secret, "IMAGESTORE_LOG_LEVEL": "DEBUG"}
    proc, port = serve_until_healthy(run, tmp_path, env)
    answers = []
    for name in ("Authorization", "X-API-Key", "Proxy-Authorization", "Cookie", "X-Other"):
        for value in (
            f"Bearer {secret}\x00".encode(),
            f"{secret}\x01tail".encode(),
            f"{secret}\x7f".encode(),
            f"Bearer {secret}\x1b[0m".encode(),
            secret.encode() + b"\xff\xfe",
            b"\x0b" + secret.encode(),
        ):
            with Wire(port) as wire:
                wire.send(request_bytes("POST", path_of(), [(name, value)], b""))
                try:
                    answers.append(wire.read_response().status)
                except Closed:
                    answers.append(None)
    assert set(answers) <= {400, 401, None}, answers
    assert request(port, "GET", "/healthz")[0] == 200
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    log = proc.log()
    assert "Malformed HTTP message" in log  # Tornado did refuse and say so...
    assert "(value not logged)" in log
    for form in (secret, secret[:12], secret[-12:], hashlib.sha256(secret.encode()).hexdigest()):
        assert form not in log, f"{form!r} appears in the log"  # ...without the value
