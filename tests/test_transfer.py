"""handlers/transfer.py on its own: numbers in headers, Range, conditional requests,
Content-Disposition."""

from datetime import UTC, datetime

import pytest

from handlers.transfer import (
    ByteRange,
    content_disposition,
    declared_length,
    etag_matches,
    header_number,
    not_modified_since,
    parse_range,
)


@pytest.mark.parametrize(
    "text, number",
    [
        ("0", 0),
        ("42", 42),
        (" 7 ", 7),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),
        ("", None),
        ("-1", None),
        ("+1", None),
        ("1e3", None),
        ("0x10", None),
        ("²", None),
        ("٣", None),
        ("1_000", None),
        ("1 2", None),
        (None, None),
    ],
)
def test_header_number_takes_plain_ascii_digits_only(text, number):
    assert header_number(text) == number


def test_a_repeated_content_length_is_one_value_only_when_the_copies_agree():
    assert declared_length("5, 5") == 5
    assert declared_length("5,5") == 5
    assert declared_length("5, 6") is None
    assert declared_length(None) is None


SIZE = 1000


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("", None),
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=0-", ByteRange(0, SIZE)),
        ("bytes=990-", ByteRange(990, SIZE)),
        ("bytes=-10", ByteRange(990, SIZE)),
        ("bytes=-5000", ByteRange(0, SIZE)),
        ("bytes=500-99999", ByteRange(500, SIZE)),
        ("bytes=999-999", ByteRange(999, SIZE)),
        ("bytes=1000-", ByteRange(SIZE, SIZE)),
        ("bytes=-0", ByteRange(SIZE, SIZE)),
        ("bytes=5-4", None),
        ("bytes=0-1,5-6", None),
        ("bytes=abc", None),
        ("bytes=-", None),
        ("items=0-1", None),
        ("bytes=²-5", None),
        ("bytes=0-" + "9" * 5000, None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, SIZE) == expected


def test_a_byte_range_says_whether_it_can_be_served():
    assert ByteRange(0, 1).satisfiable
    assert not ByteRange(SIZE, SIZE).satisfiable


@pytest.mark.parametrize(
    "header, matches",
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_is_compared_weakly(header, matches):
    assert etag_matches(header, '"abc"') is matches


MODIFIED = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "header, unchanged",
    [
        ("Sat, 28 Nov 2026 10:00:00 GMT", True),
        ("Sun, 29 Nov 2026 10:00:00 GMT", True),
        ("Fri, 27 Nov 2026 10:00:00 GMT", False),
        ("Sat, 28 Nov 2026 10:00:00", False),  # no zone: not a usable HTTP date
        ("not a date", False),
        ("Mon, 01 Jan 99999999999 00:00:00 GMT", False),
        ("", False),
        (None, False),
    ],
)
def test_if_modified_since(header, unchanged):
    assert not_modified_since(header, MODIFIED) is unchanged


@pytest.mark.parametrize(
    "name, attachment, expected",
    [
        ("cat.png", False, "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png"),
        ("cat.png", True, "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png"),
        ("été.jpg", False, "inline; filename=\"_t_.jpg\"; filename*=UTF-8''%C3%A9t%C3%A9.jpg"),
        (
            'a"b\\c%d.png',
            False,
            "inline; filename=\"a_b_c_d.png\"; filename*=UTF-8''a%22b%5Cc%25d.png",
        ),
        ("a b.png", False, "inline; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"),
    ],
)
def test_content_disposition_keeps_an_ascii_fallback_and_the_exact_name(name, attachment, expected):
    assert content_disposition(name, attachment) == expected
