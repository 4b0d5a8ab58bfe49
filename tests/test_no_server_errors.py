"""No input gives a 500: arbitrary header values for every header the service reads,
on every endpoint and method, arbitrary methods and request targets (names, query
strings, raw bytes), and arbitrary JSON for every JSON endpoint, sent over
raw sockets to a live service. Each answer is a 2xx/3xx, or a 4xx with a JSON
sentence (or, only where Tornado itself refuses the request, its bare 400 or a closed
connection), and the service log holds no traceback, checked after every example so
that hypothesis shrinks the input that caused one.

Where Tornado answers alone (see ``tornado_refuses``): a header value with a control
byte other than HTAB, a bad or missing Host, a Transfer-Encoding: chunked body that
is not chunked (or a chunk-size line over 64 bytes: it hangs up), and bad framing
sent to the Swagger files (Tornado's StaticFileHandler, not ours).
"""

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC
from email.utils import format_datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from images import png
from process import SERVICE, Proc, clean_env, free_port, path_of, request
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
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Every method on every path, those a path does not have (405) included.
PATHS = [
    path_of(),
    path_of("a"),
    path_of("a", "images"),
    path_of("a", "images", "x.png"),
    path_of("a", "images", "x.png") + "?download=1",
    path_of("ghost", "images", "x.png"),
    "/healthz",
    "/api/v1/nowhere",
    "/swagger",
    "/swagger/index.html",
    "/swagger/openapi.json",
]
ENDPOINTS = [(method, path) for path in PATHS for method in METHODS]
# Bytes Tornado refuses in a header value (it then answers a bare 400 and hangs up).
REFUSED_BY_TORNADO = set(range(0x00, 0x09)) | set(range(0x0A, 0x20)) | {0x7F}
IMAGE_READS = [(m, p) for p in PATHS[3:5] for m in ("GET", "HEAD")]
LIST_READS = [(m, p) for p in (PATHS[0], PATHS[2]) for m in ("GET", "HEAD")]
WITH_BODY = [
    ("POST", PATHS[0]),
    ("PATCH", PATHS[1]),
    ("POST", PATHS[2]),
    ("PUT", PATHS[3]),
    ("PATCH", PATHS[3]),
    ("PUT", PATHS[5]),
]
UPLOADS = [("POST", PATHS[2]), ("PUT", PATHS[3])]
# Where each header is read, so that half of its examples go there.
READ_AT = {
    "Content-Length": WITH_BODY,
    "Content-Type": UPLOADS,
    "Range": IMAGE_READS,
    "If-Range": IMAGE_READS,
    "If-None-Match": IMAGE_READS + LIST_READS,
    "If-Modified-Since": IMAGE_READS,
    "Authorization": WITH_BODY,
    "X-API-Key": WITH_BODY,
    "X-Forwarded-For": UPLOADS,
    "Access-Control-Request-Method": [("OPTIONS", p) for p in PATHS],
    "Access-Control-Request-Headers": [("OPTIONS", p) for p in PATHS],
    "Transfer-Encoding": WITH_BODY,
    "Expect": WITH_BODY,
}
KEY = "k3y-for-the-fuzzed-service"
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}
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
    # Tornado decodes header bytes as Latin-1: these bytes arrive as "²", "³", "¹",
    # which str.isdigit() calls digits and int() refuses.
    st.text("0123456789²³¹", min_size=1, max_size=30).map(lambda t: t.encode("latin-1")),
    st.sampled_from([b" 12", b"12 ", b"1_000", b"0x10", b"1e3", b"+5", b"-0", b"", b"12, 12"]),
)
ranges = st.one_of(
    st.tuples(numbers, numbers).map(lambda p: b"bytes=" + p[0] + b"-" + p[1]),
    st.tuples(numbers).map(lambda p: b"bytes=-" + p[0]),
    st.tuples(numbers).map(lambda p: b"bytes=" + p[0] + b"-"),
    header_bytes.map(lambda b: b"bytes=" + b),
)
values = st.one_of(header_bytes, numbers, ranges, st.text(max_size=100).map(str.encode))
# email.utils.parsedate_to_datetime raises ValueError, OverflowError... on odd dates.
date_words = st.sampled_from(
    ["Mon,", "01", "31", "99", "Jan", "Feb", "2026", "99999999999", "0", "-1", "00:00:00"]
    + ["25:61:61", "GMT", "UT", "EST", "+0000", "+9999", "-2400", "²", ":", "-", ","]
)
odd_number = st.one_of(st.integers(-(10**12), 10**12).map(str), date_words)
dates = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
    # The shape of an HTTP date, with numbers out of any range.
    st.tuples(
        st.sampled_from(["Mon,", "Sun", ""]),
        odd_number,
        st.sampled_from(["Jan", "Dec", "Foo"]),
        odd_number,
        st.tuples(odd_number, odd_number, odd_number).map(":".join),
        st.sampled_from(["GMT", "UT", "EST", "+0000", "+9999", "-2400", "-0000", ""]),
    ).map(" ".join),
    st.sampled_from(
        [
            "Mon, 01 Jan 99999999999 00:00:00 GMT",  # OverflowError
            "Mon, 01 Jan 2026 99999999999:00:00 GMT",
            "Mon, 01 Jan 10000 00:00:00 GMT",  # ValueError: year out of range
            "Mon, 01 Jan 2026 00:00:00 +9999",  # ValueError: offset over a day
            "Mon, 01 Jan 0001 00:00:00 -2359",
            "Fri, 31 Dec 9999 23:59:59 +0000",
        ]
    ),
    st.lists(date_words, max_size=8).map(" ".join),
    st.lists(date_words, max_size=8).map("".join),
).map(str.encode)
SPECIAL = {
    "Content-Length": numbers,
    "Range": ranges,
    "If-Modified-Since": dates,
    "If-Range": st.one_of(dates, header_bytes.map(lambda tag: b'"' + tag + b'"')),
    "Origin": st.sampled_from([b"https://app.example", b"https://app.example/"]),
    "Authorization": st.sampled_from([b"Bearer ", b"bearer ", b"Basic "]).flatmap(
        lambda scheme: st.one_of(st.just(scheme + KEY.encode()), header_bytes.map(scheme.__add__))
    ),
    "X-Forwarded-For": st.lists(
        st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=4
    ).map(lambda hops: ", ".join(hops).encode()),
}


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
            # Keys, an origin list and a trusted proxy: the code that reads
            # Authorization, X-API-Key, Origin and X-Forwarded-For runs.
            env=clean_env(
                IMAGESTORE_WORKERS="1",
                IMAGESTORE_API_KEYS=KEY,
                IMAGESTORE_CORS_ORIGINS="https://app.example",
                IMAGESTORE_TRUSTED_PROXIES="127.0.0.1",
            ),
        )
    proc = Proc(popen, log_path)
    try:
        proc.wait_ready(port)
        album = json.dumps({"albumName": "a"}).encode()
        assert request(port, "POST", path_of(), album, AUTHORIZED)[0] == 200
        assert request(port, "PUT", path_of("a", "images", "x.png"), IMAGE, AUTHORIZED)[0] == 200
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


def skip_log(proc: Proc) -> None:
    """What the service logged so far is not this example's doing (the final test
    reads the whole log)."""
    LOG_SEEN["bytes"] = proc.log_path.stat().st_size


def assert_no_new_traceback(proc: Proc, what: tuple) -> None:
    """No traceback in what the service logged since the last look."""
    with open(proc.log_path, "rb") as log:
        log.seek(LOG_SEEN["bytes"])
        raw = log.read()
    LOG_SEEN["bytes"] += len(raw)
    new = raw.decode(errors="replace")
    # A 5xx other than 503/507 is logged at ERROR by the access log.
    for sign in (
        "Traceback",
        "Uncaught exception",
        "tornado.access: 500 ",
        "ERROR imagestore.access",
    ):
        assert sign not in new, (what, new[-5000:])


def tornado_refuses(header: str, value: bytes, path: str) -> bool:
    """Whether Tornado itself refuses this request, before or after our handler,
    with its bare 400 (no body, no Content-Type) or by hanging up."""
    return (
        any(byte in REFUSED_BY_TORNADO for byte in value)
        or header == "Host"  # missing, not a host name, or several
        # announced, but the body sent is not chunked
        or (header == "Transfer-Encoding" and value.strip(b" \t").lower() == b"chunked")
        # the Swagger files are Tornado's StaticFileHandler: no framing check of ours
        or (path.startswith("/swagger") and header in ("Content-Length", "Transfer-Encoding"))
    )


def assert_refused_or_served(
    response: Response | None, what: tuple, bare_400_ok: bool = False
) -> None:
    if response is None:
        return
    assert response.status < 500, (response, what)
    event(f"{what[0]} {response.status}")
    if response.status < 400:
        return
    if response.header("content-type") is None:
        # Tornado's own answer to a request it cannot parse: a bare 400, then it hangs up.
        assert bare_400_ok and response.status == 400 and not response.body, (response, what)
        SEEN["bare 400 from Tornado"] += 1
        return
    assert response.header("content-type").startswith("application/json"), (response, what)
    if what[0] != "HEAD":
        body = json.loads(response.body)
        assert isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)


def restore(port: int, response: Response | None, method: str) -> None:
    """A change that went through (a rename, a delete) may have moved album "a" or
    its image "x.png", which the next examples want: put them back."""
    if response is None or response.status != 200 or method in ("GET", "HEAD", "OPTIONS"):
        return
    if request(port, "HEAD", path_of("a", "images", "x.png"))[0] != 200:
        request(port, "POST", path_of(), json.dumps({"albumName": "a"}).encode(), AUTHORIZED)
        request(port, "PUT", path_of("a", "images", "x.png"), IMAGE, AUTHORIZED)


def assert_no_traceback(proc: Proc) -> None:
    log = proc.log()
    # A 5xx other than 503/507 is logged at ERROR by the access log.
    for sign in (
        "Traceback",
        "Uncaught exception",
        "tornado.access: 500 ",
        "ERROR imagestore.access",
    ):
        assert sign not in log, log[-5000:]


TRIED = {"headers": 0, "json": 0, "request lines": 0}
SEEN: Counter[str] = Counter(answered=0, unanswered=0)
LOG_SEEN = {"bytes": 0}
# Examples per property: 18 header properties, one of request lines, one of JSON.
HEADER_EXAMPLES = 150
JSON_EXAMPLES = 600
LINE_EXAMPLES = 400


@pytest.mark.parametrize("header", HEADERS)
@settings(
    max_examples=HEADER_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_header_value_gives_a_server_error(service, header, data):
    port, proc = service
    # Three examples in four go where the header is read, with values made for it.
    method, path = data.draw(
        st.sampled_from(READ_AT.get(header, ENDPOINTS))
        if data.draw(st.integers(0, 3))
        else st.sampled_from(ENDPOINTS)
    )
    value = data.draw(SPECIAL.get(header, values) if data.draw(st.integers(0, 3)) else values)
    body = b'{"albumName": "zz"}' if method in ("POST", "PATCH") and "images" not in path else b""
    if method == "PUT":
        body = IMAGE[:100]
    headers: list[tuple[str, str | bytes]] = [(header, value)]
    if header not in ("Authorization", "X-API-Key"):
        headers += AUTHORIZED.items()
    if header not in ("Content-Length", "Transfer-Encoding"):
        headers.append(("Content-Length", str(len(body))))
    elif value.strip().isdigit() and len(value.strip()) < 6:
        body = (body * 100_000)[: int(value)]  # the body it announces, so it is answered
    raw = request_bytes(method, path, headers, body)
    if header == "Host":  # request_bytes adds one; the value under test replaces it
        raw = raw.replace(b"Host: 127.0.0.1\r\n", b"", 1)
    skip_log(proc)
    TRIED["headers"] += 1
    response = exchange(port, raw)
    what = (method, path, header, value)
    assert_refused_or_served(response, what, bare_400_ok=tornado_refuses(header, value, path))
    assert_no_new_traceback(proc, what)
    restore(port, response, method)


# What Tornado takes as a method (an RFC 9110 token) and as a request target.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
line_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
names = st.text(max_size=40).map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe=""))


@settings(
    max_examples=LINE_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.one_of(st.sampled_from([m.encode() for m in METHODS]), line_bytes),
    target=st.one_of(
        st.sampled_from(PATHS).map(str.encode),
        st.tuples(st.sampled_from(PATHS[:4]), line_bytes).map(lambda t: t[0].encode() + t[1]),
        st.lists(names, min_size=1, max_size=4).map(
            lambda parts: (path_of() + "".join("/" + p for p in parts)).encode()
        ),
        line_bytes.map(lambda query: path_of("a", "images", "x.png").encode() + b"?" + query),
    ),
)
def test_no_request_line_gives_a_server_error(service, method, target):
    port, proc = service
    headers = [*AUTHORIZED.items(), ("Content-Length", "0")]
    raw = request_bytes("M", "/", headers).replace(b"M /", method + b" " + target, 1)
    skip_log(proc)
    TRIED["request lines"] += 1
    response = exchange(port, raw)
    what = (method.decode("latin-1"), target)
    tornado_refuses_line = not TOKEN.fullmatch(method) or not TARGET.fullmatch(target)
    assert_refused_or_served(response, what, bare_400_ok=tornado_refuses_line)
    assert_no_new_traceback(proc, what)
    restore(port, response, method.decode("latin-1"))


@settings(
    max_examples=JSON_EXAMPLES,
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
        {**AUTHORIZED, "Content-Type": "application/json", "Content-Length": str(len(document))},
        document,
    )
    skip_log(proc)
    TRIED["json"] += 1
    response = exchange(port, raw)
    what = (method, path, document[:80])
    assert_refused_or_served(response, what)
    assert_no_new_traceback(proc, what)
    restore(port, response, method)


def test_deep_json_is_refused_with_a_sentence(service):
    port, _ = service
    for document in (b"[" * 33 + b"]" * 33, b'{"albumName":' * 3000 + b'"x"' + b"}" * 3000):
        status, _, body = request(
            port, "POST", path_of(), document, {**AUTHORIZED, "Content-Type": "application/json"}
        )
        assert status == 400
        assert json.loads(body) == {"error": "the request body nests deeper than 32 levels"}
    status, _, body = request(port, "POST", path_of(), b"[" * 32 + b"]" * 32, AUTHORIZED)
    assert (status, json.loads(body)) == (400, {"error": "the request body must be a JSON object"})


def test_the_service_logged_no_traceback(service):
    # Last in the module: everything above ran against this process.
    _, proc = service
    assert TRIED["headers"] >= HEADER_EXAMPLES * len(HEADERS), TRIED
    assert TRIED["json"] >= JSON_EXAMPLES, TRIED
    assert TRIED["request lines"] >= LINE_EXAMPLES, TRIED
    print(f"inputs tried: {TRIED}; {dict(SEEN)}")
    # A test that is never answered proves nothing: most examples must be.
    assert SEEN["answered"] > 0.8 * (SEEN["answered"] + SEEN["unanswered"]), SEEN
    assert_no_traceback(proc)
