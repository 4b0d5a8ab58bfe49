"""No input gives a 500: arbitrary header values for every header the service reads,
on every endpoint and method, and arbitrary JSON for every JSON endpoint, sent over
raw sockets to a live service. Each answer is a 2xx/3xx, or a 4xx with a JSON
sentence (or Tornado's bare 400 for a head it cannot parse, or a closed connection),
and the service log holds no traceback."""

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import png
from process import SERVICE, Proc, clean_env, create_album, free_port, path_of, request
from wire import Closed, Response, Wire, request_bytes

IMAGE = png(padding=2000)
HEADERS = [
    "Content-Length",
    "Content-Type",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
    "Authorization",
    "X-API-Key",
    "Origin",
    "X-Forwarded-For",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Transfer-Encoding",
    "Expect",
    "Host",
    "Connection",
    "Accept",
    "X-Request-ID",
]
ENDPOINTS = [
    (method, path)
    for path, methods in [
        (path_of(), ("GET", "HEAD", "POST", "OPTIONS", "DELETE")),
        (path_of("a"), ("DELETE", "PATCH", "GET", "OPTIONS")),
        (path_of("a", "images"), ("GET", "POST", "OPTIONS")),
        (path_of("a", "images", "x.png"), ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")),
        (path_of("a", "images", "x.png") + "?download=1", ("GET",)),
        (path_of("ghost", "images", "x.png"), ("GET", "PUT")),
        ("/healthz", ("GET", "HEAD")),
        ("/api/v1/nowhere", ("GET", "POST")),
    ]
    for method in methods
]
JSON_ENDPOINTS = [
    ("POST", path_of(), "albumName"),
    ("PATCH", path_of("a"), "albumName"),
    ("PATCH", path_of("a", "images", "x.png"), "imageName"),
]

# Header values as they arrive on the wire: any byte but CR and LF (which end a line).
header_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: str(n).encode()),
    st.text("0123456789", min_size=19, max_size=40).map(str.encode),
    # int() refuses more than 4300 digits; hypothesis seldom makes strings that long.
    st.integers(min_value=4290, max_value=9000).map(lambda n: b"7" * n),
    st.text("0123456789²³¹٠١٢٣٤٥٦٧٨٩０１２３𝟗", min_size=1, max_size=30).map(str.encode),
    st.sampled_from([b" 12", b"12 ", b"1_000", b"0x10", b"1e3", b"+5", b"-0", b"", b"12, 12"]),
)
ranges = st.one_of(
    st.tuples(numbers, numbers).map(lambda p: b"bytes=" + p[0] + b"-" + p[1]),
    st.tuples(numbers).map(lambda p: b"bytes=-" + p[0]),
    st.tuples(numbers).map(lambda p: b"bytes=" + p[0] + b"-"),
    header_bytes.map(lambda b: b"bytes=" + b),
)
values = st.one_of(header_bytes, numbers, ranges, st.text(max_size=100).map(str.encode))


def json_values():
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=30,
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-5xx")
    port = free_port()
    log_path = folder / "imagestore.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                SERVICE,
                "--port",
                str(port),
                "--data",
                str(folder / "db"),
                "--log-level",
                "DEBUG",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(IMAGESTORE_WORKERS="1"),
        )
    proc = Proc(popen, log_path)
    try:
        proc.wait_ready(port)
        create_album(port, "a")
        assert request(port, "PUT", path_of("a", "images", "x.png"), IMAGE)[0] == 200
        yield port, proc
    finally:
        popen.kill()
        popen.wait(10)


def exchange(port: int, raw: bytes) -> Response | None:
    """Send ``raw`` and read the answer. None: the server hung up without one, or is
    still waiting for a body longer than what was sent (after a second)."""
    with Wire(port, timeout=1.0) as wire:
        wire.send(raw)
        try:
            response = wire.read_response(method=raw.split(b" ", 1)[0].decode("latin-1"))
        except (Closed, TimeoutError, OSError):
            response = None
    SEEN["answered" if response is not None else "unanswered"] += 1
    return response


def assert_refused_or_served(response: Response | None, what: tuple) -> None:
    if response is None:
        return
    assert response.status < 500, (response, what)
    if what[0] == "HEAD":
        return  # no body to check
    if response.status >= 400 and response.body:
        assert response.header("content-type").startswith("application/json"), (response, what)
        body = json.loads(response.body)
        assert isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)
    elif response.status >= 400:
        # Tornado's own answer to a head it cannot parse: a bare 400, then it hangs up.
        assert response.status == 400, (response, what)


def restore(port: int, response: Response | None, method: str) -> None:
    """A change that went through (a rename, a delete) may have moved album "a" or
    its image "x.png", which the next examples want: put them back."""
    if response is None or response.status != 200 or method in ("GET", "HEAD", "OPTIONS"):
        return
    if request(port, "HEAD", path_of("a", "images", "x.png"))[0] != 200:
        request(port, "POST", path_of(), json.dumps({"albumName": "a"}).encode())
        request(port, "PUT", path_of("a", "images", "x.png"), IMAGE)


def assert_no_traceback(proc: Proc) -> None:
    log = proc.log()
    for sign in ("Traceback", "Uncaught exception", "tornado.access: 500 "):
        assert sign not in log, log[-5000:]


TRIED = {"headers": 0, "json": 0}
SEEN = {"answered": 0, "unanswered": 0}


NUMERIC = {"Content-Length": numbers, "Range": ranges}


@pytest.mark.parametrize("header", HEADERS)
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(endpoint=st.sampled_from(ENDPOINTS), data=st.data())
def test_no_header_value_gives_a_server_error(service, header, endpoint, data):
    port, proc = service
    value = data.draw(st.one_of(NUMERIC[header], values) if header in NUMERIC else values)
    method, path = endpoint
    body = b'{"albumName": "zz"}' if method in ("POST", "PATCH") and "images" not in path else b""
    if method == "PUT":
        body = IMAGE[:100]
    headers: list[tuple[str, str | bytes]] = [(header, value)]
    if header not in ("Content-Length", "Transfer-Encoding"):
        headers.append(("Content-Length", str(len(body))))
    elif value.strip().isdigit() and len(value.strip()) < 6:
        body = (body * 100_000)[: int(value)]  # the body it announces, so it is answered
    raw = request_bytes(method, path, headers, body)
    if header == "Host":  # request_bytes adds one; the value under test replaces it
        raw = raw.replace(b"Host: 127.0.0.1\r\n", b"", 1)
    TRIED["headers"] += 1
    response = exchange(port, raw)
    assert_refused_or_served(response, (method, path, header, value))
    restore(port, response, method)


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(JSON_ENDPOINTS),
    document=st.one_of(
        json_values().map(lambda v: json.dumps(v).encode()),
        json_values().map(lambda v: json.dumps({"albumName": v, "imageName": v}).encode()),
        st.integers(min_value=33, max_value=20000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=33, max_value=20000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(min_value=1, max_value=20000).map(lambda n: b"[" * n),
        st.binary(max_size=2000),
        st.sampled_from(
            [
                b'{"albumName": "\\ud800"}',
                b'{"imageName": "\\udfff.png"}',
                b'{"albumName": 1e999999}',
                b'{"albumName": NaN}',
                b'{"albumName": "a", "albumName": "b"}',
                b'{"albumName": ' + b"9" * 10000 + b"}",
                b"\xef\xbb\xbf{}",
            ]
        ),
    ),
)
def test_no_json_body_gives_a_server_error(service, endpoint, document):
    port, proc = service
    method, path, _field = endpoint
    raw = request_bytes(
        method,
        path,
        {"Content-Type": "application/json", "Content-Length": str(len(document))},
        document,
    )
    TRIED["json"] += 1
    response = exchange(port, raw)
    assert_refused_or_served(response, (method, path, document[:80]))
    restore(port, response, method)


def test_deep_json_is_refused_with_a_sentence(service):
    port, _ = service
    for document in (b"[" * 33 + b"]" * 33, b'{"albumName":' * 3000 + b'"x"' + b"}" * 3000):
        status, _, body = request(
            port, "POST", path_of(), document, {"Content-Type": "application/json"}
        )
        assert status == 400
        assert json.loads(body) == {"error": "the request body nests deeper than 32 levels"}
    status, _, body = request(port, "POST", path_of(), b"[" * 32 + b"]" * 32)
    assert (status, json.loads(body)) == (400, {"error": "the request body must be a JSON object"})


def test_the_service_logged_no_traceback(service):
    # Last in the module: everything above ran against this process.
    _, proc = service
    assert TRIED["headers"] >= 60 * len(HEADERS) and TRIED["json"] >= 400, TRIED
    print(f"inputs tried: {TRIED}; {SEEN}")
    # A test that is never answered proves nothing: most examples must be.
    assert SEEN["answered"] > 0.8 * (SEEN["answered"] + SEEN["unanswered"]), SEEN
    assert_no_traceback(proc)
