"""The backends the suite runs against, one fixture parameter each: the contract tests
(tests/store/) and the HTTP suite take them from here, so that a new adapter pair runs
every test by adding one entry to BACKENDS."""

import os
from dataclasses import dataclass

import pytest
from engines import Postgres

from store import Backends
from store.backends import open_blobs, open_catalog

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


@dataclass
class PostgresFileBackend(LocalBackend):
    """The PostgreSQL catalog (a fresh database of the session's private cluster) and
    file blobs in the data folder."""

    catalog_url: str = ""
    name: str = "postgresql+file"

    @property
    def backends(self) -> Backends:
        return Backends.of(str(self.data_dir), catalog_url=self.catalog_url)


BACKENDS = {"sqlite+file": LocalBackend, "postgresql+file": PostgresFileBackend}


# --- fixtures (registered by tests/conftest.py) ------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster():
    """One private PostgreSQL cluster for the session (a database per test)."""
    cluster = Postgres().start()
    yield cluster
    cluster.remove()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    """Each adapter pair in turn, over a fresh location."""
    data_dir = tmp_path / "image-db"
    if request.param == "postgresql+file":
        cluster = request.getfixturevalue("postgres_cluster")
        return PostgresFileBackend(data_dir, catalog_url=cluster.new_database())
    return BACKENDS[request.param](data_dir)


@pytest.fixture
def outbox_limit():
    return 1000


@pytest.fixture
def catalog(backend, outbox_limit, io_loop):
    adapter = open_catalog(backend.backends.catalog_url, outbox_limit)
    yield adapter
    adapter.close()


@pytest.fixture
def blobs(backend, io_loop):
    adapter = open_blobs(backend.backends.blobs_url)
    yield adapter
    adapter.close()
