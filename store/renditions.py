"""Renditions: an image resized, re-encoded and cleaned by libvips.

``Spec`` is a normalised request (what the cache key and the ETag are made of);
``render`` runs on an imaging pool thread: the header first (the pixel limit is
checked before any pixel is decoded), then libvips' ``thumbnail`` (shrink-on-load:
a JPEG is decoded at 1/2, 1/4 or 1/8 of its size when that is enough), EXIF
orientation applied, colour converted to sRGB, the first frame of an animation, and
no metadata kept (no EXIF, no GPS, no XMP, no ICC: the pixels are sRGB).
"""

import time
from dataclasses import dataclass

import pyvips

from store.errors import Deadline, InvalidInput, RenderFailed, TooManyPixels
from store.imaging import Header, header_of, open_source
from store.vips import BlobSource

FITS = ("inside", "cover", "contain", "fill")
# Output formats: their content types, and libvips' suffixes.
FORMATS = {
    "jpeg": ("image/jpeg", ".jpg"),
    "png": ("image/png", ".png"),
    "webp": ("image/webp", ".webp"),
    "avif": ("image/avif", ".avif"),
}
# The original's format where it is one of these; the others give JPEG (or PNG
# when they may be transparent).
SAME_FORMAT = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp", "image/avif": "avif"}
# Beyond any screen: even a signed URL cannot ask for more on one side.
MAX_SIDE = 8192
# libvips' largest coordinate: "no bound" on one side.
UNBOUNDED = 10_000_000


@dataclass(frozen=True)
class Spec:
    width: int | None
    height: int | None
    fit: str
    format: str  # one of FORMATS, never "auto"
    quality: int | None

    def __post_init__(self) -> None:
        if self.width is None and self.height is None:
            raise InvalidInput("a rendition needs a width or a height")
        for side in (self.width, self.height):
            if side is not None and not 1 <= side <= MAX_SIDE:
                raise InvalidInput(f"width and height go from 1 to {MAX_SIDE} pixels")
        if self.fit not in FITS:
            raise InvalidInput(f"fit is one of {', '.join(FITS)}")
        if self.format not in FORMATS:
            raise InvalidInput(f"format is one of {', '.join(FORMATS)} or auto")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise InvalidInput("quality goes from 1 to 100")

    @property
    def key(self) -> str:
        """The normalised parameters, for cache keys and ETags."""
        return f"w{self.width or 0}h{self.height or 0}{self.fit}.{self.format}q{self.quality or 0}"

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][0]


def default_format(content_type: str) -> str:
    return SAME_FORMAT.get(content_type, "png" if content_type == "image/gif" else "jpeg")


@dataclass(frozen=True)
class Rendition:
    data: bytes
    width: int
    height: int


def render(
    source: BlobSource,
    content_type: str,
    spec: Spec,
    max_pixels: int,
    time_limit: float,
) -> Rendition:
    """On an imaging thread. TooManyPixels before decoding anything too big."""
    began = time.monotonic()
    try:
        header = header_of(open_source(source, content_type))
        check_pixels(header, max_pixels)
        image = _resized(source, header, spec)
        image = _as_srgb(image, spec.format)
        _limit_time(image, began + time_limit)
        suffix = FORMATS[spec.format][1]
        options: dict[str, object] = {"keep": "none"}
        if spec.quality is not None and spec.format != "png":
            options["Q"] = spec.quality
        data = image.write_to_buffer(suffix, **options)
    except pyvips.Error as err:
        source.check()  # the blob store's failure, if it was one
        if time.monotonic() > began + time_limit:
            raise Deadline(f"the rendition took longer than {time_limit:.0f} s") from None
        raise RenderFailed(f"the image cannot be rendered: {_first_line(err)}") from None
    source.check()
    return Rendition(data, int(image.width), int(image.height))


def check_pixels(header: Header, max_pixels: int) -> None:
    if header.width * header.height > max_pixels:
        raise TooManyPixels(
            f"the image is {header.width}x{header.height} pixels, over the limit of "
            f"{max_pixels} (IMAGESTORE_MAX_PIXELS)"
        )


def _resized(source: BlobSource, header: Header, spec: Spec) -> pyvips.Image:
    width = spec.width or UNBOUNDED
    height = spec.height or UNBOUNDED
    both = spec.width is not None and spec.height is not None
    options: dict[str, object] = {"height": height}
    if spec.fit == "cover" and both:
        options["crop"] = "centre"
    elif spec.fit == "fill" and both:
        options["size"] = "force"
    # The loader sniffs the source again (it was rewound): only the allowed ones run.
    image = pyvips.Image.thumbnail_source(source.source, width, **options)
    if spec.fit == "contain" and both and (image.width, image.height) != (width, height):
        # Transparent padding where the format has alpha, white in JPEG.
        if _keeps_alpha(spec.format):
            if not image.hasalpha():
                image = image.bandjoin(255 if image.format == "uchar" else 65535)
            background = [0] * image.bands
        else:
            if image.hasalpha():
                image = image.flatten(background=[255] * (image.bands - 1))
            background = [255 if image.format == "uchar" else 65535] * image.bands
        image = image.gravity("centre", width, height, extend="background", background=background)
    return image


def _keeps_alpha(output_format: str) -> bool:
    return output_format != "jpeg"


def _as_srgb(image: pyvips.Image, output_format: str) -> pyvips.Image:
    """8-bit sRGB (from CMYK, 16-bit, grey, Lab...), alpha flattened onto white for
    JPEG."""
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.hasalpha() and not _keeps_alpha(output_format):
        image = image.flatten(background=[255, 255, 255])
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def _limit_time(image: pyvips.Image, deadline: float) -> None:
    """libvips stops computing the image once past the deadline."""

    def on_eval(target: pyvips.Image, _progress: object) -> None:
        try:
            if time.monotonic() > deadline:
                target.set_kill(True)
        except Exception:  # called from C: nothing may escape (libvips goes on)
            pass

    image.set_progress(True)
    image.signal_connect("eval", on_eval)


def _first_line(err: pyvips.Error) -> str:
    detail = str(getattr(err, "detail", "") or err).strip().splitlines()
    return detail[0] if detail else "libvips failed"
