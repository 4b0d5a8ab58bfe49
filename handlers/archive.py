"""/api/v1/albums/{album}/archive: the album as a ZIP, built as it is sent.

The standard library's zipfile writes to a stream it cannot seek (sizes and CRCs then
follow each entry in a data descriptor, zip64 records where an entry or an offset
needs them), which is all a streamed archive needs: here its output goes to the
client a chunk at a time, each chunk flushed before the next is read, so memory does
not grow with the album's bytes. Entries are stored, not deflated: images are
compressed already. Only the central directory (a few hundred bytes per image)
waits in memory for the end, as in any ZIP.
"""

import calendar
import logging
import time
import zipfile

from tornado.iostream import StreamClosedError

from handlers.base import APIHandler
from handlers.transfer import content_disposition
from store import ImageRecord, NotFound, StoreError

log = logging.getLogger("imagestore.http")

# The earliest time a ZIP entry can carry (MS-DOS dates).
_ZIP_EPOCH = calendar.timegm((1980, 1, 1, 0, 0, 0))


class _Pending:
    """What zipfile has written and the client has not been sent yet."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the handler sends the pieces."""

    def close(self) -> None:
        """Nothing to release."""

    def take(self) -> list[bytes]:
        pieces, self.pieces = self.pieces, []
        return pieces


def zip_entry(record: ImageRecord) -> zipfile.ZipInfo:
    stamp = time.gmtime(max(record.created_at, _ZIP_EPOCH))
    entry = zipfile.ZipInfo(record.name, date_time=stamp[:6])
    entry.file_size = record.size  # zip64 headers when the size needs them
    entry.compress_type = zipfile.ZIP_STORED
    entry.external_attr = 0o644 << 16
    return entry


class ArchiveHandler(APIHandler):
    async def get(self, album: str) -> None:
        """Download an album as a ZIP archive.
        ---
        summary: The album's images as one ZIP archive (stored, zip64), streamed as it is built
        tags: [albums]
        responses:
          200:
            description: >-
              A ZIP of every image of the album, by name (entries stored, not compressed).
              Images added or deleted while it streams may or may not be in it.
            headers:
              Content-Disposition:
                description: "attachment, with the album's name and .zip"
                schema: {type: string}
            content:
              application/zip:
                schema: {type: string, format: binary}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        album = await self.store.require_album(album)
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", content_disposition(f"{album}.zip", True))
        pending = _Pending()
        try:
            with zipfile.ZipFile(pending, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                async for record in self.store.album_images(album):
                    await self._add(archive, pending, record)
            await self._send(pending)
            self.finish()
        except StreamClosedError:
            log.debug("client went away during the archive of %s", album)
        except StoreError as err:
            # Headers and bytes are gone already: all that is left is to cut the
            # archive short, which the client sees as a truncated ZIP.
            log.warning("the archive of album %s was cut: %s", album, err)
            self.connection.close()

    async def _add(self, archive: zipfile.ZipFile, pending: _Pending, record: ImageRecord) -> None:
        try:
            reader = await self.store.open_image(record.album, record.name)
        except NotFound:
            return  # deleted since the page was read
        try:
            with archive.open(zip_entry(reader.record), "w") as entry:
                async for chunk in reader.chunks(0, reader.record.size):
                    entry.write(chunk)
                    await self._send(pending)
        finally:
            reader.close()

    async def _send(self, pending: _Pending) -> None:
        for piece in pending.take():
            self.write(piece)
        await self.flush()
