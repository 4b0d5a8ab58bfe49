"""Copy albums and images from one store into another, between any two backends
(`imagestore copy`): bytes verified by SHA-256, resumable (what is there already with
the same bytes is skipped), and no events: the copy records none."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from store.errors import Conflict, StoreError
from store.ports import ImageRecord
from store.store import ImageStore

log = logging.getLogger("imagestore.copy")


@dataclass
class CopyReport:
    """What a copy did, as it goes (the CLI draws its progress from it)."""

    albums: int = 0
    images: int = 0  # found in the source
    copied: int = 0
    skipped: int = 0  # already in the target with the same bytes
    failed: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    bytes_total: int = 0


Progress = Callable[[CopyReport], None]


async def copy_store(
    source: ImageStore, target: ImageStore, jobs: int = 4, progress: Progress | None = None
) -> CopyReport:
    report = CopyReport()
    tell = progress or (lambda report: None)
    slots = asyncio.Semaphore(jobs)
    work = []
    for album in await source.list_albums():
        report.albums += 1
        try:
            await target.create_album(album)
        except Conflict:
            pass  # there from an earlier run: resume into it
        for image in await source.list_images(album):
            record = await source.get_image(album, image)
            report.images += 1
            report.bytes_total += record.size
            work.append(record)
    tell(report)

    async def one(record: ImageRecord) -> None:
        async with slots:
            try:
                await _copy_image(source, target, record, report)
            except StoreError as err:
                report.failed.append(f"{record.album}/{record.name}: {err}")
            tell(report)

    await asyncio.gather(*(one(record) for record in work))
    return report


async def _copy_image(
    source: ImageStore, target: ImageStore, record: ImageRecord, report: CopyReport
) -> None:
    try:
        there = await target.get_image(record.album, record.name)
    except StoreError:
        there = None
    if there is not None:
        if there.sha256 != record.sha256:
            raise Conflict("the target holds other bytes under this name: left alone")
        report.skipped += 1
        report.bytes_copied += record.size
        return
    reader = await source.open_image(record.album, record.name)
    try:
        upload = await target.begin_upload(record.album, record.name, record.created_at)
        try:
            async for chunk in reader.chunks(0, record.size):
                await upload.write(chunk)
                report.bytes_copied += len(chunk)
        except BaseException:
            upload.abort()
            raise
        copied = await upload.commit()
    finally:
        reader.close()
    if copied.sha256 != record.sha256:
        # The source's bytes do not match its own record: keep no copy of them.
        await target.delete_image(copied.album, copied.name)
        raise StoreError(f"the source's bytes hash to {copied.sha256}, not {record.sha256}")
    report.copied += 1
