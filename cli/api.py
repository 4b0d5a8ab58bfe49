"""The service's endpoints as the command line uses them.

Lists are read in pages with details (``?limit=&after=&detail=true``) where the service
offers them; a service that answers the whole list of names (the Go original's shape,
which ignores those arguments) is read as it is, and what a name's details would say
(size, type, sha256) is asked of a HEAD, whose ETag is the image's sha256.
"""

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cli.client import Answer, ServiceClient

PAGE_SIZE = 1000
# Pages a list may take (PAGE_SIZE names each): a service that keeps answering "next"
# must not keep the client reading forever.
MAX_PAGES = 100_000
_SHA256_ETAG = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')
_SHA256_DIGEST = re.compile(r"sha-?256=:?([A-Za-z0-9+/=]{44}):?", re.IGNORECASE)


class ServiceRefused(Exception):
    """The service answered something other than what was asked: its sentence."""

    def __init__(self, what: str, answer: Answer) -> None:
        super().__init__(f"{what}: {answer.error()}")
        self.status = answer.status


@dataclass
class RemoteImage:
    """What is known of an image in the service; None: not known (yet)."""

    name: str
    size: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    created: str | None = None


def sha256_of(headers: dict[str, str]) -> str | None:
    """The sha256 an image's headers carry: its ETag, or a Digest/Repr-Digest."""
    match = _SHA256_ETAG.match(headers.get("Etag", "").strip())
    if match:
        return match.group(1)
    for name in ("Repr-Digest", "Digest"):
        digest = _SHA256_DIGEST.search(headers.get(name, ""))
        if digest:
            return base64.b64decode(digest.group(1)).hex()
    return None


class Api:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def albums(self) -> list[str]:
        return [name for name, _ in await self._list((), "albumList")]

    async def images(self, album: str) -> list[RemoteImage]:
        """Every image of ``album``, with whatever details the list gives."""
        found = []
        for name, detail in await self._list((album, "images"), "imageList"):
            image = RemoteImage(name)
            if detail:
                image.size = _int_or_none(detail.get("size"))
                sha = detail.get("sha256")
                image.sha256 = sha if isinstance(sha, str) and _SHA256_ETAG.match(sha) else None
                image.content_type = _str_or_none(detail.get("contentType"))
                image.created = _str_or_none(detail.get("createdAt"))
            found.append(image)
        return found

    async def _list(self, names: tuple[str, ...], field: str) -> list[tuple[str, dict[str, Any]]]:
        items: list[tuple[str, dict[str, Any]]] = []
        what = "list " + ("/".join(names) if names else "albums")
        after: str | None = None
        paged = True
        for _ in range(MAX_PAGES):
            query = f"limit={PAGE_SIZE}&detail=true" if paged else ""
            if after is not None:
                query += "&after=" + quote(after, safe="")
            answer = await self.client.request(
                "GET", self.client.url("albums", *names, query=query), what=what
            )
            if answer.status == 400 and paged and after is None:
                paged = False  # a service that refuses the page arguments: the whole list
                continue
            if answer.status != 200:
                raise ServiceRefused(what, answer)
            try:
                document = answer.json()
            except ValueError:
                document = None
            page = document.get(field) if isinstance(document, dict) else None
            if not isinstance(document, dict) or not isinstance(page, list):
                raise ServiceRefused(what, Answer(502, {}, b'{"error": "the answer is no list"}'))
            for item in page:
                if isinstance(item, str):
                    items.append((item, {}))
                elif isinstance(item, dict) and isinstance(item.get("name"), str):
                    items.append((item["name"], item))
            after = document.get("next")
            if not paged or not isinstance(after, str) or not page:
                return items
        raise ServiceRefused(what, Answer(502, {}, b'{"error": "the list never ends"}'))

    async def create_album(self, album: str) -> None:
        answer = await self.client.request(
            "POST", self.client.url("albums"), json_body={"albumName": album}, what=album
        )
        if answer.status not in (200, 409):  # 409: it exists (another client made it)
            raise ServiceRefused(f"create album {album}", answer)

    async def head(self, album: str, image: str) -> RemoteImage | None:
        """The image's details from a HEAD; None when it does not exist."""
        answer = await self.client.request(
            "HEAD", self.client.url("albums", album, "images", image), what=f"{album}/{image}"
        )
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise ServiceRefused(f"{album}/{image}", answer)
        headers = {k.title(): v for k, v in answer.headers.items()}
        return RemoteImage(
            image,
            size=_int_or_none(headers.get("Content-Length")),
            sha256=sha256_of(headers),
            content_type=headers.get("Content-Type"),
            created=headers.get("Last-Modified"),
        )


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
