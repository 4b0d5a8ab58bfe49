"""The rules every album and image name must follow.

A name is only ever a catalog value, never part of a path, but the rules still
refuse what would be dangerous or confusing anywhere else (slashes, NUL, control
characters, dot names) so that names stay safe to show, log and export.
"""

import unicodedata

from store.errors import InvalidInput

MAX_NAME_BYTES = 255


def validate_name(raw: object, kind: str) -> str:
    """Return the NFC-normalised name, or raise InvalidInput saying what is wrong.

    ``kind`` is "album" or "image" and only shapes the error sentence.
    """
    if not isinstance(raw, str):
        raise InvalidInput(f"{kind} name must be a string")
    name = unicodedata.normalize("NFC", raw)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{kind} name is not valid UTF-8") from None
    if not encoded:
        raise InvalidInput(f"{kind} name must not be empty")
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidInput(
            f"{kind} name is {len(encoded)} bytes long; "
            f"the limit is {MAX_NAME_BYTES} bytes of UTF-8"
        )
    if name in (".", ".."):
        raise InvalidInput(f'{kind} name must not be "." or ".."')
    for forbidden, label in (("/", '"/"'), ("\\", '"\\"'), ("\x00", "NUL")):
        if forbidden in name:
            raise InvalidInput(f"{kind} name must not contain {label}")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidInput(f"{kind} name must not contain control characters")
    return name
