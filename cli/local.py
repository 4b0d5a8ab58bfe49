"""The local side: which files of a folder are images, their hashes, safe local names."""

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field

from store.errors import InvalidInput
from store.names import validate_name
from store.sniff import SNIFF_BYTES, sniff_image_type

# A download is written under this prefix, then renamed: never half an image under
# the image's name. The same temporary name for the same image: a rerun after a kill
# overwrites the leftover.
PARTIAL_PREFIX = ".imagestore-part."
HASH_CHUNK_BYTES = 1 << 20


@dataclass
class LocalFile:
    path: str
    album: str
    name: str  # as the service will know it (NFC)
    size: int


@dataclass
class Scan:
    images: list[LocalFile] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def scan_folder(root: str, album: str, recursive: bool, album_per_folder: bool) -> Scan:
    """The images under ``root`` (sorted, so that every run sees them in one order),
    by their first bytes as the service judges them; the rest listed apart.
    Files directly in ``root`` go to ``album``; with ``album_per_folder``, those of
    a subfolder go to an album named by its path ("2026/summer": "2026 - summer")."""
    scan = Scan()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        if not (recursive or album_per_folder):
            subfolders.clear()
        relative = os.path.relpath(folder, root)
        target = album
        if album_per_folder and relative != ".":
            target = " - ".join(relative.split(os.sep))
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                if not os.path.isfile(path):
                    continue  # sockets, fifos, dangling links: not files to send
                with open(path, "rb") as file:
                    head = file.read(SNIFF_BYTES)
                    size = os.fstat(file.fileno()).st_size
            except OSError as err:
                scan.unreadable.append((path, err.strerror or str(err)))
                continue
            if sniff_image_type(head) is None:
                scan.not_images.append(path)
                continue
            scan.images.append(LocalFile(path, target, unicodedata.normalize("NFC", name), size))
    return scan


def file_sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def numbered(name: str, number: int) -> str:
    """The ``number``-th other name for ``name``: "cat.png" -> "cat (2).png"."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({number})"
    return f"{stem} ({number}).{suffix}"


def local_name_problem(name: str) -> str | None:
    """Why an image's name (the service's, not trusted) cannot name a local file, or
    None: names are the service's rules (no "/", no NUL, no dot names...) and never
    one of our temporary names."""
    try:
        validate_name(name, "image")
    except InvalidInput as err:
        return str(err)
    if name.startswith(PARTIAL_PREFIX) or os.path.basename(name) != name:
        return "image name is not a plain file name here"
    return None


def partial_path(folder: str, name: str) -> str:
    """Named by a hash of the image's name: short enough for any file system."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return os.path.join(folder, PARTIAL_PREFIX + digest)
