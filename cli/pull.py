"""`imagestore pull ALBUM DIR`: download an album, several images at once, resumable.

Each image is written under a temporary name, its sha256 checked against the one the
service gives, flushed to disk, then renamed: DIR never holds half an image under an
image's name. A file already there with the right sha256 is skipped; one with other
bytes is a conflict, handled as --on-conflict says.
"""

import argparse
import asyncio
import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import BinaryIO

from cli.api import Api, RemoteImage, ServiceRefused, sha256_of
from cli.client import LocalFileError, ServiceClient, Unreachable
from cli.local import file_sha256, local_name_problem, numbered, partial_path
from cli.options import add_service_options, check_service_options, service_client
from cli.progress import Progress
from cli.push import MAX_RENAMES
from cli.report import Report


def pull_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="imagestore pull",
        description="Download every image of an album into a folder (created when "
        "missing). A file already there with the same bytes is skipped, so a rerun "
        "fetches only what is missing.",
    )
    parser.add_argument("album", metavar="ALBUM")
    parser.add_argument("dir", metavar="DIR", help="the folder to write into")
    add_service_options(parser, transfers=True)
    options = parser.parse_args(argv)
    check_service_options(parser, options)
    if os.path.exists(options.dir) and not os.path.isdir(options.dir):
        parser.error(f"{options.dir} is not a folder")
    return options


def pull_command(argv: list[str]) -> int:
    return asyncio.run(pull(pull_options(argv)))


class FileSink:
    """A download's bytes into its temporary file, hashed on the way."""

    def __init__(self, path: str, report: Report) -> None:
        self.path = path
        self._report = report
        self._file: BinaryIO | None = None
        self._hasher = hashlib.sha256()
        self.received = 0

    def start(self) -> None:
        self.close()
        self._report.moved(-self.received)
        self.received = 0
        self._hasher = hashlib.sha256()
        try:
            self._file = open(self.path, "wb")  # closed by close() or discard()
        except OSError as err:
            raise LocalFileError(err.strerror or str(err)) from None

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise LocalFileError("the temporary file is not open")
        try:
            self._file.write(chunk)
        except OSError as err:
            raise LocalFileError(err.strerror or str(err)) from None
        self._hasher.update(chunk)
        self.received += len(chunk)
        self._report.moved(len(chunk))

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def flush_to_disk(self) -> None:
        """Blocking (fsync): run in the pool."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self.close()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def discard(self) -> None:
        self.close()
        self._report.moved(-self.received)
        self.received = 0
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Puller:
    def __init__(self, options: argparse.Namespace, client: ServiceClient, report: Report) -> None:
        self.options = options
        self.client = client
        self.api = Api(client)
        self.report = report
        self.pool = ThreadPoolExecutor(options.jobs, thread_name_prefix="pull")
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.fatal: Unreachable | None = None

    async def run(self, images: list[RemoteImage]) -> None:
        pending = iter(images)

        async def worker() -> None:
            for image in pending:
                if self.fatal is not None:
                    return
                try:
                    await self.pull_one(image)
                except Unreachable as err:
                    self.fatal = err

        await asyncio.gather(*(worker() for _ in range(self.options.jobs)))
        if self.fatal is not None:
            raise self.fatal

    async def pull_one(self, image: RemoteImage) -> None:
        size = image.size or 0
        problem = local_name_problem(image.name)
        if problem:
            self.report.failed(image.name, size, problem)
            return
        try:
            await self._pull(image, size)
        except (ServiceRefused, LocalFileError) as err:
            self.report.failed(image.name, size, str(err))

    async def _pull(self, image: RemoteImage, size: int) -> None:
        loop = asyncio.get_running_loop()
        for number in range(MAX_RENAMES + 1):
            name = image.name if number == 0 else numbered(image.name, number)
            shown = image.name if number == 0 else f"{image.name} as {name}"
            target = os.path.join(self.options.dir, name)
            async with self.locks[name]:
                if not os.path.lexists(target):
                    await self._download(image, target, shown)
                    return
                if not os.path.isfile(target):
                    self.report.failed(shown, size, f"{target} is there and is not a file")
                    return
                if image.sha256 is None:
                    image = await self.api.head(self.options.album, image.name) or image
                try:
                    local_sha = await loop.run_in_executor(self.pool, file_sha256, target)
                except OSError as err:
                    raise LocalFileError(err.strerror or str(err)) from None
                if image.sha256 is None or local_sha == image.sha256:
                    self.report.already_there(shown, size)
                    return
                policy = self.options.on_conflict
                why = f"{target} holds other bytes"
                if policy == "skip":
                    self.report.conflict_left_alone(shown, size, why)
                    return
                if policy == "fail":
                    self.report.failed(shown, size, f"conflict: {why} (see --on-conflict)")
                    return
        self.report.failed(image.name, size, f"no free name up to {numbered(image.name, 99)}")

    async def _download(self, image: RemoteImage, target: str, shown: str) -> None:
        size = image.size or 0
        sink = FileSink(partial_path(self.options.dir, image.name), self.report)
        done = False
        try:
            answer = await self.client.download(
                self.client.url("albums", self.options.album, "images", image.name),
                sink,
                image.size or 0,
                shown,
            )
            if answer.status != 200:
                self.report.failed(shown, size, answer.error())
                return
            expected = sha256_of({k.title(): v for k, v in answer.headers.items()})
            expected = expected or image.sha256
            if expected is not None and expected != sink.sha256:
                self.report.failed(shown, size, "the bytes received are not the image's")
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.pool, sink.flush_to_disk)
                os.replace(sink.path, target)
            except OSError as err:
                raise LocalFileError(err.strerror or str(err)) from None
            done = True
            keep_modification_time(target, answer.headers.get("Last-Modified"))
            self.report.transferred(shown, sink.received)
        finally:
            if not done:
                sink.discard()


def keep_modification_time(path: str, last_modified: str | None) -> None:
    """The file dated as the image was stored, when the service says."""
    if not last_modified:
        return
    try:
        stamp = parsedate_to_datetime(last_modified).timestamp()
        os.utime(path, (stamp, stamp))
    except (TypeError, ValueError, OSError):
        pass  # a date we cannot read, or a file gone: it keeps today's time


async def pull(options: argparse.Namespace) -> int:
    report = Report("pull", "received", Progress("pull"))
    client = service_client(options, report)
    puller = Puller(options, client, report)
    try:
        try:
            images = await puller.api.images(options.album)
            report.plan(len(images), sum(i.size or 0 for i in images))
            os.makedirs(options.dir, exist_ok=True)
            await puller.run(images)
        except (Unreachable, ServiceRefused, OSError) as err:
            report.note(f"imagestore pull: {err}")
            report.finish(client.retries)
            return 1
        return report.finish(client.retries)
    finally:
        client.close()
        puller.pool.shutdown(wait=False, cancel_futures=True)
