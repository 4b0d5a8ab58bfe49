"""Slow and greedy clients on a real network: trickled bodies are cut (408, nothing
left behind) while slow-but-steady uploads go through, idle connections and slow or
oversized headers are dropped, and many slow uploads neither starve the other
requests nor go beyond the concurrency limit (503 + Retry-After before the body).

The service runs as a subprocess; the clients speak HTTP by hand (tests/wire.py).
"""

import hashlib
import json
import os
import time

import pytest
from images import png
from process import create_album, path_of, request, serve
from wire import Wire, chunk, request_bytes

KiB = 1024


def serve_with(run, data, *flags: str, workers: int | None = None):
    env = {} if workers is None else {"IMAGESTORE_WORKERS": str(workers)}
    return serve(run, lambda port: (("--port", str(port), "--data", str(data), *flags), env))


def temp_files(data) -> list[str]:
    return os.listdir(data / "blobs" / "tmp")


def wait_until(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def image_list(port, album: str) -> list[str]:
    status, _, body = request(port, "GET", path_of(album, "images"))
    assert status == 200, body
    return json.loads(body)["imageList"]


def timed_get_albums(port) -> float:
    started = time.monotonic()
    status, _, _ = request(port, "GET", path_of(), timeout=10)
    assert status == 200
    return time.monotonic() - started


def multipart_head(boundary: str, filename: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


# --- slow bodies ---------------------------------------------------------------------

BODY_FLAGS = ("--body-timeout-seconds", "2", "--body-min-bytes-per-second", "1KiB")


def test_trickled_bodies_are_cut_after_the_body_timeout_and_leave_nothing(run, tmp_path):
    data = tmp_path / "data"
    proc, port = serve_with(run, data, *BODY_FLAGS)
    create_album(port, "a")
    image = png(padding=200 * KiB)

    # A raw PUT that reads the answer, a multipart POST that never does, and a JSON
    # body (cut by Tornado's own body timeout): all trickle one byte a second.
    put = Wire(port)
    put.send(
        request_bytes(
            "PUT",
            path_of("a", "images", "put.png"),
            {"Content-Length": str(len(image))},
            image[:100],
        )
    )
    boundary = "b0undary"
    head = multipart_head(boundary, "post.png")
    post = Wire(port)
    post.send(
        request_bytes(
            "POST",
            path_of("a", "images"),
            {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + len(image) + 100),
            },
            head + image[:100],
        )
    )
    album = Wire(port)
    album.send(request_bytes("POST", path_of(), {"Content-Length": "100"}, b'{"albumName": "'))
    started = time.monotonic()
    wait_until(lambda: len(temp_files(data)) == 2, 5, "both uploads should be under tmp/")

    put_answered = post_cut = album_cut = None
    sent = 100
    while put_answered is None or post_cut is None or album_cut is None:
        elapsed = time.monotonic() - started
        assert elapsed < 12, (put_answered, post_cut, album_cut)
        if put_answered is None and put.readable():
            put_answered = elapsed
        elif put_answered is None:
            put.send(image[sent : sent + 1])
        if post_cut is None and not post.send(image[sent : sent + 1]):
            post_cut = elapsed
        if album_cut is None and (album.readable() or not album.send(b"x")):
            album_cut = elapsed
        sent += 1
        time.sleep(1.0)

    answer = put.read_response()
    assert answer.status == 408, answer
    assert json.loads(answer.body)["error"].startswith("the upload is too slow")
    assert answer.header("x-content-type-options") == "nosniff"
    assert put.closed_within(2), "the connection should be closed after the 408"
    assert album.closed_within(2)
    for client in (put, post, album):
        client.close()
    # Cut at the body timeout (2 s), not before, not much after.
    assert 1.5 < put_answered < 5, put_answered
    assert 1.5 < post_cut < 7, post_cut
    assert 1.5 < album_cut < 5, album_cut
    wait_until(lambda: temp_files(data) == [], 2, "the temporary files should be gone")
    assert image_list(port, "a") == []
    status, _, body = request(port, "GET", path_of())
    assert json.loads(body)["albumList"] == ["a"]
    assert proc.popen.poll() is None


def test_a_steady_upload_longer_than_the_body_timeout_succeeds(run, tmp_path):
    data = tmp_path / "data"
    proc, port = serve_with(run, data, *BODY_FLAGS)
    create_album(port, "a")
    image = png(padding=72 * KiB)
    pieces = [image[i : i + 6 * KiB] for i in range(0, len(image), 6 * KiB)]
    started = time.monotonic()
    with Wire(port) as wire:
        wire.send(
            request_bytes(
                "PUT", path_of("a", "images", "steady.png"), {"Transfer-Encoding": "chunked"}
            )
        )
        # 24 KiB/s, well above the 1 KiB/s minimum, for about 3 s.
        assert wire.send_until_answered((chunk(piece) for piece in pieces), pause=0.25)
        wire.send(chunk(b""))
        answer = wire.read_response()
    elapsed = time.monotonic() - started
    assert answer.status == 200, answer
    assert elapsed > 2.5, "the upload should have lasted longer than the body timeout"
    status, headers, body = request(port, "GET", path_of("a", "images", "steady.png"))
    assert status == 200 and body == image
    assert headers["etag"] == f'"{hashlib.sha256(image).hexdigest()}"'


# --- connections and headers ---------------------------------------------------------


def test_idle_connections_and_slow_headers_are_closed(run, tmp_path):
    proc, port = serve_with(run, tmp_path / "data", "--idle-timeout-seconds", "1")
    silent = Wire(port)  # connects, says nothing
    kept = Wire(port)  # one request, then idle on a kept-alive connection
    kept.send(request_bytes("GET", path_of()))
    assert kept.read_response().status == 200
    slow = Wire(port)  # sends its headers a few bytes at a time, forever
    slow.send(b"GET /api/v1/albums HTTP/1.1\r\n")
    started = time.monotonic()
    closed: dict[str, float] = {}
    while len(closed) < 3:
        elapsed = time.monotonic() - started
        assert elapsed < 6, f"still open after {elapsed:.1f}s: {closed}"
        for name, wire in (("silent", silent), ("kept", kept), ("slow", slow)):
            if name not in closed and wire.closed_within(0.05):
                closed[name] = elapsed
        if "slow" not in closed and not slow.send(b"X-Slow: 1\r\n"):
            closed["slow"] = elapsed
        time.sleep(0.2)
    for wire in (silent, kept, slow):
        wire.close()
    for name, when in closed.items():
        assert 0.7 < when < 4, (name, when)
    assert timed_get_albums(port) < 2


def test_an_oversized_header_block_is_refused(run, tmp_path):
    proc, port = serve_with(run, tmp_path / "data", "--max-header-bytes", "8KiB")
    status, _, _ = request(port, "GET", path_of(), headers={"X-Fits": "a" * 4 * KiB})
    assert status == 200
    oversized = [
        {"X-Huge": "a" * 16 * KiB},
        {f"X-Many-{i}": "b" * 100 for i in range(200)},
        {"Cookie": "c" * 64 * KiB},
    ]
    for headers in oversized:
        with Wire(port) as wire:
            wire.send(request_bytes("GET", path_of(), headers))
            try:
                answer = wire.read_response()
            except Exception:  # closed without an answer: refused too
                answer = None
            assert answer is None or 400 <= answer.status < 500, answer
            assert wire.closed_within(2)
    assert request(port, "GET", path_of())[0] == 200
    assert "not found within 8192 bytes" in proc.log()


# --- many uploads at once ------------------------------------------------------------


def test_fifty_slow_uploads_do_not_starve_other_requests(run, tmp_path):
    data = tmp_path / "data"
    proc, port = serve_with(
        run, data, "--max-concurrent-uploads", "128", "--max-uploads-per-client", "128"
    )
    create_album(port, "a")
    images = {f"slow{i}.png": png(width=1 + i % 5, padding=24 * KiB + i) for i in range(50)}
    clients = {}
    for name, image in images.items():
        wire = Wire(port)
        wire.send(
            request_bytes(
                "PUT",
                path_of("a", "images", name),
                {"Content-Length": str(len(image))},
                image[: 2 * KiB],
            )
        )
        clients[name] = wire
    wait_until(lambda: len(temp_files(data)) == 50, 10, "all 50 uploads should be running")
    latencies = []
    sent = 2 * KiB
    for _round in range(7):  # 3 KiB each, every 0.3 s: up to 23 KiB of each image
        for name, wire in clients.items():
            assert not wire.readable(), f"{name} was answered early"
            assert wire.send(images[name][sent : sent + 3 * KiB])
        sent += 3 * KiB
        latencies.append(timed_get_albums(port))
        time.sleep(0.3)
    for name, wire in clients.items():
        wire.send(images[name][sent:])
    statuses = {name: wire.read_response().status for name, wire in clients.items()}
    for wire in clients.values():
        wire.close()
    assert set(statuses.values()) == {200}, statuses
    assert max(latencies) < 2.0, latencies
    assert image_list(port, "a") == sorted(images)
    assert temp_files(data) == []
    status, _, body = request(port, "GET", path_of("a", "images", "slow7.png"))
    assert status == 200 and body == images["slow7.png"]


@pytest.mark.parametrize("workers", [1, 2])
def test_beyond_the_upload_limit_503_comes_before_the_body(run, tmp_path, workers):
    data = tmp_path / "data"
    # The limit is shared by the workers: exactly 10 get in, however the kernel
    # spreads the connections between them.
    proc, port = serve_with(
        run,
        data,
        "--max-concurrent-uploads",
        "10",
        "--max-uploads-per-client",
        "10",
        workers=workers,
    )
    create_album(port, "a")
    image = png(padding=32 * KiB)

    def start_put(name: str) -> Wire:
        wire = Wire(port)
        wire.send(
            request_bytes(
                "PUT",
                path_of("a", "images", name),
                {"Content-Length": str(len(image)), "Expect": "100-continue"},
            )
        )
        return wire

    running = {f"run{i}.png": start_put(f"run{i}.png") for i in range(10)}
    for name, wire in running.items():
        assert wire.read_response(skip_continue=False).status == 100, name
    refused = []
    for i in range(40):
        if i % 2:
            wire = start_put(f"refused{i}.png")
        else:
            wire = Wire(port)
            wire.send(
                request_bytes(
                    "POST",
                    path_of("a", "images"),
                    {
                        "Content-Type": "multipart/form-data; boundary=xyz",
                        "Content-Length": str(len(image) + 200),
                        "Expect": "100-continue",
                    },
                )
            )
        started = time.monotonic()
        answer = wire.read_response(skip_continue=False)  # not one body byte was sent
        refused.append(time.monotonic() - started)
        wire.close()
        assert answer.status == 503, answer
        assert int(answer.header("retry-after")) >= 1
        assert "10 uploads are already running" in json.loads(answer.body)["error"]
        assert answer.header("x-content-type-options") == "nosniff"
    assert max(refused) < 2.0, refused
    assert timed_get_albums(port) < 2.0
    assert len(temp_files(data)) == 10

    # Half of the running uploads finish, the other half are abandoned.
    names = sorted(running)
    for name in names[:5]:
        running[name].send(image)
    for name in names[5:]:
        running[name].close()
    for name in names[:5]:
        assert running[name].read_response().status == 200, name
        running[name].close()
    wait_until(lambda: temp_files(data) == [], 5, "abandoned uploads should leave nothing")

    # Every slot is free again: ten more get in, and all of them succeed.
    again = {f"again{i}.png": start_put(f"again{i}.png") for i in range(10)}
    for name, wire in again.items():
        assert wire.read_response(skip_continue=False).status == 100, name
        wire.send(image)
    for name, wire in again.items():
        assert wire.read_response().status == 200, name
        wire.close()
    assert image_list(port, "a") == sorted(names[:5] + list(again))


# --- upload slots after a worker's death, and per client -----------------------------


def worker_pids(pid: int) -> set[int]:
    children = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            children |= {int(child) for child in listing.read().split()}
    return children


def stalled_put(port: int, name: str, image: bytes, source: str = "", headers=None) -> Wire:
    """A PUT whose first KiB is sent and the rest withheld: it holds a slot and a file."""
    wire = Wire(port, source=source)
    wire.send(
        request_bytes(
            "PUT",
            path_of("a", "images", name),
            {"Content-Length": str(len(image)), **(headers or {})},
            image[:KiB],
        )
    )
    return wire


def test_a_dead_workers_upload_slots_and_files_are_freed_at_once(run, tmp_path):
    data = tmp_path / "data"
    proc, port = serve_with(
        run, data, "--max-concurrent-uploads", "4", "--max-uploads-per-client", "4", workers=2
    )
    create_album(port, "a")
    image = png(padding=64 * KiB)
    stalled = [stalled_put(port, f"stalled{i}.png", image) for i in range(4)]
    wait_until(lambda: len(temp_files(data)) == 4, 10, "four uploads should be running")
    refused = stalled_put(port, "fifth.png", image)
    assert refused.read_response().status == 503
    refused.close()

    before = worker_pids(proc.popen.pid)
    assert len(before) == 2
    for pid in before:
        os.kill(pid, 9)
    wait_until(
        lambda: len(worker_pids(proc.popen.pid) - before) == 2, 15, "two new workers should start"
    )
    # The dead workers' unfinished files go now, not at the next restart...
    wait_until(lambda: temp_files(data) == [], 5, "the dead workers' files should be removed")
    assert "freed their slots" in proc.log()
    for wire in stalled:
        wire.close()
    # ... and every slot is free again: four uploads at once succeed.
    wait_until(lambda: request(port, "GET", path_of())[0] == 200, 10, "the service answers")
    again = [stalled_put(port, f"again{i}.png", image) for i in range(4)]
    for wire in again:
        wire.send(image[KiB:])
    for wire in again:
        assert wire.read_response().status == 200
        wire.close()
    assert image_list(port, "a") == [f"again{i}.png" for i in range(4)]


@pytest.mark.parametrize("workers", [1, 2])
def test_one_client_cannot_take_every_upload_slot(run, tmp_path, workers):
    data = tmp_path / "data"
    proc, port = serve_with(
        run,
        data,
        "--max-concurrent-uploads",
        "10",
        "--max-uploads-per-client",
        "3",
        workers=workers,
    )
    create_album(port, "a")
    image = png(padding=32 * KiB)
    greedy = [stalled_put(port, f"greedy{i}.png", image) for i in range(3)]
    wait_until(lambda: len(temp_files(data)) == 3, 10, "three uploads should be running")
    fourth = stalled_put(port, "greedy3.png", image)
    answer = fourth.read_response()
    fourth.close()
    assert answer.status == 429
    assert int(answer.header("retry-after")) >= 1
    assert json.loads(answer.body) == {
        "error": "this client already runs 3 uploads (IMAGESTORE_MAX_UPLOADS_PER_CLIENT): "
        "retry when one has finished"
    }
    # Another address still gets in, up to its own share; X-Forwarded-For is not
    # believed from a peer that is not a trusted proxy.
    others = [stalled_put(port, f"other{i}.png", image, source="127.0.0.2") for i in range(3)]
    wait_until(lambda: len(temp_files(data)) == 6, 10, "another client's uploads should run")
    lying = stalled_put(port, "lying.png", image, headers={"X-Forwarded-For": "198.51.100.7"})
    assert lying.read_response().status == 429
    lying.close()
    for wire in greedy + others:
        wire.send(image[KiB:])
        assert wire.read_response().status == 200
        wire.close()


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(run, tmp_path):
    data = tmp_path / "data"
    proc, port = serve_with(
        run,
        data,
        "--max-concurrent-uploads",
        "10",
        "--max-uploads-per-client",
        "2",
        "--trusted-proxies",
        "127.0.0.1",
    )
    create_album(port, "a")
    image = png(padding=32 * KiB)

    def via_proxy(name: str, client: str) -> Wire:
        # A proxy appends the address it saw; what the client claimed stays on the left.
        return stalled_put(port, name, image, headers={"X-Forwarded-For": f"10.9.9.9, {client}"})

    first = [via_proxy(f"one{i}.png", "203.0.113.1") for i in range(2)]
    second = [via_proxy(f"two{i}.png", "203.0.113.2") for i in range(2)]
    wait_until(lambda: len(temp_files(data)) == 4, 10, "each forwarded client gets its share")
    third = via_proxy("one2.png", "203.0.113.1")
    assert third.read_response().status == 429
    third.close()
    for wire in first + second:
        wire.send(image[KiB:])
        assert wire.read_response().status == 200
        wire.close()
