"""`imagestore ls [ALBUM]`: the albums, or an album's images with size, type and date."""

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from cli.api import Api, RemoteImage, ServiceRefused
from cli.client import Unreachable
from cli.options import add_service_options, check_service_options, service_client


def ls_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="imagestore ls",
        description="List the albums, or an album's images (size in bytes, type, the "
        "time it was stored in UTC, name).",
    )
    parser.add_argument("album", metavar="ALBUM", nargs="?")
    add_service_options(parser, transfers=False)
    options = parser.parse_args(argv)
    check_service_options(parser, options)
    return options


def ls_command(argv: list[str]) -> int:
    return asyncio.run(ls(ls_options(argv)))


async def ls(options: argparse.Namespace) -> int:
    client = service_client(options, None)
    api = Api(client)
    try:
        if options.album is None:
            for album in await api.albums():
                print(album)
            return 0
        images = await api.images(options.album)
        await complete(api, options.album, images, options.jobs)
        for image in images:
            size = "-" if image.size is None else str(image.size)
            print(
                f"{size:>12}  {image.content_type or '-':<12}  {when(image.created)}  {image.name}"
            )
        return 0
    except (Unreachable, ServiceRefused) as err:
        print(f"imagestore ls: {err}", file=sys.stderr)
        return 1
    finally:
        client.close()


async def complete(api: Api, album: str, images: list[RemoteImage], jobs: int) -> None:
    """What the list did not say (a service without list details), from HEADs."""
    missing = iter([i for i in images if i.size is None or i.content_type is None])

    async def worker() -> None:
        for image in missing:
            found = await api.head(album, image.name)
            if found is not None:
                image.size, image.content_type = found.size, found.content_type
                image.created = image.created or found.created

    await asyncio.gather(*(worker() for _ in range(jobs)))


def when(created: str | None) -> str:
    """An ISO 8601 time or an HTTP date, as "2026-12-02 17:09:36" (UTC)."""
    if not created:
        return "-" * 19
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(created)
        except (TypeError, ValueError):
            return created
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
