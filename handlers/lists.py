"""What a list request asks (``limit``, ``after``, ``prefix``, ``detail``) and how its
answer is shaped: names, or objects; a ``next`` and a Link header for the next page.

Without ``limit``, ``after`` or ``detail`` the answer is the Go service's: the whole
list of names (``prefix`` may narrow it). Any of them makes it a page, of at most
``limit`` items (1000 when not given).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from handlers.transfer import declared_length
from store import ImageRecord, InvalidInput
from store.listing import MAX_PAGE_ITEMS, Page, PageRequest
from store.ports import AlbumSummary

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


def rfc3339(timestamp: float) -> str:
    """UTC, to the millisecond: 2026-11-28T10:00:00.123Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ListQuery:
    page: PageRequest
    detail: bool
    # The client asked for a page (limit, after or detail), not the whole list.
    paged: bool

    @classmethod
    def parse(cls, argument: Callable[[str], str | None]) -> "ListQuery":
        """From ``argument(name)``: a query argument's last value, or None."""
        raw_limit, after = argument("limit"), argument("after")
        raw_detail = (argument("detail") or "").lower()
        if raw_detail not in _TRUE + _FALSE:
            raise InvalidInput("detail must be true or false")
        detail = raw_detail in _TRUE
        limit = None
        if raw_limit is not None:
            limit = declared_length(raw_limit)
            if limit is None or not 1 <= limit <= MAX_PAGE_ITEMS:
                raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS}")
        paged = raw_limit is not None or after is not None or detail
        if paged and limit is None:
            limit = MAX_PAGE_ITEMS
        return cls(PageRequest.of(argument("prefix") or "", after, limit), detail, paged)

    @property
    def cache_key(self) -> tuple[str, ...]:
        page = self.page
        return (page.prefix, page.after or "", str(page.limit), str(self.detail))

    def next_link(self, path: str, next_after: str | None) -> str | None:
        """The Link header of the page after this one (None on the last page)."""
        if next_after is None:
            return None
        query: dict[str, str] = {"limit": str(self.page.limit), "after": next_after}
        if self.page.prefix:
            query["prefix"] = self.page.prefix
        if self.detail:
            query["detail"] = "true"
        return f'<{path}?{urlencode(query)}>; rel="next"'


def album_item(album: AlbumSummary) -> dict[str, Any]:
    return {
        "name": album.name,
        "images": album.images,
        "bytes": album.bytes,
        "createdAt": rfc3339(album.created_at),
        "updatedAt": rfc3339(album.updated_at),
    }


def image_item(image: ImageRecord) -> dict[str, Any]:
    return {
        "name": image.name,
        "size": image.size,
        "contentType": image.content_type,
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "createdAt": rfc3339(image.created_at),
    }


def page_body(
    field: str, page: Page[Any], query: ListQuery, item: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """``{field: [...], "next": ...}``: names, or objects made by ``item``."""
    items = [item(entry) if query.detail else entry.name for entry in page.items]
    body: dict[str, Any] = {field: items}
    if query.paged and page.next_after is not None:
        body["next"] = page.next_after
    return body
