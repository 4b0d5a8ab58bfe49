"""`imagestore copy`: a store moved into other backends, bytes verified, resumable,
no events published for what it copies."""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time

from images import png
from process import SERVICE, clean_env, run_to_end

from store import Backends, open_store

IMAGES = {
    ("pets", "cat.png"): png(width=3, padding=3000),
    ("pets", "dog.png"): png(width=4, padding=4000),
    ("pets", "twin.png"): png(width=3, padding=3000),  # the same bytes as cat.png
    ("holidays été", "beach.png"): png(width=5, padding=600_000),
    ("empty", None): None,
}


def fill(backends: Backends, images=IMAGES) -> dict:
    """Store ``images`` through the store itself; returns {(album, image): record}."""

    async def run() -> dict:
        store = open_store(backends, max_upload_bytes=1 << 30)
        records = {}
        try:
            for album in sorted({album for album, _ in images}):
                await store.create_album(album)
            for (album, image), data in images.items():
                if image is None:
                    continue
                upload = await store.begin_upload(album, image)
                await upload.write(data)
                records[album, image] = await upload.commit()
        finally:
            store.close()
        return records

    return asyncio.run(run())


def contents(backends: Backends) -> dict:
    """{(album, image): (sha256, size, created_at, bytes)} and the albums."""

    async def run() -> tuple[dict, list[str], int]:
        store = open_store(backends, max_upload_bytes=1 << 30, outbox_limit=1000)
        found = {}
        try:
            albums = await store.list_albums()
            for album in albums:
                for image in await store.list_images(album):
                    reader = await store.open_image(album, image)
                    data = b"".join([c async for c in reader.chunks(0, reader.record.size)])
                    reader.close()
                    record = reader.record
                    assert hashlib.sha256(data).hexdigest() == record.sha256
                    found[album, image] = (record.sha256, record.size, record.created_at, data)
            pending = await store.events_pending()
        finally:
            store.close()
        return found, albums, pending

    return asyncio.run(run())


def copy(*args: str, env: dict[str, str] | None = None):
    return run_to_end("copy", *args, env=env, timeout=120)


def test_a_data_folder_is_copied_into_postgresql_and_back(tmp_path, postgres_cluster):
    source = Backends.of(str(tmp_path / "single-host"))
    records = fill(source)
    target_url = postgres_cluster.new_database()
    target_data = tmp_path / "target"
    env = {"IMAGESTORE_CATALOG": target_url, "IMAGESTORE_DATA": str(target_data)}
    result = copy("--from-data", str(tmp_path / "single-host"), env=env)
    assert result.returncode == 0, result.stderr
    assert "copied 4 image(s) from 3 album(s), 0 already there, 0 failed" in result.stdout
    target = Backends.of(str(target_data), catalog_url=target_url)
    found, albums, pending = contents(target)
    assert albums == ["empty", "holidays été", "pets"]
    assert pending == 0, "a copy publishes no events"
    for (album, image), data in IMAGES.items():
        if image is None:
            continue
        sha, size, created_at, stored = found[album, image]
        assert stored == data and size == len(data)
        assert created_at == records[album, image].created_at, "the time it was first stored"
    blob_files = [
        f for _, dirs, files in os.walk(target_data / "blobs") for f in files if len(f) == 32
    ]
    assert len(blob_files) == 3, "identical bytes are stored once in the target too"

    # Any two backends: back from PostgreSQL into another SQLite folder.
    again = tmp_path / "again"
    result = copy(
        "--from-catalog",
        target_url,
        "--from-blobs",
        target.blobs_url,
        env={"IMAGESTORE_DATA": str(again)},
    )
    assert result.returncode == 0, result.stderr
    assert contents(Backends.of(str(again)))[0] == found


def test_a_rerun_skips_what_is_there_and_an_interrupted_copy_resumes(tmp_path):
    source_dir = tmp_path / "source"
    big = {("a", f"big{n}.png"): png(width=n + 1, padding=8_000_000 + n) for n in range(12)}
    fill(Backends.of(str(source_dir)), big)
    env = clean_env(IMAGESTORE_DATA=str(tmp_path / "target"))
    copying = subprocess.Popen(
        [sys.executable, SERVICE, "copy", "--from-data", str(source_dir), "--jobs", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Interrupted once some of it is there (the target's blobs folder fills up).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        blobs = [
            f
            for _, _, files in os.walk(tmp_path / "target" / "blobs")
            for f in files
            if len(f) == 32
        ]
        if len(blobs) >= 3:
            break
        time.sleep(0.02)
    copying.send_signal(signal.SIGKILL)
    copying.wait(10)
    done_before = len(contents(Backends.of(str(tmp_path / "target")))[0])
    assert 0 < done_before < len(big), "the kill landed in the middle of the copy"

    result = copy("--from-data", str(source_dir), env={"IMAGESTORE_DATA": str(tmp_path / "target")})
    assert result.returncode == 0, result.stderr
    assert f"{done_before} already there, 0 failed" in result.stdout
    found = contents(Backends.of(str(tmp_path / "target")))[0]
    assert {key: value[3] for key, value in found.items()} == big

    result = copy("--from-data", str(source_dir), env={"IMAGESTORE_DATA": str(tmp_path / "target")})
    assert "copied 0 image(s) from 1 album(s), 12 already there" in result.stdout


def test_other_bytes_under_a_name_are_left_alone_and_reported(tmp_path):
    fill(
        Backends.of(str(tmp_path / "source")),
        {("a", "x.png"): png(padding=10), ("a", "y.png"): png(padding=20)},
    )
    fill(Backends.of(str(tmp_path / "target")), {("a", "x.png"): png(padding=99)})
    result = copy(
        "--from-data", str(tmp_path / "source"), env={"IMAGESTORE_DATA": str(tmp_path / "target")}
    )
    assert result.returncode == 1
    assert (
        "failed: a/x.png: the target holds other bytes under this name: left alone" in result.stderr
    )
    found = contents(Backends.of(str(tmp_path / "target")))[0]
    assert found["a", "x.png"][3] == png(padding=99)
    assert found["a", "y.png"][3] == png(padding=20)


def test_bad_copy_arguments_say_what_is_wrong(tmp_path):
    assert copy().returncode == 2
    result = copy("--from-catalog", "sqlite:///x")
    assert result.returncode == 2 and "--from-catalog needs --from-blobs" in result.stderr
    result = copy("--from-catalog", "mysql://x", "--from-blobs", "file:///x")
    assert result.returncode == 2 and "is not a catalog URL" in result.stderr
    same = str(tmp_path / "same")
    result = copy("--from-data", same, env={"IMAGESTORE_DATA": same})
    assert result.returncode == 2 and "the same store" in result.stderr


def test_a_data_folder_is_copied_into_postgresql_and_s3_and_back(
    tmp_path, postgres_cluster, seaweedfs
):
    """The cluster's backends: S3 blobs (a private SeaweedFS) under a PostgreSQL catalog."""
    fill(Backends.of(str(tmp_path / "single-host")))
    expected, _, _ = contents(Backends.of(str(tmp_path / "single-host")))
    catalog_url = postgres_cluster.new_database()
    blobs_url = f"s3://{seaweedfs.new_bucket()}/copied"
    env = {
        "IMAGESTORE_CATALOG": catalog_url,
        "IMAGESTORE_BLOBS": blobs_url,
        "IMAGESTORE_DATA": str(tmp_path / "target"),
        **seaweedfs.env(),
    }
    result = copy("--from-data", str(tmp_path / "single-host"), env=env)
    assert result.returncode == 0, result.stderr
    assert "copied 4 image(s) from 3 album(s), 0 already there, 0 failed" in result.stdout
    target = Backends.of(str(tmp_path / "target"), catalog_url=catalog_url, blobs_url=blobs_url)
    found, albums, pending = contents(target)
    assert found == expected and pending == 0
    # A rerun finds everything there.
    result = copy("--from-data", str(tmp_path / "single-host"), env=env)
    assert "copied 0 image(s) from 3 album(s), 4 already there, 0 failed" in result.stdout

    result = copy(
        "--from-catalog",
        catalog_url,
        "--from-blobs",
        blobs_url,
        env={"IMAGESTORE_DATA": str(tmp_path / "again"), **seaweedfs.env()},
    )
    assert result.returncode == 0, result.stderr
    assert contents(Backends.of(str(tmp_path / "again")))[0] == expected
