"""What is particular to the S3 blob store (the contract tests and the HTTP suite run on
it too): uploads stream into a multipart upload and a client gone aborts it; the
sweep's age bound; the service's workers forked with the S3 store (obstore's runtime
does not survive fork(): the parent must never start one)."""

import asyncio
import hashlib
import json
import uuid

import pytest
from images import png
from process import create_album, path_of, request, serve

from store import Backends, open_store

MiB = 1024 * 1024
S3_ONLY = pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)


def image_of_size(size: int) -> bytes:
    overhead = len(png(padding=1)) - 1
    return png(padding=size - overhead)


async def until(condition, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return value


@S3_ONLY
@pytest.mark.gen_test(timeout=90)
async def test_an_upload_streams_into_a_multipart_upload_and_a_client_gone_aborts_it(
    api, http_port, backend, store
):
    assert (await api.create_album("a")).code == 200
    data = image_of_size(16 * MiB)
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    try:
        writer.write(
            f"PUT /api/v1/albums/a/images/x.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: image/png\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: 12 * MiB]
        )
        await writer.drain()
        # Two parts' worth sent: S3 holds a multipart upload while the body arrives,
        # and nothing is visible.
        await until(lambda: backend.unfinished())
        assert backend.published() == []
        assert body_json_of(await api.list_images("a")) == {"imageList": []}
    finally:
        writer.close()
    await until(lambda: store.running_uploads == 0)
    await until(lambda: backend.unfinished() == [])
    assert backend.published() == []
    assert body_json_of(await api.list_images("a")) == {"imageList": []}
    # The name is free again, and a whole upload of the same size is stored.
    response = await api.put_image("a", "x.png", data, headers={"Content-Type": "image/png"})
    assert response.code == 200, response.body
    assert backend.blob_bytes() == [data]
    assert backend.unfinished() == []
    assert (await api.download("a", "x.png")).body == data


def body_json_of(response):
    return json.loads(response.body)


@S3_ONLY
@pytest.mark.gen_test(timeout=60)
async def test_the_sweep_leaves_unreferenced_objects_younger_than_its_bound(backend):
    """An object no row references may be an upload between its publish and its catalog
    commit on another instance: only objects older than the bound are swept."""
    orphan = uuid.uuid4().hex
    backend.s3.put_object(Bucket=backend.bucket, Key=f"{backend.prefix}/{orphan}", Body=b"x")
    cautious = Backends.of(
        str(backend.data_dir),
        catalog_url=backend.catalog_url,
        blobs_url=f"s3://{backend.bucket}/{backend.prefix}",  # the default bound: an hour
    )
    store = open_store(cautious, max_upload_bytes=MiB)
    try:
        assert await store.sweep() == (0, 0)
    finally:
        store.close()
    assert backend.published() == [orphan]
    store = open_store(backend.backends, max_upload_bytes=MiB)  # sweep_min_age=0
    try:
        assert await store.sweep() == (0, 1)
    finally:
        store.close()
    assert backend.published() == []


@S3_ONLY
def test_forked_workers_serve_s3_after_the_start_up_sweep(run, tmp_path, backend):
    """The parent sweeps (in a child of its own) before it forks the workers: each
    worker makes its own S3 client, and every one serves."""
    orphan = uuid.uuid4().hex
    backend.s3.put_object(Bucket=backend.bucket, Key=f"{backend.prefix}/{orphan}", Body=b"x")
    proc, port = serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db")),
            {**backend.env(), "IMAGESTORE_WORKERS": "3"},
        ),
    )
    assert "removed 0 unfinished upload(s) and 1 orphan blob(s)" in proc.log_path.read_text()
    assert orphan not in backend.published()
    create_album(port, "pets")
    images = {f"{index}.png": png(padding=1000 * index + 7) for index in range(12)}
    for name, data in images.items():  # spread over the workers by the kernel
        assert request(port, "PUT", path_of("pets", "images", name), data)[0] == 200
    for name, data in images.items():
        status, _, body = request(port, "GET", path_of("pets", "images", name))
        assert status == 200 and body == data
    status, _, body = request(port, "GET", "/healthz")
    health = json.loads(body)
    assert status == 200 and health["blobs"]["reachable"] is True
    assert sorted(hashlib.sha256(b).hexdigest() for b in backend.blob_bytes()) == sorted(
        hashlib.sha256(b).hexdigest() for b in images.values()
    )
