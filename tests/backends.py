"""The backends the suite runs against, one fixture parameter each: the contract tests
(tests/store/) and the HTTP suite take them from here, so that a new adapter pair runs
every test by adding one entry to BACKENDS.

Each backend object answers the tests' questions about what the blob store holds
(``published``, ``unfinished``, ``blob_bytes``) whatever the backend, so that a test
checks "nothing half-done" the same way on files and on S3.

The HTTP suite runs on the two pairs the scale-out issue names (HTTP_BACKENDS: the
single-host default and the cluster's), the contract tests on every pair: the whole
HTTP suite once more for postgresql+file would cost minutes and test no adapter the
other two do not."""

import os
import uuid
from dataclasses import dataclass, field

import pytest
from engines import Postgres, SeaweedFS

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

    def blob_bytes(self) -> list[bytes]:
        """The bytes of every published blob, sorted."""
        found = []
        for key in self.published():
            path = os.path.join(self.data_dir, "blobs", key[0:2], key[2:4], key)
            with open(path, "rb") as blob:
                found.append(blob.read())
        return sorted(found)

    def env(self) -> dict[str, str]:
        """The settings a service process needs to use these backends."""
        return {
            "IMAGESTORE_CATALOG": self.backends.catalog_url,
            "IMAGESTORE_BLOBS": self.backends.blobs_url,
        }


@dataclass
class PostgresFileBackend(LocalBackend):
    """The PostgreSQL catalog (a fresh database of the session's private cluster) and
    file blobs in the data folder."""

    catalog_url: str = ""
    name: str = "postgresql+file"

    @property
    def backends(self) -> Backends:
        return Backends.of(str(self.data_dir), catalog_url=self.catalog_url)


@dataclass
class PostgresS3Backend(LocalBackend):
    """The cluster's pair: the PostgreSQL catalog (a fresh database) and S3 blobs in a
    fresh bucket of the session's private SeaweedFS. The sweep's age bound is off
    (``sweep_min_age=0``) so that the tests see it sweep; test_s3.py checks the bound.
    A prefix of its own in the session's bucket."""

    catalog_url: str = ""
    weed: SeaweedFS | None = None
    bucket: str = ""
    prefix: str = "blobs"
    name: str = "postgresql+s3"
    _client: object = field(default=None, repr=False)

    @property
    def blobs_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}?sweep_min_age=0"

    @property
    def backends(self) -> Backends:
        return Backends.of(
            str(self.data_dir), catalog_url=self.catalog_url, blobs_url=self.blobs_url
        )

    @property
    def s3(self):
        if self._client is None:
            assert self.weed is not None
            self._client = self.weed.client()
        return self._client

    def published(self) -> list[str]:
        keys = []
        pages = self.s3.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            keys += [item["Key"].rsplit("/", 1)[-1] for item in page.get("Contents", [])]
        return sorted(key for key in keys if len(key) == BLOB_KEY_LENGTH)

    def unfinished(self) -> list[str]:
        """The multipart uploads not completed nor aborted."""
        answer = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/")
        return sorted(upload["UploadId"] for upload in answer.get("Uploads", []))

    def blob_bytes(self) -> list[bytes]:
        return sorted(
            self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()
            for key in self.published()
        )

    def env(self) -> dict[str, str]:
        assert self.weed is not None
        return {**super().env(), **self.weed.env()}


BACKENDS = {
    "sqlite+file": LocalBackend,
    "postgresql+file": PostgresFileBackend,
    "postgresql+s3": PostgresS3Backend,
}
HTTP_BACKENDS = ["sqlite+file", "postgresql+s3"]


# --- fixtures (registered by tests/conftest.py) ------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster():
    """One private PostgreSQL cluster for the session (a database per test)."""
    cluster = Postgres().start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def seaweedfs():
    """One private SeaweedFS for the session (a bucket per test). The in-process
    service finds it through the AWS SDKs' variables, set here for the session."""
    weed = SeaweedFS().start()
    weed.session_bucket = weed.new_bucket()
    saved = {name: os.environ.get(name) for name in weed.env()}
    os.environ.update(weed.env())
    yield weed
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    weed.remove()


def make_backend(request, name: str, data_dir) -> LocalBackend:
    """The backend pair ``name`` over a fresh location (engines from the session)."""
    if name == "sqlite+file":
        return LocalBackend(data_dir)
    catalog_url = request.getfixturevalue("postgres_cluster").new_database()
    if name == "postgresql+file":
        return PostgresFileBackend(data_dir, catalog_url=catalog_url)
    weed = request.getfixturevalue("seaweedfs")
    # One bucket for the session, a prefix per test: SeaweedFS gives each bucket
    # volumes of its own, and runs out of them after a few dozen buckets.
    return PostgresS3Backend(
        data_dir,
        catalog_url=catalog_url,
        weed=weed,
        bucket=weed.session_bucket,
        prefix=f"t-{uuid.uuid4().hex[:16]}",
    )


@pytest.fixture(params=HTTP_BACKENDS)
def backend(request, tmp_path):
    """Each adapter pair of the HTTP suite in turn, over a fresh location."""
    return make_backend(request, request.param, tmp_path / "image-db")


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
