"""`imagestore copy`: move a store into the backends the settings name.

  imagestore copy --from-data ./image-db                   # a single-host data folder
  imagestore copy --from-catalog URL --from-blobs URL       # any two backends

The target is what IMAGESTORE_CATALOG / IMAGESTORE_BLOBS (or IMAGESTORE_DATA, or the
same flags) name. Resumable: a rerun skips what is there with the same bytes.
"""

import argparse
import asyncio
import logging
import os
import sys
import time

from cli.progress import Progress
from settings import parse_settings
from store import Backends, Claim, StoreError, open_store
from store.backends import BLOB_SCHEMES, CATALOG_SCHEMES, UnknownBackend, check_url
from store.copy import CopyReport, copy_store


def copy_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The copy's own options; the rest are the service's settings (the target's)."""
    parser = argparse.ArgumentParser(
        prog="imagestore copy",
        description="Copy every album and image from a source store into the store the "
        "settings name (IMAGESTORE_CATALOG and IMAGESTORE_BLOBS, or IMAGESTORE_DATA; the "
        "same flags as the service: --catalog, --blobs, --data). Bytes are verified by "
        "SHA-256; a rerun skips what is already there; no events are published.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-data", metavar="DIR", help="a single-host data folder")
    source.add_argument("--from-catalog", metavar="URL", help="the source's catalog URL")
    parser.add_argument("--from-blobs", metavar="URL", help="the source's blob store URL")
    parser.add_argument("--jobs", type=int, default=4, help="images copied at once [4]")
    options, rest = parser.parse_known_args(argv)
    if options.from_catalog and not options.from_blobs:
        parser.error("--from-catalog needs --from-blobs")
    try:
        if options.from_catalog:
            check_url(options.from_catalog, CATALOG_SCHEMES, "catalog")
            check_url(options.from_blobs, BLOB_SCHEMES, "blob store")
    except UnknownBackend as err:
        parser.error(str(err))
    if not 1 <= options.jobs <= 64:
        parser.error("--jobs is a number from 1 to 64")
    return options, rest


def copy_command(argv: list[str]) -> int:
    options, rest = copy_options(argv)
    settings = parse_settings(rest, os.environ)
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    if options.from_data:
        source = Backends.of(options.from_data)
    else:
        source = Backends(options.from_catalog, options.from_blobs)
    target = settings.backends
    if source == target:
        print("imagestore copy: the source and the target are the same store", file=sys.stderr)
        return 2
    try:
        claim = Claim(target)
    except StoreError as err:
        print(f"imagestore copy: cannot open the target ({err})", file=sys.stderr)
        return 1
    try:
        return asyncio.run(copy_between(source, target, options.jobs))
    finally:
        claim.release()


async def copy_between(source_backends: Backends, target_backends: Backends, jobs: int) -> int:
    # No outbox: a copy publishes no events. No upload limit: what was stored is copied.
    began = time.monotonic()
    try:
        source = open_store(source_backends, max_upload_bytes=1 << 62)
    except StoreError as err:
        print(f"imagestore copy: cannot open the source ({err})", file=sys.stderr)
        return 1
    target = open_store(target_backends, max_upload_bytes=1 << 62)
    progress = Progress("copy")

    def show(report: CopyReport) -> None:
        items = f"{report.copied + report.skipped}/{report.images} images"
        progress.update(report.bytes_copied, report.bytes_total, items)

    try:
        report = await copy_store(source, target, jobs=jobs, progress=show)
    except StoreError as err:
        print(f"imagestore copy: {err}", file=sys.stderr)
        return 1
    finally:
        progress.close()
        source.close()
        target.close()
    for failure in report.failed:
        print(f"failed: {failure}", file=sys.stderr)
    print(
        f"copied {report.copied} image(s) from {report.albums} album(s), "
        f"{report.skipped} already there, {len(report.failed)} failed; "
        f"{report.bytes_copied} of {report.bytes_total} bytes in "
        f"{time.monotonic() - began:.1f} s"
    )
    return 1 if report.failed else 0
