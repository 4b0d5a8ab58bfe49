"""handlers/access.py on its own: who may call, from which origins, and who the
client is behind a trusted proxy."""

import ipaddress

import pytest
from tornado.httputil import HTTPHeaders

from handlers.access import AccessPolicy, HideHeaderValues


def headers(**values: str) -> HTTPHeaders:
    result = HTTPHeaders()
    for name, value in values.items():
        result.add(name.replace("_", "-"), value)
    return result


def test_without_keys_everyone_may_do_everything():
    policy = AccessPolicy()
    assert not policy.enabled
    for method in ("GET", "POST", "DELETE", "OPTIONS"):
        assert policy.allows(method, headers())


@pytest.mark.parametrize("public_read", [True, False])
def test_keys_guard_changes_and_reads_as_configured(public_read):
    policy = AccessPolicy(keys=("k1", "k2"), public_read=public_read)
    assert policy.enabled
    assert policy.allows("GET", headers()) is public_read
    assert policy.allows("HEAD", headers()) is public_read
    assert policy.allows("OPTIONS", headers()), "preflights never need a key"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not policy.allows(method, headers())
        assert not policy.allows(method, headers(Authorization="Bearer nope"))
        assert not policy.allows(method, headers(X_API_Key="k1x"))
        assert policy.allows(method, headers(Authorization="Bearer k1"))
        assert policy.allows(method, headers(Authorization="bearer  k2"))
        assert policy.allows(method, headers(X_API_Key="k2"))
    assert not policy.allows("POST", headers(Authorization="Basic k1"))
    assert not policy.allows("POST", headers(Authorization="Bearer"))


def test_keys_are_kept_only_as_digests():
    policy = AccessPolicy(keys=("sekrit-key",))
    assert "sekrit-key" not in repr(policy)
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest in policy._digests)


def test_cors_any_origin_by_default_and_a_list_when_narrowed():
    open_policy = AccessPolicy()
    assert open_policy.cors_headers("https://x.example")["Access-Control-Allow-Origin"] == "*"
    assert open_policy.cors_headers(None) == {}
    narrow = AccessPolicy(cors_origins=("https://a.example",))
    allowed = narrow.cors_headers("https://a.example/")
    assert allowed["Access-Control-Allow-Origin"] == "https://a.example/"
    assert allowed["Vary"] == "Origin"
    assert narrow.cors_headers("https://b.example") == {"Vary": "Origin"}
    assert narrow.cors_headers(None) == {"Vary": "Origin"}
    preflight = narrow.preflight_headers("https://a.example")
    assert "PATCH" in preflight["Access-Control-Allow-Methods"]
    assert "X-API-Key" in preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Methods" not in narrow.preflight_headers("https://b.example")


PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "peer, forwarded, client",
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a trusted proxy: ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left is the client's say
        ("10.1.2.3", "198.51.100.1, 10.9.9.9", "198.51.100.1"),  # through two proxies
        ("10.1.2.3", "10.4.4.4, 10.9.9.9", "10.4.4.4"),  # all trusted: the farthest
        ("10.1.2.3", "garbage, 10.9.9.9", "10.9.9.9"),
        ("10.1.2.3", "", "10.1.2.3"),
        ("::1", "2001:db8::7", "2001:db8::7"),
        (None, None, ""),
    ],
)
def test_the_client_behind_trusted_proxies(peer, forwarded, client):
    policy = AccessPolicy(trusted_proxies=PROXIES)
    given = headers() if forwarded is None else headers(X_Forwarded_For=forwarded)
    assert policy.client_of(peer, given) == client


def test_without_trusted_proxies_the_peer_is_the_client():
    assert AccessPolicy().client_of("10.1.2.3", headers(X_Forwarded_For="1.2.3.4")) == "10.1.2.3"


def test_tornados_malformed_header_line_loses_the_value():
    import logging

    record = logging.LogRecord(
        "tornado.general",
        logging.INFO,
        __file__,
        1,
        "Malformed HTTP message from %s: %s",
        ("127.0.0.1", "Invalid header value 'Bearer sekrit\\x00'"),
        None,
    )
    assert HideHeaderValues().filter(record)
    text = record.getMessage()
    assert "sekrit" not in text and "(value not logged)" in text and "127.0.0.1" in text
