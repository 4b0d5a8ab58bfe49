"""The rendition query of GET/HEAD .../images/{image}: parsed, negotiated (format=auto
by Accept), held to the allow-list of sizes unless signed."""

import bisect
from dataclasses import dataclass

from handlers.base import http_error
from store.renditions import FITS, FORMATS, MAX_SIDE, Spec, default_format
from store.signing import EXPIRES, SIGNATURE, signature_problem

RENDITION_PARAMS = ("width", "height", "fit", "format", "quality")
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class RenditionPolicy:
    """``widths``: the sizes served to unsigned URLs (a size between two is served the
    next one up). ``signing_keys``: the keys of signed URLs, which may ask any size."""

    widths: tuple[int, ...] = DEFAULT_WIDTHS
    signing_keys: tuple[bytes, ...] = ()


def wants_rendition(arguments: dict[str, list[bytes]]) -> bool:
    return any(name in arguments for name in RENDITION_PARAMS)


def _one(arguments: dict[str, list[bytes]], name: str) -> str | None:
    values = arguments.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise http_error(400, f"{name} is given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise http_error(400, f"{name} is not valid UTF-8") from None


def _whole(arguments: dict[str, list[bytes]], name: str, high: int) -> int | None:
    text = _one(arguments, name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= high:
        raise http_error(400, f"{name} is a whole number from 1 to {high}, not {text[:20]!r}")
    return int(text)


def negotiated(accept: str, has_alpha_hint: bool) -> str:
    """format=auto: AVIF or WebP when the client's Accept names them, else JPEG
    (PNG for images that may be transparent)."""
    offered = set()
    for part in accept.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
        if weight > 0:
            offered.add(media)
    for name in ("avif", "webp"):
        if f"image/{name}" in offered:
            return name
    return "png" if has_alpha_hint else "jpeg"


def rendition_spec(
    arguments: dict[str, list[bytes]],
    content_type: str,
    accept: str,
    policy: RenditionPolicy,
    path: str,
    query: str,
) -> tuple[Spec, bool]:
    """The normalised rendition asked for, and whether it depends on Accept."""
    width = _whole(arguments, "width", MAX_SIDE)
    height = _whole(arguments, "height", MAX_SIDE)
    fit = _one(arguments, "fit") or "inside"
    if fit not in FITS:
        raise http_error(400, f"fit is one of {', '.join(FITS)}, not {fit[:20]!r}")
    chosen = _one(arguments, "format") or default_format(content_type)
    if chosen != "auto" and chosen not in FORMATS:
        raise http_error(400, f"format is one of {', '.join(FORMATS)} or auto, not {chosen[:20]!r}")
    quality = _whole(arguments, "quality", 100)
    if width is None and height is None:
        raise http_error(400, "a rendition needs a width or a height")
    signed = SIGNATURE in arguments or EXPIRES in arguments
    if signed:
        problem = signature_problem(path, query, policy.signing_keys)
        if problem is not None:
            raise http_error(403, problem)
    else:
        width, height = _allowed(width, policy), _allowed(height, policy)
    auto = chosen == "auto"
    if auto:
        chosen = negotiated(accept, content_type in ("image/png", "image/gif", "image/webp"))
    # PNG has no quality: one rendition (and one cache entry) whatever is asked.
    return Spec(width, height, fit, chosen, None if chosen == "png" else quality), auto


def _allowed(side: int | None, policy: RenditionPolicy) -> int | None:
    """The allow-listed size serving ``side``: the next one up."""
    if side is None:
        return None
    at = bisect.bisect_left(policy.widths, side)
    if at == len(policy.widths):
        raise http_error(
            400,
            f"sizes go up to {policy.widths[-1]} pixels (IMAGESTORE_RENDITION_WIDTHS: "
            f"{','.join(map(str, policy.widths))}); larger ones need a signed URL",
        )
    return policy.widths[at]
