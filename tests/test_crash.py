"""Crash safety of the real process: ``kill -9`` at any moment, restart on the same
data folder, and check that

- every listed image downloads whole, and the sha256 of its bytes is its ETag;
- nothing is left under ``<data>/blobs/tmp/``;
- the blob files under ``<data>/blobs/`` are exactly the catalog's blob keys, one per
  distinct content (identical bytes are stored once);
- nothing committed is lost: every operation that got its 200 before the kill is
  there after the restart (the one operation a client had in flight may go either
  way, but wholly).

The service runs as a subprocess; HTTP is spoken with the standard library only.
Set CRASH_SEED=<n> to replay one run of the randomised test.
"""

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import threading
import time
import traceback

import pytest
from conftest import multipart_body
from images import png
from process import Service, json_request, path_of, request

SWEEP_WARNING = "start-up sweep removed"
MiB = 1024 * 1024


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path / "image-db", tmp_path)
    yield svc
    svc.kill()


# --- the data folder, seen from outside --------------------------------------------


def tmp_files(data) -> list[str]:
    folder = data / "blobs" / "tmp"
    return sorted(os.listdir(folder)) if folder.exists() else []


def blob_files(data) -> dict[str, str]:
    """{file name: path relative to blobs/} of every published blob under blobs/
    (its tmp/ of unfinished uploads and its lock aside)."""
    found = {}
    for dirpath, dirs, files in os.walk(data / "blobs"):
        dirs[:] = [name for name in dirs if name != "tmp"]
        for name in files:
            if name != "lock":
                found[name] = os.path.relpath(os.path.join(dirpath, name), data / "blobs")
    return found


def catalog_keys(db_path, read_only=True) -> list[str]:
    uri = f"file:{db_path}?mode=ro" if read_only else f"file:{db_path}"
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        return [row[0] for row in conn.execute("SELECT blob_key FROM images")]
    finally:
        conn.close()


def dead_catalog_keys(data, scratch) -> set[str]:
    """The blob keys of the catalog a killed process left, read from a copy (so the
    restarted service recovers the very files the kill left, untouched by us)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):  # not -shm: SQLite rebuilds it from the WAL
        source = data / f"catalog.sqlite3{suffix}"
        target = scratch / f"catalog.sqlite3{suffix}"
        if target.exists():
            target.unlink()
        if source.exists():
            shutil.copyfile(source, target)
    return set(catalog_keys(scratch / "catalog.sqlite3", read_only=False))


def check_disk(data) -> int:
    """The invariants of a served data folder; returns the number of blobs."""
    assert tmp_files(data) == [], f"files left under tmp/ after the restart: {tmp_files(data)}"
    files = blob_files(data)
    for key, rel in files.items():
        assert rel == os.path.join(key[0:2], key[2:4], key), f"blob outside its shard: {rel}"
    keys = catalog_keys(data / "catalog.sqlite3")
    missing = sorted(set(keys) - set(files))
    unknown = sorted(set(files) - set(keys))
    assert not missing, f"catalog blob keys without a file: {missing}"
    assert not unknown, f"blob files unknown to the catalog: {unknown}"
    check_blob_references(data / "catalog.sqlite3")
    return len(set(keys))


def check_blob_references(db_path) -> None:
    """Identical bytes are stored once: one blob row per sha256, whose count is the
    number of images pointing at it, and no image without its blob row."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        counted = dict(conn.execute("SELECT blob_key, count(*) FROM images GROUP BY blob_key"))
        recorded = dict(conn.execute("SELECT key, refs FROM blobs"))
        assert counted == recorded, "blob reference counts differ from the images"
        shas = conn.execute("SELECT count(DISTINCT sha256), count(*) FROM blobs").fetchone()
        assert shas[0] == shas[1], "two blobs hold the same bytes"
        mixed = conn.execute(
            "SELECT count(*) FROM images i JOIN blobs b ON b.key = i.blob_key "
            "WHERE b.sha256 != i.sha256"
        ).fetchone()[0]
        assert mixed == 0, "an image points at a blob of other bytes"
    finally:
        conn.close()


def observe(port) -> dict[str, dict[str, tuple[str, int]]]:
    """{album: {image: (sha256, size)}} as the API shows it; checks every download."""
    status, _, body = request(port, "GET", path_of())
    assert status == 200, body
    state = {}
    for album in json.loads(body)["albumList"]:
        status, _, body = request(port, "GET", path_of(album, "images"))
        assert status == 200, (album, status, body)
        images = {}
        for image in json.loads(body)["imageList"]:
            status, headers, data = request(port, "GET", path_of(album, "images", image))
            assert status == 200, (
                f"listed image {album}/{image} does not download: {status} {data[:200]!r}"
            )
            digest = hashlib.sha256(data).hexdigest()
            assert headers.get("etag") == f'"{digest}"', (
                f"{album}/{image}: ETag {headers.get('etag')} but the bytes hash to {digest}"
            )
            assert int(headers["content-length"]) == len(data)
            images[image] = (digest, len(data))
        state[album] = images
    return state


def describe_difference(expected, actual) -> str:
    lines = []
    for album in sorted(set(expected) | set(actual)):
        if album not in actual:
            lines.append(f"album {album} missing ({len(expected[album])} images)")
        elif album not in expected:
            lines.append(f"album {album} unexpected ({len(actual[album])} images)")
        else:
            for image in sorted(set(expected[album]) | set(actual[album])):
                want, got = expected[album].get(image), actual[album].get(image)
                if want != got:
                    lines.append(f"{album}/{image}: expected {want}, found {got}")
    return "\n".join(lines) or "(no difference)"


# --- the workload ------------------------------------------------------------------


class UnexpectedResponse(Exception):
    """The service answered, but not with the 200 the operation deserved."""


def copy_model(model):
    return {album: dict(images) for album, images in model.items()}


class Worker(threading.Thread):
    """One client working on its own albums (names ``w<id>-...``), one request at a
    time, so that it knows exactly what must be on the server: ``model`` holds every
    operation answered 200, ``pending`` the operation in flight (if the kill cut it)."""

    def __init__(self, wid, seed, model, counter, port, stop, kill_after=None) -> None:
        super().__init__(name=f"worker-{wid}", daemon=True)
        self.wid = wid
        self.rng = random.Random(seed)
        self.model = model
        self.counter = counter
        self.port = port
        self.stop = stop
        self.pending = None  # (description, apply) of the request the kill may have cut
        self.committed = 0
        self.error = None
        # (n, kill): call kill() as soon as the n-th operation is answered 200
        self.kill_after = kill_after

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"w{self.wid}-{kind}{self.counter}"

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except UnexpectedResponse:
            self.error = traceback.format_exc()
        except (OSError, http.client.HTTPException):
            if not self.stop.is_set():  # the service failed while nobody killed it
                self.error = traceback.format_exc()
            # else: the kill cut ``self.pending``, which may have happened or not
        except BaseException:
            self.error = traceback.format_exc()

    def attempt(self, description, apply, method, path, body=None, headers=None, **send) -> None:
        self.pending = (description, apply)
        status, _, data = request(self.port, method, path, body, headers, **send)
        if status != 200:
            raise UnexpectedResponse(f"{description}: {status} {data[:300]!r}")
        apply(self.model)
        self.pending = None
        self.committed += 1
        if self.kill_after and self.committed == self.kill_after[0]:
            self.kill_after[1]()  # an acknowledged operation must survive this

    def step(self) -> None:
        rng = self.rng
        albums = sorted(self.model)
        images = [(a, i) for a in albums for i in sorted(self.model[a])]
        roll = rng.random()
        if not albums or roll < 0.05:
            self.create_album()
        elif roll < 0.30:
            self.upload(rng.choice(albums), small=True, multipart=True)
        elif roll < 0.52:
            self.upload(rng.choice(albums), small=True, multipart=False)
        elif roll < 0.64:
            large = [(a, i) for a, i in images if self.model[a][i][1] > MiB]
            if len(large) >= 2:  # keep the data folder small: make room first
                self.delete_image(*rng.choice(large))
            else:
                self.upload(rng.choice(albums), small=False, multipart=rng.random() < 0.5)
        elif roll < 0.74 and images:
            self.rename_image(*rng.choice(images))
        elif roll < 0.81:
            self.rename_album(rng.choice(albums))
        elif roll < 0.97 and images:
            self.delete_image(*rng.choice(images))
        elif len(albums) > 1:
            self.delete_album(rng.choice(albums))
        else:
            self.create_album()

    def create_album(self) -> None:
        album = self.fresh("a")

        def apply(model):
            model[album] = {}

        self.attempt(
            f"create album {album}",
            apply,
            "POST",
            path_of(),
            json.dumps({"albumName": album}).encode(),
            {"Content-Type": "application/json"},
        )

    def upload(self, album: str, small: bool, multipart: bool) -> None:
        image = self.fresh("i") + ".png"
        self.counter += 1  # a distinct padding length: distinct bytes for every upload
        padding = self.rng.randrange(0, 30_000) if small else self.rng.randrange(2 * MiB, 4 * MiB)
        data = png(padding=padding + self.counter)
        entry = (hashlib.sha256(data).hexdigest(), len(data))

        def apply(model):
            model[album][image] = entry

        # large bodies trickle in, so that kills land mid-body
        send = {} if small else {"chunk": 64 * 1024, "pause": 0.004}
        kind = "multipart POST" if multipart else "PUT"
        description = f"{kind} {album}/{image} ({len(data)} bytes)"
        if multipart:
            content_type, body = multipart_body(image, data)
            self.attempt(
                description,
                apply,
                "POST",
                path_of(album, "images"),
                body,
                {"Content-Type": content_type},
                **send,
            )
        else:
            self.attempt(
                description,
                apply,
                "PUT",
                path_of(album, "images", image),
                data,
                {"Content-Type": "application/octet-stream"},
                **send,
            )

    def rename_image(self, album: str, image: str) -> None:
        new = self.fresh("r") + ".png"

        def apply(model):
            model[album][new] = model[album].pop(image)

        self.attempt(
            f"rename {album}/{image} to {new}",
            apply,
            "PATCH",
            path_of(album, "images", image),
            json.dumps({"imageName": new}).encode(),
            {"Content-Type": "application/json"},
        )

    def rename_album(self, album: str) -> None:
        new = self.fresh("a")

        def apply(model):
            model[new] = model.pop(album)

        self.attempt(
            f"rename album {album} to {new}",
            apply,
            "PATCH",
            path_of(album),
            json.dumps({"albumName": new}).encode(),
            {"Content-Type": "application/json"},
        )

    def delete_image(self, album: str, image: str) -> None:
        def apply(model):
            del model[album][image]

        self.attempt(f"delete {album}/{image}", apply, "DELETE", path_of(album, "images", image))

    def delete_album(self, album: str) -> None:
        def apply(model):
            del model[album]

        self.attempt(
            f"delete album {album} ({len(self.model[album])} images)",
            apply,
            "DELETE",
            path_of(album),
        )


def wait_for_large_partial_upload(data, at_least: int, timeout: float) -> bool:
    """True once some upload in progress has at least ``at_least`` bytes in tmp/."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in tmp_files(data):
            try:
                if os.stat(data / "blobs" / "tmp" / name).st_size >= at_least:
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.005)
    return False


# --- the tests ---------------------------------------------------------------------

WORKERS = 4
ROUNDS = 12
# How each round's kill is timed, in turn.
RANDOM_MOMENT, MID_UPLOAD, RIGHT_AFTER_A_200 = range(3)


def test_kill_9_under_a_mixed_workload_loses_nothing_committed(service, tmp_path):
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000_007))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    data = service.data
    models = [{} for _ in range(WORKERS)]
    counters = [0] * WORKERS
    committed = uncertain = mid_upload_kills = swept_temps = swept_orphans = 0

    service.start()
    for round_no in range(ROUNDS):
        mode = round_no % 3
        stop = threading.Event()
        pid = service.proc.popen.pid

        def kill_now(pid=pid, stop=stop):
            stop.set()  # first, so that the other workers take their errors for the kill
            os.kill(pid, signal.SIGKILL)

        killer = rng.randrange(WORKERS)
        kill_after = (rng.randrange(1, 40), kill_now) if mode == RIGHT_AFTER_A_200 else None
        workers = [
            Worker(
                w,
                rng.randrange(1 << 30),
                models[w],
                counters[w],
                service.port,
                stop,
                kill_after if w == killer else None,
            )
            for w in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        if mode == MID_UPLOAD:
            # kill while a large upload is mid-body (1 MiB of it already on disk)
            assert wait_for_large_partial_upload(data, MiB, timeout=15), (
                "no upload in progress ever reached 1 MiB in tmp/: uploads are not streamed "
                f"to disk as they arrive?\n{service.log()[-3000:]}"
            )
        elif mode == RIGHT_AFTER_A_200:
            assert stop.wait(timeout=30), "the worker meant to kill never got its 200s"
        else:
            time.sleep(rng.uniform(0.05, 1.5))  # kill at a random moment
        stop.set()
        service.kill()
        for worker in workers:
            worker.join(timeout=30)
            assert not worker.is_alive(), f"{worker.name} is stuck after the kill"
        errors = [w.error for w in workers if w.error]
        assert not errors, "requests failed before the kill:\n" + "\n".join(errors)

        # What the kill left: the catalog never names a blob that is not on disk.
        temps = tmp_files(data)
        files = blob_files(data)
        keys = dead_catalog_keys(data, tmp_path / "scratch")
        assert keys <= set(files), (
            f"catalog rows whose blob is missing: {sorted(keys - set(files))}"
        )
        orphans = set(files) - keys
        if mode == MID_UPLOAD:
            assert temps, "the kill landed mid-upload, yet tmp/ holds no partial file"
            mid_upload_kills += 1

        service.start()
        log = service.log()
        if temps or orphans:
            expected = (
                f"{SWEEP_WARNING} {len(temps)} unfinished upload(s) and "
                f"{len(orphans)} orphan blob(s)"
            )
            assert expected in log, f"round {round_no}: expected {expected!r} in:\n{log}"
        else:
            assert SWEEP_WARNING not in log, f"round {round_no}: nothing to sweep, yet:\n{log}"
        swept_temps += len(temps)
        swept_orphans += len(orphans)

        blob_count = check_disk(data)
        state = observe(service.port)
        # One blob per distinct content: identical bytes are stored once.
        contents = {sha for images in state.values() for sha, _size in images.values()}
        assert blob_count == len(contents)
        owners = {f"w{w.wid}-" for w in workers}
        strangers = [a for a in state if not any(a.startswith(prefix) for prefix in owners)]
        assert not strangers, f"albums nobody created: {strangers}"
        for worker in workers:
            mine = {a: imgs for a, imgs in state.items() if a.startswith(f"w{worker.wid}-")}
            candidates = [("without the operation in flight", worker.model)]
            if worker.pending is not None:
                description, apply = worker.pending
                after = copy_model(worker.model)
                apply(after)
                candidates.append((f"with the operation in flight ({description})", after))
                uncertain += 1
            assert any(mine == model for _, model in candidates), (
                f"round {round_no}, {worker.name} (seed {seed}): the data after the restart "
                "matches neither what was committed nor that plus the operation in flight.\n"
                + "\n".join(
                    f"-- {label}:\n{describe_difference(model, mine)}"
                    for label, model in candidates
                )
            )
            models[worker.wid] = mine
            counters[worker.wid] = worker.counter
            committed += worker.committed

    print(
        f"{ROUNDS} kills: {committed} operations committed, {uncertain} cut by the kill, "
        f"{mid_upload_kills} kills mid-upload, swept {swept_temps} partial uploads and "
        f"{swept_orphans} orphan blobs"
    )
    # The workload really ran, and kills really cut uploads.
    assert committed >= 10 * ROUNDS
    assert mid_upload_kills == len(range(MID_UPLOAD, ROUNDS, 3)) and swept_temps >= mid_upload_kills


def send_partial_upload(port, kind: str, album: str, image: str, total: int, sent: int):
    """Open a raw socket and send the headers and the first ``sent`` bytes of an upload
    whose declared length is larger; return the socket (left open) ."""
    data = png(padding=total)
    if kind == "put":
        path, content_type, body = path_of(album, "images", image), "image/png", data
    else:
        content_type, body = multipart_body(image, data)
        path = path_of(album, "images")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"{'PUT' if kind == 'put' else 'POST'} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:sent]
    )
    return sock


@pytest.mark.parametrize("kind", ["put", "post"])
def test_kill_9_mid_body_leaves_no_trace(service, kind):
    data = service.data
    service.start()
    assert json_request(service.port, "POST", path_of(), {"albumName": "pets"})[0] == 200
    kept = png(padding=5000)
    status, _, body = request(service.port, "PUT", path_of("pets", "images", "kept.png"), kept)
    assert status == 200, body

    sock = send_partial_upload(service.port, kind, "pets", "cut.png", total=6 * MiB, sent=2 * MiB)
    try:
        assert wait_for_large_partial_upload(data, MiB, timeout=10), (
            f"the partial upload never reached 1 MiB in tmp/: {tmp_files(data)}"
        )
        assert len(tmp_files(data)) == 1
        service.kill()
    finally:
        sock.close()
    assert len(tmp_files(data)) == 1  # the kill left it: nobody cleaned up

    service.start()
    assert f"{SWEEP_WARNING} 1 unfinished upload(s) and 0 orphan blob(s)" in service.log()
    assert tmp_files(data) == []
    assert check_disk(data) == 1
    assert observe(service.port) == {
        "pets": {"kept.png": (hashlib.sha256(kept).hexdigest(), len(kept))}
    }
    status, _, body = request(service.port, "GET", path_of("pets", "images", "cut.png"))
    assert status == 404, body
    # the name is free: the cut upload can be sent again, whole
    whole = png(padding=100_000)
    status, _, body = request(service.port, "PUT", path_of("pets", "images", "cut.png"), whole)
    assert status == 200, body


def test_start_up_sweeps_what_a_crash_leaves_and_keeps_the_rest(service):
    """The leftovers a kill can leave (a partial upload in tmp/; a blob published but
    never committed, or whose row was deleted) are removed at start-up, and only them."""
    data = service.data
    service.start()
    assert json_request(service.port, "POST", path_of(), {"albumName": "pets"})[0] == 200
    images = {f"{n}.png": png(padding=1000 * n + 1) for n in range(1, 4)}
    for name, content in images.items():
        assert request(service.port, "PUT", path_of("pets", "images", name), content)[0] == 200
    service.kill()

    orphan_key = "ab" * 16
    (data / "blobs" / "ab" / "ab").mkdir(parents=True, exist_ok=True)
    (data / "blobs" / "ab" / "ab" / orphan_key).write_bytes(png(padding=77))
    (data / "blobs" / "tmp" / ("cd" * 16 + ".part")).write_bytes(b"\x89PNG half")
    (data / "blobs" / "tmp" / ("ef" * 16 + ".part")).write_bytes(b"")

    service.start()
    assert f"{SWEEP_WARNING} 2 unfinished upload(s) and 1 orphan blob(s)" in service.log()
    assert check_disk(data) == 3
    assert observe(service.port) == {
        "pets": {n: (hashlib.sha256(c).hexdigest(), len(c)) for n, c in images.items()}
    }

    # A clean restart has nothing to sweep and says nothing about it.
    service.kill()
    service.start()
    assert SWEEP_WARNING not in service.log()
    assert check_disk(data) == 3


# --- identical bytes stored once ----------------------------------------------------


def put_image(port, album: str, image: str, data: bytes) -> int:
    return request(port, "PUT", path_of(album, "images", image), data)[0]


def test_dedup_uploads_and_last_deletes_survive_kill_9_at_any_moment(service, tmp_path):
    """Rounds of: uploads of bytes already stored (each ends with one blob for two
    names) and deletes of the last name of shared bytes (each frees the blob), with a
    kill -9 at a random moment; after each restart every listed image downloads whole,
    no blob is unreferenced, no reference lacks its blob, and counts are exact."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    data = service.data
    contents = [png(width=1 + n, padding=400_000 + n) for n in range(4)]
    service.start()
    assert json_request(service.port, "POST", path_of(), {"albumName": "a"})[0] == 200
    for round_no in range(8):
        for index, content in enumerate(contents):
            put_image(service.port, "a", f"base-{round_no}-{index}.png", content)
        stop = threading.Event()

        def churn(worker: int, stop: threading.Event, port: int, prefix: str) -> None:
            step = 0
            while not stop.is_set():
                step += 1
                name = f"{prefix}-{worker}-{step}.png"
                try:
                    if put_image(port, "a", name, rng.choice(contents)) == 200 and step % 2:
                        request(port, "DELETE", path_of("a", "images", name))
                except OSError:
                    return  # the kill

        workers = [
            threading.Thread(target=churn, args=(w, stop, service.port, f"copy-{round_no}"))
            for w in range(3)
        ]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(0.05, 0.8))
        if round_no % 2:  # the last names of some shared bytes go just before the kill
            for index in range(len(contents)):
                request(
                    service.port, "DELETE", path_of("a", "images", f"base-{round_no}-{index}.png")
                )
        service.kill()
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        service.start()
        check_disk(data)  # every reference has its blob, every blob a reference, counts exact
        state = observe(service.port)  # every listed image downloads whole
        shas = {sha for sha, _ in state["a"].values()}
        assert shas <= {hashlib.sha256(c).hexdigest() for c in contents}
        assert len(blob_files(data)) == len(shas), "one blob per distinct content"
    # Deleting every name frees every blob.
    for name in observe(service.port)["a"]:
        assert request(service.port, "DELETE", path_of("a", "images", name))[0] == 200
    assert blob_files(data) == {}
