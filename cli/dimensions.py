"""`imagestore dimensions`: record the width and height of the images stored before
dimensions were (a one-off; a rerun only retries what libvips could not read)."""

import asyncio
import os
import sys

from settings import parse_settings
from store import Backends, Claim, StoreError, open_store


def dimensions_command(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: imagestore dimensions [service settings]\n\nReads the header of each "
            "image stored without width and height (the catalog the settings name) and "
            "records them. With a SQLite catalog, stop the service first; with PostgreSQL "
            "it may run while the service does."
        )
        return 0
    settings = parse_settings(argv, os.environ)
    try:
        claim = Claim(settings.backends)
    except StoreError as err:
        print(f"imagestore dimensions: cannot open the store ({err})", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_backfill(settings.backends))
    finally:
        claim.release()


async def _backfill(backends: Backends) -> int:
    store = open_store(backends, max_upload_bytes=0)
    try:
        filled, unreadable = await store.backfill_dimensions()
    except StoreError as err:
        print(f"imagestore dimensions: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(
        f"recorded the dimensions of {filled} image content(s); "
        f"{unreadable} left unknown (formats libvips does not read, such as BMP and ICO)"
    )
    return 0
