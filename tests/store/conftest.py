"""The contract tests run on every backend pair (tests/backends.py's BACKENDS)."""

import pytest
from backends import BACKENDS, make_backend


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    return make_backend(request, request.param, tmp_path / "image-db")
