"""The rules every album and image name must follow.

A name is only ever a catalog value, never part of a path, but the rules still
refuse what would be dangerous or confusing anywhere else (slashes, NUL, control and
invisible characters, dot names, blank names) so that names stay safe to show, log
and export, and read as what they are.
"""

import unicodedata

from store.errors import InvalidInput

MAX_NAME_BYTES = 255

# Characters that hide or disguise what a name says where it is shown: controls,
# invisible format characters (bidi overrides turn "gpj.exe" into what reads as
# "exe.jpg", zero-width joiners), and every separator but the plain space.
_MISLEADING = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zs": "a space other than the plain space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


_ZERO_WIDTH_JOINER = "\u200d"
# What may stand between an emoji and the joiner: variation selector-16, skin tones.
_EMOJI_MODIFIERS = {"\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))}


def _joins_emoji(name: str, index: int) -> bool:
    """A zero-width joiner inside an emoji sequence (🐈‍⬛, 👩‍👩‍👧) is part of the
    picture, not a hiding place: allowed there only."""
    if name[index] != _ZERO_WIDTH_JOINER or index == 0 or index + 1 >= len(name):
        return False
    before = index - 1
    while before > 0 and name[before] in _EMOJI_MODIFIERS:
        before -= 1
    return (
        unicodedata.category(name[before]) == "So" and unicodedata.category(name[index + 1]) == "So"
    )


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
    for position, ch in enumerate(name, 1):
        what = _MISLEADING.get(unicodedata.category(ch))
        if what and ch != " " and not _joins_emoji(name, position - 1):
            label = f"U+{ord(ch):04X}"
            if unicodedata.name(ch, ""):
                label += f" {unicodedata.name(ch)}"
            raise InvalidInput(
                f"{kind} name must not contain {label} ({what}) at position {position}"
            )
    if not name.strip():
        raise InvalidInput(f"{kind} name must not be blank")
    return name
