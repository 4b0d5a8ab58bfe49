"""Request bodies as they stream in: a multipart form or a raw image, fed to an
upload of the store chunk by chunk, never held whole in memory."""

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from handlers.base import http_error
from store import ImageRecord, ImageStore, Upload

# Bytes allowed in form fields other than "file" (they are read and ignored).
OTHER_FIELDS_LIMIT = 64 * 1024
# Room for part headers and boundaries on top of the image size limit.
MULTIPART_OVERHEAD = OTHER_FIELDS_LIMIT + 16 * 1024


def base_name(filename: str) -> str:
    """The last component of a multipart filename: some clients send a path
    ("sub/dir/x.png", Windows browsers "C:\\fakepath\\x.png"), and the Go service kept
    only the base name. The name rules then apply to what is left."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


class RawImageBody:
    """The body is the image itself (PUT)."""

    def __init__(self, upload: Upload) -> None:
        self._upload = upload

    async def feed(self, chunk: bytes) -> None:
        await self._upload.write(chunk)

    async def finish(self) -> ImageRecord:
        return await self._upload.commit()

    def abort(self) -> None:
        self._upload.abort()


class MultipartImageBody:
    """A multipart/form-data body whose "file" field is the image (POST)."""

    def __init__(self, store: ImageStore, album: str, content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        if kind != "multipart/form-data" or not options.get("boundary"):
            raise http_error(
                400, 'expected a multipart/form-data body with the image in the field "file"'
            )
        try:
            self._parser = PushMultipartParser(options["boundary"], max_header_count=16)
        except MultipartError as err:
            raise http_error(400, f"bad multipart boundary: {err}") from None
        self._store = store
        self._album = album
        self._upload: Upload | None = None
        self._in_file = False
        self._other_bytes = 0

    async def feed(self, chunk: bytes) -> None:
        try:
            for event in self._parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    await self._start_part(event)
                elif event is None:
                    self._in_file = False
                elif self._in_file and self._upload is not None:
                    await self._upload.write(event)
                else:
                    self._other_bytes += len(event)
                    if self._other_bytes > OTHER_FIELDS_LIMIT:
                        raise http_error(
                            413, f'form fields other than "file" exceed {OTHER_FIELDS_LIMIT} bytes'
                        )
        except MultipartError as err:
            # The first argument is the parser's sentence; the others may echo raw bytes.
            raise http_error(400, f"malformed multipart body: {err.args[0]}") from None

    async def _start_part(self, part: MultipartSegment) -> None:
        if part.name != "file":
            return
        if self._upload is not None:
            raise http_error(400, 'send one image per request: the field "file" appears twice')
        if part.filename is None:
            raise http_error(400, 'the field "file" has no filename: it names the image')
        self._upload = await self._store.begin_upload(self._album, base_name(part.filename))
        self._in_file = True

    async def finish(self) -> ImageRecord:
        try:
            self._parser.close()
        except MultipartError:
            raise http_error(400, "the multipart body ended before its closing boundary") from None
        if self._upload is None:
            raise http_error(400, 'the multipart body has no field "file" with the image')
        return await self._upload.commit()

    def abort(self) -> None:
        if self._upload is not None:
            self._upload.abort()
