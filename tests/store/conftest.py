"""Fixtures of the ports' contract tests: each adapter pair of tests/backends.py."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backends import BACKENDS  # noqa: E402

from store.backends import open_blobs, open_catalog  # noqa: E402


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    return BACKENDS[request.param](tmp_path / "data")


@pytest.fixture
def outbox_limit():
    return 1000


@pytest.fixture
def catalog(backend, outbox_limit):
    adapter = open_catalog(backend.backends.catalog_url, outbox_limit)
    yield adapter
    adapter.close()


@pytest.fixture
def blobs(backend):
    adapter = open_blobs(backend.backends.blobs_url)
    yield adapter
    adapter.close()
