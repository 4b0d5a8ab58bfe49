"""`imagestore push DIR`: send a folder's images, several at once, resumable.

An image already stored under its name with the same bytes (sha256) is skipped, so a
rerun after an interruption sends only what is missing; the same name with other
bytes is a conflict, handled as --on-conflict says.
"""

import argparse
import asyncio
import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from cli.api import Api, RemoteImage, ServiceRefused
from cli.client import LocalFileError, ServiceClient, Unreachable
from cli.local import LocalFile, file_sha256, numbered, scan_folder
from cli.options import add_service_options, check_service_options, service_client
from cli.progress import Progress
from cli.report import Report

# Pieces of 1 MiB: fewer trips through the IOLoop and the pool per byte (x jobs in memory).
UPLOAD_CHUNK_BYTES = 1024 * 1024
# "name (1).ext" ... "name (99).ext": a rename looks no further.
MAX_RENAMES = 99


def push_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="imagestore push",
        description="Upload every image of a folder into an album (created when missing). "
        "Files that are not images are listed and never sent; an image already stored "
        "with the same name and bytes is skipped, so a rerun sends only what is missing.",
    )
    parser.add_argument("dir", metavar="DIR", help="the folder of images")
    parser.add_argument("--album", help="the album [the folder's name]")
    parser.add_argument("-r", "--recursive", action="store_true", help="subfolders too")
    parser.add_argument(
        "--album-per-folder",
        action="store_true",
        help='one album per subfolder (implies --recursive), named by its path ("2026/summer": '
        '"2026 - summer"); the files directly in DIR go to --album',
    )
    add_service_options(parser, transfers=True)
    options = parser.parse_args(argv)
    check_service_options(parser, options)
    if not os.path.isdir(options.dir):
        parser.error(f"{options.dir} is not a folder")
    album = options.album or os.path.basename(os.path.abspath(options.dir))
    options.album = unicodedata.normalize("NFC", album)
    return options


def push_command(argv: list[str]) -> int:
    return asyncio.run(push(push_options(argv)))


class FileBody:
    """An upload's body, read from its file as it is sent. Not hashed: the service
    hashes what it stores, and a later file bound for the same name asks it (HEAD)."""

    def __init__(
        self, path: str, report: Report, pool: ThreadPoolExecutor, on_moved: Callable[[int], None]
    ) -> None:
        self.path = path
        self._pool = pool
        self._on_moved = on_moved
        self._file: BinaryIO | None = None
        self._length = 0
        self.sent = 0

    def open(self) -> int:
        self.close()
        if self.sent:
            self._on_moved(-self.sent)  # the last attempt's bytes are sent again
            self.sent = 0
        try:
            file = open(self.path, "rb")  # closed by close(), after the attempt
            self._length = os.fstat(file.fileno()).st_size
        except OSError as err:
            raise LocalFileError(err.strerror or str(err)) from None
        self._file = file
        return self._length

    async def produce(self, write: Callable[[bytes], "asyncio.Future[None]"]) -> None:
        file = self._file
        assert file is not None, "open() comes first"
        loop = asyncio.get_running_loop()
        while self.sent < self._length:
            want = min(UPLOAD_CHUNK_BYTES, self._length - self.sent)
            try:
                chunk: bytes = await loop.run_in_executor(self._pool, file.read, want)
            except OSError as err:
                raise LocalFileError(err.strerror or str(err)) from None
            if not chunk:
                raise LocalFileError("the file got shorter while it was being sent")
            await write(chunk)
            self.sent += len(chunk)
            self._on_moved(len(chunk))

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def take_back(self) -> None:
        """The bytes sent did not make an image: out of the progress."""
        if self.sent:
            self._on_moved(-self.sent)
            self.sent = 0


class Pusher:
    def __init__(self, options: argparse.Namespace, client: ServiceClient, report: Report) -> None:
        self.options = options
        self.client = client
        self.api = Api(client)
        self.report = report
        self.pool = ThreadPoolExecutor(options.jobs, thread_name_prefix="push")
        self.remote: dict[str, dict[str, RemoteImage]] = {}
        self.failed_albums: dict[str, str] = {}
        # The service is gone (every retry failed): the workers take no further file.
        self.fatal: Unreachable | None = None
        # One decision at a time per (album, name): two local files bound for one name
        # (the same file name in two subfolders) are judged one after the other.
        self.locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def prepare_albums(self, albums: list[str]) -> None:
        existing = set(await self.api.albums())
        for album in albums:
            try:
                if album not in existing:
                    await self.api.create_album(album)
                    self.remote[album] = {}
                else:
                    self.remote[album] = {i.name: i for i in await self.api.images(album)}
            except ServiceRefused as refused:
                if refused.status in (401, 403):
                    raise
                self.failed_albums[album] = str(refused)

    async def run(self, files: list[LocalFile]) -> None:
        pending = iter(files)

        async def worker() -> None:
            for local in pending:
                if self.fatal is not None:
                    return
                try:
                    await self.push_one(local)
                except Unreachable as err:
                    self.fatal = err

        await asyncio.gather(*(worker() for _ in range(self.options.jobs)))
        if self.fatal is not None:
            raise self.fatal

    async def push_one(self, local: LocalFile) -> None:
        label = os.path.relpath(local.path, self.options.dir)
        if local.album in self.failed_albums:
            self.report.failed(label, local.size, self.failed_albums[local.album])
            return
        try:
            await self._push(local, label)
        except (ServiceRefused, LocalFileError) as err:
            self.report.failed(label, local.size, str(err))

    async def _push(self, local: LocalFile, label: str) -> None:
        known = self.remote[local.album]
        local_sha: str | None = None
        for number in range(MAX_RENAMES + 1):
            name = local.name if number == 0 else numbered(local.name, number)
            shown = label if number == 0 else f"{label} as {name}"
            async with self.locks[local.album, name]:
                there = known.get(name)
                if there is None:
                    there = await self._upload(local, name, shown)
                    if there is None:
                        return
                    known[name] = there
                if there.sha256 is None or there.size is None:
                    there = await self.api.head(local.album, name) or there
                    known[name] = there
                if there.size is not None and there.size != local.size:
                    same = False
                else:
                    if local_sha is None:
                        loop = asyncio.get_running_loop()
                        try:
                            local_sha = await loop.run_in_executor(
                                self.pool, file_sha256, local.path
                            )
                        except OSError as err:
                            raise LocalFileError(err.strerror or str(err)) from None
                    # A service that tells no sha256 at all: the size is all there is.
                    same = there.sha256 == local_sha if there.sha256 else True
                if same:
                    self.report.already_there(shown, local.size)
                    return
                policy = self.options.on_conflict
                why = f"{local.album}/{name} holds other bytes"
                if policy == "skip":
                    self.report.conflict_left_alone(shown, local.size, why)
                    return
                if policy == "fail":
                    self.report.failed(shown, local.size, f"conflict: {why} (see --on-conflict)")
                    return
        self.report.failed(label, local.size, f"no free name up to {numbered(local.name, 99)}")

    async def _upload(self, local: LocalFile, name: str, shown: str) -> RemoteImage | None:
        """Send ``local`` as ``name``. None: done (sent, or failed and reported); else
        the image that took the name meanwhile (409), to be compared."""
        body = FileBody(local.path, self.report, self.pool, self.report.moved)
        answer = await self.client.upload(
            self.client.url("albums", local.album, "images", name), body, shown
        )
        if answer.status == 200:
            self.report.transferred(shown, body.sent)
            self.remote[local.album][name] = RemoteImage(name, body.sent)
            return None
        body.take_back()
        if answer.status == 409:
            there = await self.api.head(local.album, name)
            if there is not None:
                return there
        self.report.failed(shown, local.size, answer.error())
        return None


async def push(options: argparse.Namespace) -> int:
    report = Report("push", "sent", Progress("push"))
    client = service_client(options, report)
    pusher = Pusher(options, client, report)
    try:
        loop = asyncio.get_running_loop()
        scan = await loop.run_in_executor(
            pusher.pool,
            scan_folder,
            options.dir,
            options.album,
            options.recursive,
            options.album_per_folder,
        )
        for path in scan.not_images:
            report.not_an_image(os.path.relpath(path, options.dir))
        for path, why in scan.unreadable:
            report.plan(1, 0)
            report.failed(os.path.relpath(path, options.dir), 0, why)
        report.plan(len(scan.images), sum(f.size for f in scan.images))
        try:
            await pusher.prepare_albums(sorted({f.album for f in scan.images}))
            await pusher.run(scan.images)
        except (Unreachable, ServiceRefused) as err:
            report.note(f"imagestore push: {err}")
            report.finish(client.retries)
            return 1
        return report.finish(client.retries)
    finally:
        client.close()
        pusher.pool.shutdown(wait=False, cancel_futures=True)
