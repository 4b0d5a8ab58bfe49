"""Pages of a list: keyset bounds on the name index, shared by the catalog adapters.

A page is "the next ``limit`` names after ``after`` that start with ``prefix``", in
code-point order. Both catalogs compare names by code point (SQLite's BINARY on UTF-8,
PostgreSQL's COLLATE "C"), so a prefix is a range of the index: [prefix, upper), where
``upper`` is the first string past every string that starts with ``prefix``. A page
then costs the same at any depth (never OFFSET).
"""

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from store.errors import InvalidInput
from store.names import MAX_NAME_BYTES

T = TypeVar("T")

# Items a page holds at most, and when a paged request names no limit.
MAX_PAGE_ITEMS = 1000

# The largest code point; surrogates (never in a stored name) are stepped over.
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``; None
    when there is none (every character of the prefix is U+10FFFF) or no prefix."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last in _SURROGATES:
            last = _SURROGATES.stop
        if last <= _MAX_CODE_POINT:
            return "".join(chars) + chr(last)
    return None


@dataclass(frozen=True)
class NameRange:
    """Which names a page may hold: above ``after`` (exclusive), from ``prefix`` on
    (inclusive), below ``before`` (exclusive); each bound optional."""

    after: str | None
    prefix: str
    before: str | None

    @classmethod
    def of(cls, prefix: str, after: str | None) -> "NameRange":
        return cls(after, prefix, prefix_upper_bound(prefix))

    def conditions(self, column: str, placeholder: str, first: int = 1) -> tuple[str, list[str]]:
        """SQL conditions on ``column`` (joined by AND; "TRUE" for none) and their
        arguments. ``placeholder`` is "?" (SQLite) or "$" (PostgreSQL: numbered from
        ``first``)."""
        parts: list[str] = []
        args: list[str] = []
        for operator, value in ((">", self.after), (">=", self.prefix or None), ("<", self.before)):
            if value is None:
                continue
            args.append(value)
            mark = "?" if placeholder == "?" else f"${first + len(args) - 1}"
            parts.append(f"{column} {operator} {mark}")
        return (" AND ".join(parts) or "1 = 1"), args


def name_bound(raw: str, what: str) -> str:
    """A ``prefix`` or ``after`` from a client, as names are stored (NFC); at most a
    name long, and with no NUL (which no name holds, and PostgreSQL cannot take)."""
    text = unicodedata.normalize("NFC", raw)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise InvalidInput(f"{what} is {size} bytes long; names are at most {MAX_NAME_BYTES}")
    if "\x00" in text:
        raise InvalidInput(f"{what} must not contain NUL")
    return text


@dataclass(frozen=True)
class PageRequest:
    """What a client asks of a list: names starting with ``prefix``, after ``after``,
    at most ``limit`` of them (None: the whole list, the Go service's answer)."""

    prefix: str = ""
    after: str | None = None
    limit: int | None = None

    @classmethod
    def of(
        cls, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> "PageRequest":
        if limit is not None and not 1 <= limit <= MAX_PAGE_ITEMS:
            raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS}")
        return cls(
            name_bound(prefix, "prefix"),
            None if after is None else name_bound(after, "after"),
            limit,
        )

    @property
    def names(self) -> NameRange:
        return NameRange.of(self.prefix, self.after)

    @property
    def fetch(self) -> int | None:
        """Rows to read: one more than the page, to tell whether another follows."""
        return None if self.limit is None else self.limit + 1


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``next_after``: the ``after`` of the next page, None on
    the last one."""

    items: list[T]
    next_after: str | None


def page_of(rows: list[T], request: PageRequest, name_of: Callable[[T], str]) -> Page[T]:
    if request.limit is None or len(rows) <= request.limit:
        return Page(rows, None)
    items = rows[: request.limit]
    return Page(items, name_of(items[-1]))
