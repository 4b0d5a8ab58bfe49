"""The backends the suite runs against, one fixture parameter each: the contract tests
(tests/store/) and the HTTP suite take them from here, so that a new adapter pair runs
every test by adding one entry to BACKENDS."""

import os
from dataclasses import dataclass

from store import Backends

BLOB_KEY_LENGTH = 32


@dataclass
class LocalBackend:
    """SQLite catalog and file blobs in one data folder: the single-host default."""

    data_dir: object
    name: str = "sqlite+file"

    @property
    def backends(self) -> Backends:
        return Backends.of(str(self.data_dir))

    def published(self) -> list[str]:
        """The keys of the published blobs."""
        keys = []
        for _dirpath, dirs, files in os.walk(os.path.join(self.data_dir, "blobs")):
            dirs[:] = [name for name in dirs if name != "tmp"]
            keys += [name for name in files if len(name) == BLOB_KEY_LENGTH]
        return sorted(keys)

    def unfinished(self) -> list[str]:
        """The unfinished uploads (temporary files) the blob store holds."""
        folder = os.path.join(self.data_dir, "blobs", "tmp")
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


BACKENDS = {"sqlite+file": LocalBackend}
