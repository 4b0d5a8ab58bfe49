"""/api/v1/albums/{album}/images and /api/v1/albums/{album}/images/{image}."""

import logging
from datetime import UTC, datetime
from typing import Any

from tornado.httputil import format_timestamp
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from handlers.base import APIHandler, http_error
from handlers.bodies import MULTIPART_OVERHEAD, MultipartImageBody, RawImageBody
from handlers.limits import NoUploadSlot, UploadLimits
from handlers.lists import ListQuery, image_item, page_body
from handlers.renditions import RenditionPolicy, rendition_spec, wants_rendition
from handlers.transfer import (
    ByteRange,
    content_disposition,
    declared_length,
    etag_matches,
    not_modified_since,
    parse_range,
)
from store import ImageReader

log = logging.getLogger("imagestore.http")

# Tornado's own body limit would answer a bare "400" for an oversized chunked
# body; ours counts the bytes itself and answers a JSON 413, so Tornado's is
# lifted for uploads.
NO_TORNADO_LIMIT = 1 << 62


class UploadingHandler(APIHandler):
    """Streams an upload's body into the store as it arrives."""

    # Per request; set as the upload starts (class-level: the values before it does).
    _image_body: RawImageBody | MultipartImageBody | None = None
    _received = 0
    _body_limit = 0
    _upload_slot: int | None = None
    _pace_check: object | None = None
    _started = 0.0

    @property
    def limits(self) -> UploadLimits:
        limits: UploadLimits = self.application.settings["limits"]
        return limits

    async def start_upload(self, album: str, image: str | None) -> None:
        """Refuse what can be refused before the body is read, then get ready for it.

        ``image`` is the name from the URL (raw PUT), or None when the name comes
        inside a multipart body.
        """
        self.is_upload = True
        self._body_limit = self.store.max_upload_bytes + (
            MULTIPART_OVERHEAD if image is None else 0
        )
        declared = declared_length(self.request.headers.get("Content-Length"))
        if declared is not None and declared > self._body_limit:
            raise http_error(413, self._too_large())
        slots = self.limits.slots
        try:
            self._upload_slot = slots.take(self.client)
        except NoUploadSlot as refused:
            if refused.per_client:
                raise http_error(
                    429,
                    f"this client already runs {slots.per_client} uploads "
                    "(IMAGESTORE_MAX_UPLOADS_PER_CLIENT): retry when one has finished",
                    {"Retry-After": "1"},
                ) from None
            raise http_error(
                503,
                f"{slots.limit} uploads are already running: retry shortly",
                {"Retry-After": "1"},
            ) from None
        album = await self.store.require_album(album)
        await self.store.check_room(declared or 0)
        body: RawImageBody | MultipartImageBody
        if image is None:
            body = MultipartImageBody(
                self.store, album, self.request.headers.get("Content-Type", "")
            )
        else:
            body = RawImageBody(await self.store.begin_upload(album, image))
        self._image_body = body
        connection = self.connection
        connection.set_max_body_size(NO_TORNADO_LIMIT)
        # Tornado's body timeout is for the whole body: fine for JSON, wrong for a
        # large upload. Ours grows with the bytes received (a minimum rate).
        connection.set_body_timeout(None)  # type: ignore[arg-type]  # Tornado takes None: no timeout
        self._started = IOLoop.current().time()
        self._pace_check = IOLoop.current().call_later(
            self.limits.body_timeout_seconds, self._check_pace
        )

    def _check_pace(self) -> None:
        limits = self.limits
        deadline = (
            self._started
            + limits.body_timeout_seconds
            + self._received / limits.body_min_bytes_per_second
        )
        now = IOLoop.current().time()
        if now < deadline:
            self._pace_check = IOLoop.current().call_later(deadline - now, self._check_pace)
            return
        self._pace_check = None
        if self._image_body is not None:
            self._image_body.abort()
        self.fail(
            http_error(
                408,
                f"the upload is too slow: {self._received} bytes in "
                f"{now - self._started:.0f} s (at least {limits.body_min_bytes_per_second} "
                "bytes/s are needed after the first "
                f"{limits.body_timeout_seconds:.0f} s)",
            )
        )

    def _stop_pace_check(self) -> None:
        if self._pace_check is not None:
            IOLoop.current().remove_timeout(self._pace_check)
            self._pace_check = None

    def _too_large(self) -> str:
        return f"the image is larger than the limit of {self.store.max_upload_bytes} bytes"

    async def data_received(self, chunk: bytes) -> None:
        if self._image_body is None:
            await super().data_received(chunk)
            return
        self.bytes_received += len(chunk)
        if self._finished:
            return
        self._received += len(chunk)
        try:
            if self._received > self._body_limit:
                raise http_error(413, self._too_large())
            await self._image_body.feed(chunk)
        except Exception as err:  # any failure ends the upload: answer now, keep nothing
            self._image_body.abort()
            self.fail(err)

    async def finish_upload(self) -> None:
        self._stop_pace_check()
        if self._image_body is None:
            raise http_error(400, "the request has no image")
        record = await self._image_body.finish()
        self.write_json({"message": f"{record.name} image added to album {record.album}"})

    def _end_upload(self) -> None:
        self._stop_pace_check()
        if self._image_body is not None:
            self._image_body.abort()
        if self._upload_slot is not None:
            self.limits.slots.give_back(self._upload_slot)
            self._upload_slot = None

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._end_upload()

    def on_finish(self) -> None:
        super().on_finish()
        self._end_upload()


class ImagesHandler(UploadingHandler):
    async def prepare_body(self) -> None:
        if self.request.method == "POST":
            await self.start_upload(self.path_kwargs["album"], None)
        else:
            await super().prepare_body()

    async def get(self, album: str) -> None:
        """List an album's images.
        ---
        summary: List an album's images, sorted by name (whole, or a page at a time)
        tags: [images]
        parameters:
          - Limit
          - After
          - Prefix
          - Detail
          - {name: If-None-Match, in: header, required: false, schema: {type: string},
             description: "The list's ETag from an earlier answer: 304 while unchanged"}
        responses:
          200:
            description: >-
              Every image's name (without limit, after and detail: the Go service's
              answer), or one page of names or, with detail=true, of objects.
            headers:
              ETag: {description: "Changes when the list does.", schema: {type: string}}
              Link: NextLink
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ImageList"}
          304: {description: "Unchanged since the ETag given in If-None-Match."}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        # Keyed by the name as the store knows it: every spelling of it is one entry.
        album = self.store.canonical_album_name(album)
        query = ListQuery.parse(self.list_argument)

        async def produce() -> tuple[dict[str, Any], str | None]:
            if not query.paged and not query.page.prefix:
                return {"imageList": await self.store.list_images(album)}, None
            page = await self.store.image_page(album, query.page)
            link = query.next_link(self.request.path, page.next_after)
            return page_body("imageList", page, query, image_item), link

        await self.write_list(("images", album, *query.cache_key), produce)

    async def post(self, album: str) -> None:
        """Upload an image (multipart form, the Go original's way).
        ---
        summary: Upload an image as multipart/form-data (field "file"; its filename names the image)
        tags: [images]
        requestBody:
          required: true
          content:
            multipart/form-data:
              schema:
                type: object
                required: [file]
                properties:
                  file: {type: string, format: binary}
        responses:
          200:
            description: 'Stored: "{image} image added to album {album}".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/TooLarge"}
          408: {$ref: "#/components/responses/TooSlow"}
          415: {$ref: "#/components/responses/NotAnImage"}
          429: {$ref: "#/components/responses/TooManyFromClient"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        await self.finish_upload()


class ImageHandler(UploadingHandler):
    async def prepare_body(self) -> None:
        if self.request.method == "PUT":
            await self.start_upload(self.path_kwargs["album"], self.path_kwargs["image"])
        else:
            await super().prepare_body()

    async def put(self, album: str, image: str) -> None:
        """Upload an image as the raw body.
        ---
        summary: Upload an image as the raw request body, named by the URL
        tags: [images]
        requestBody:
          description: The image itself; its type is read from its bytes, not from Content-Type.
          required: true
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
            image/*:
              schema: {type: string, format: binary}
        responses:
          200:
            description: 'Stored: "{image} image added to album {album}".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/TooLarge"}
          408: {$ref: "#/components/responses/TooSlow"}
          415: {$ref: "#/components/responses/NotAnImage"}
          429: {$ref: "#/components/responses/TooManyFromClient"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        await self.finish_upload()

    async def delete(self, album: str, image: str) -> None:
        """Delete an image.
        ---
        summary: Delete an image
        tags: [images]
        responses:
          200:
            description: 'Deleted: "{image} image deleted from album {album}".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        album, image = await self.store.delete_image(album, image)
        self.write_json({"message": f"{image} image deleted from album {album}"})

    async def patch(self, album: str, image: str) -> None:
        """Rename an image.
        ---
        summary: Rename an image (nothing is copied)
        tags: [images]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ImageName"}
        responses:
          200:
            description: 'Renamed: "{old} image modified to {new}".'
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Message"}
          400: {$ref: "#/components/responses/BadRequest"}
          404: {$ref: "#/components/responses/NotFound"}
          409: {$ref: "#/components/responses/Conflict"}
          413: {$ref: "#/components/responses/TooLarge"}
          503: {$ref: "#/components/responses/Unavailable"}
          507: {$ref: "#/components/responses/StorageFull"}
        """
        old, new = await self.store.rename_image(album, image, self.json_body("imageName"))
        self.write_json({"message": f"{old} image modified to {new}"})

    async def get(self, album: str, image: str) -> None:
        """Download an image.
        ---
        summary: Download an image, or a rendition of it (resized, re-encoded by libvips)
        description: >
          Without rendition parameters: the original bytes, exactly as uploaded. With
          `width` and/or `height`: a rendition, EXIF orientation applied, 8-bit sRGB,
          metadata (EXIF, GPS, XMP, ICC) stripped, the first frame of an animation.
          Unsigned URLs get sizes from IMAGESTORE_RENDITION_WIDTHS (a size between two
          is served the next one up); a URL signed with `imagestore sign` (expires and
          signature: HMAC-SHA256 over the path and the sorted query) may ask any size up
          to 8192. ETag, 304, HEAD and Range work on renditions as on originals.
        tags: [images]
        parameters:
          - {name: download, in: query, required: false, schema: {type: string, enum: ["1", "0"]},
             description: "1: Content-Disposition attachment instead of inline"}
          - {name: width, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 8192},
             description: "Rendition width in pixels (aspect kept when alone)"}
          - {name: height, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 8192},
             description: "Rendition height in pixels"}
          - {name: fit, in: query, required: false,
             schema: {type: string, enum: [inside, cover, contain, fill], default: inside},
             description: "With width and height: inside (fits within, aspect kept), cover
               (fills, cropped around the centre), contain (fits within, padded:
               transparent, white in JPEG), fill (stretched)"}
          - {name: format, in: query, required: false,
             schema: {type: string, enum: [jpeg, png, webp, avif, auto]},
             description: "Default: the original's (JPEG for TIFF/HEIC, PNG for GIF);
               auto: AVIF or WebP when Accept names them, else JPEG (Vary: Accept)"}
          - {name: quality, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 100},
             description: "Encoder quality (JPEG, WebP, AVIF)"}
          - {name: expires, in: query, required: false, schema: {type: integer},
             description: "Signed URLs: Unix time after which the signature is refused"}
          - {name: signature, in: query, required: false, schema: {type: string},
             description: "Signed URLs: hex HMAC-SHA256 (imagestore sign)"}
          - {name: Range, in: header, required: false, schema: {type: string},
             description: "One byte range, e.g. bytes=0-1023 (several ranges get the whole image)"}
          - {name: If-Range, in: header, required: false, schema: {type: string}}
          - {name: If-None-Match, in: header, required: false, schema: {type: string}}
          - {name: If-Modified-Since, in: header, required: false, schema: {type: string}}
        responses:
          200: {$ref: "#/components/responses/Image"}
          206: {$ref: "#/components/responses/PartialImage"}
          304: {description: "Not modified since the validators given."}
          400: {$ref: "#/components/responses/BadRequest"}
          403: {$ref: "#/components/responses/Forbidden"}
          404: {$ref: "#/components/responses/NotFound"}
          413: {$ref: "#/components/responses/TooLarge"}
          422: {$ref: "#/components/responses/Unrenderable"}
          416:
            description: The range lies outside the image.
            headers:
              Content-Range: {description: "bytes */size", schema: {type: string}}
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Error"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        await self._send_image(album, image, include_body=True)

    async def head(self, album: str, image: str) -> None:
        """An image's headers, without its bytes.
        ---
        summary: An image's (or a rendition's) headers (type, size, ETag...) without its bytes
        tags: [images]
        parameters:
          - {name: width, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 8192}}
          - {name: height, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 8192}}
          - {name: fit, in: query, required: false,
             schema: {type: string, enum: [inside, cover, contain, fill]}}
          - {name: format, in: query, required: false,
             schema: {type: string, enum: [jpeg, png, webp, avif, auto]}}
          - {name: quality, in: query, required: false,
             schema: {type: integer, minimum: 1, maximum: 100}}
          - {name: expires, in: query, required: false, schema: {type: integer}}
          - {name: signature, in: query, required: false, schema: {type: string}}
          - {name: If-None-Match, in: header, required: false, schema: {type: string}}
          - {name: If-Modified-Since, in: header, required: false, schema: {type: string}}
        responses:
          200: {$ref: "#/components/responses/Image"}
          304: {description: "Not modified since the validators given."}
          400: {description: "Malformed request."}
          403: {description: "The URL's signature is not valid."}
          404: {description: "The album or image does not exist."}
          422: {description: "No rendition of this image (pixel limit, format)."}
          413: {description: "The request carried a body over 64 KiB."}
          503: {description: "The service is shutting down, or its storage failed."}
        """
        await self._send_image(album, image, include_body=False)

    @property
    def rendition_policy(self) -> RenditionPolicy:
        policy: RenditionPolicy = self.application.settings["renditions"]
        return policy

    async def _send_image(self, album: str, image: str, include_body: bool) -> None:
        if wants_rendition(self.request.query_arguments):
            await self._send_rendition(album, image, include_body)
            return
        # Headers, 304s and HEAD come from the catalog: the blob store is asked for
        # bytes only when they are sent (with S3, that is a request saved).
        record = await self.store.get_image(album, image)
        reader: ImageReader | None = None
        try:
            etag = f'"{record.sha256}"'
            last_modified = datetime.fromtimestamp(int(record.created_at), UTC)
            self.set_header("ETag", etag)
            self.set_header("Last-Modified", last_modified)
            self.set_header("Cache-Control", self._cache_control())
            self.set_header("Accept-Ranges", "bytes")
            self._dimension_headers(record.width, record.height)
            if self._not_modified(etag, last_modified):
                self.set_status(304)
                self.finish()
                return
            self.set_header("Content-Type", record.content_type)
            attachment = self.get_query_argument("download", "") not in ("", "0", "false")
            self.set_header("Content-Disposition", content_disposition(record.name, attachment))
            wanted = self._range(etag, last_modified, record.size)
            if wanted is not None and not wanted.satisfiable:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{record.size}")
                self.write_json({"error": f"the range is outside the image's {record.size} bytes"})
                return
            start, end = (wanted.start, wanted.end) if wanted else (0, record.size)
            if wanted:
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end - 1}/{record.size}")
            self.set_header("Content-Length", end - start)
            if include_body:
                reader = await self.store.open_record(record)
                async for chunk in reader.chunks(start, end):
                    self.write(chunk)
                    await self.flush()
            self.finish()
        except StreamClosedError:
            log.debug("client went away during the download of %s/%s", album, image)
        finally:
            if reader is not None:
                reader.close()

    async def _send_rendition(self, album: str, image: str, include_body: bool) -> None:
        record = await self.store.get_image(album, image)
        spec, by_accept = rendition_spec(
            self.request.query_arguments,
            record.content_type,
            self.request.headers.get("Accept", ""),
            self.rendition_policy,
            self.request.path,
            self.request.query,
        )
        # Known before rendering: a client that has it is answered at once.
        etag = f'"{record.sha256}-{spec.key}"'
        last_modified = datetime.fromtimestamp(int(record.created_at), UTC)
        if by_accept:
            self.set_header("Vary", "Accept")
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", last_modified)
        self.set_header("Cache-Control", self._cache_control())
        self.set_header("Accept-Ranges", "bytes")
        if self._not_modified(etag, last_modified):
            self.set_status(304)
            self.finish()
            return
        made = await self.store.rendition(record, spec)
        self.rendition_source = made.source  # for the metrics (handlers/observe.py)
        try:
            self._dimension_headers(made.width, made.height)
            self.set_header("Content-Type", made.content_type)
            attachment = self.get_query_argument("download", "") not in ("", "0", "false")
            stem = record.name.rsplit(".", 1)[0] or record.name
            name = f"{stem}.{'jpg' if spec.format == 'jpeg' else spec.format}"
            self.set_header("Content-Disposition", content_disposition(name, attachment))
            size = made.size
            wanted = self._range(etag, last_modified, size)
            if wanted is not None and not wanted.satisfiable:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{size}")
                self.write_json({"error": f"the range is outside the rendition's {size} bytes"})
                return
            start, end = (wanted.start, wanted.end) if wanted else (0, size)
            if wanted:
                self.set_status(206)
                self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.set_header("Content-Length", end - start)
            if include_body:
                async for chunk in made.chunks(start, end):
                    self.write(chunk)
                    await self.flush()
            self.finish()
        except StreamClosedError:
            log.debug("client went away during a rendition of %s/%s", album, image)
        finally:
            made.close()

    def _dimension_headers(self, width: int | None, height: int | None) -> None:
        if width is not None and height is not None:
            self.set_header("X-Image-Width", width)
            self.set_header("X-Image-Height", height)

    def _cache_control(self) -> str:
        """no-cache (ask each time, 304 while unchanged) unless IMAGESTORE_CACHE_MAX_AGE:
        then kept that long, by shared caches too unless reads need a key."""
        max_age: int = self.settings.get("cache_max_age", 0)
        if not max_age:
            return "no-cache"
        scope = "private" if self.access.needs_key("GET") else "public"
        return f"{scope}, max-age={max_age}"

    def _not_modified(self, etag: str, last_modified: datetime) -> bool:
        if_none_match = self.request.headers.get("If-None-Match")
        if if_none_match is not None:
            return etag_matches(if_none_match, etag)
        return not_modified_since(self.request.headers.get("If-Modified-Since"), last_modified)

    def _range(self, etag: str, last_modified: datetime, size: int) -> ByteRange | None:
        if_range = self.request.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, format_timestamp(last_modified)):
            return None  # the client's copy is stale: send the whole image
        return parse_range(self.request.headers.get("Range"), size)
