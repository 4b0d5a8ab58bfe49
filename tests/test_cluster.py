"""Three instances of the executable on one PostgreSQL catalog and one S3 bucket, behind
nginx with deploy/nginx.conf: what clients see while instances die, and what is left.

Clients write through nginx and through each instance directly (read-your-writes from
another instance), a reader checks that nothing listed is half there, and in the middle
of the stream a non-leader instance and then the publishing leader are killed with
SIGKILL. Afterwards: every acknowledged change is there with its bytes, every event
reached the subscriber in commit order without a gap (duplicates allowed), and exactly
one instance holds the publisher's lock."""

import hashlib
import json
import threading
import time

import pytest
from cluster import LEADER_LINE, Instance, nginx_in_front
from images import png
from mqtt import Broker, Subscriber
from process import path_of, request

pytestmark = pytest.mark.exe

INSTANCES = 3
WRITERS = 6
IMAGES_PER_WRITER = 14


class Ledger:
    """What the clients were told: each image acknowledged stored (with its sha256), or
    deleted, and the outcomes left unknown by a dead instance (neither is asserted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[tuple[str, str], str] = {}
        self.deleted: set[tuple[str, str]] = set()
        self.unknown: set[tuple[str, str]] = set()
        self.acknowledged = 0
        self.problems: list[str] = []

    def note(self, kind: str, key: tuple[str, str], sha: str = "") -> None:
        with self.lock:
            self.acknowledged += kind != "unknown"
            if kind == "stored":
                self.stored[key] = sha
                self.deleted.discard(key)
                self.unknown.discard(key)
            elif kind == "deleted":
                self.stored.pop(key, None)
                self.deleted.add(key)
                self.unknown.discard(key)
            else:
                self.unknown.add(key)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def attempt(port: int, method: str, path: str, body: bytes | None = None):
    """(status, headers, body), or None when the connection broke (a killed instance)."""
    try:
        return request(port, method, path, body, timeout=30)
    except (OSError, ConnectionError, TimeoutError):
        return None


def writer(number: int, ports: list[int], via: int, ledger: Ledger, stop: threading.Event):
    """One client: its own album, images uploaded, renamed and deleted; after each upload
    read back through an instance other than the one that took it."""
    album = f"album-{number}"
    answer = attempt(via, "POST", path_of(), json.dumps({"albumName": album}).encode())
    if answer is None or answer[0] != 200:
        ledger.problem(f"{album}: creation answered {answer and answer[0]}")
        return
    for index in range(IMAGES_PER_WRITER):
        if stop.is_set():
            return
        # The writer's own instance for the write, the next one for the read.
        write_port = ports[(number + index) % len(ports)]
        read_port = ports[(number + index + 1) % len(ports)]
        name = f"img-{index}.png"
        key = (album, name)
        body = png(padding=number * 997 + index * 131 + 1)
        answer = attempt(write_port, "PUT", path_of(album, "images", name), body)
        if answer is None or answer[0] >= 500:
            # A dead instance (or one losing its backends): the client does not know.
            ledger.note("unknown", key)
            answer = attempt(via, "PUT", path_of(album, "images", name), body)
            if answer is None or answer[0] not in (200, 409):
                continue
            if answer[0] == 409:  # the first try had landed after all: same bytes?
                ledger.note("unknown", key)
                continue
        elif answer[0] != 200:
            ledger.problem(f"PUT {key}: {answer[0]} {answer[2][:200]!r}")
            continue
        ledger.note("stored", key, hashlib.sha256(body).hexdigest())
        back = attempt(read_port, "GET", path_of(album, "images", name))
        if back is not None and back[0] < 500 and (back[0], back[2]) != (200, body):
            ledger.problem(f"read-your-writes {key} via {read_port}: {back[0]}")
        listed = attempt(read_port, "GET", path_of(album, "images"))
        if (
            listed is not None
            and listed[0] == 200
            and name not in json.loads(listed[2])["imageList"]
        ):
            ledger.problem(f"{key} missing from the list of another instance")
        if index % 3 == 1 and (album, f"img-{index - 1}.png") in ledger.stored:
            rename(via, album, f"img-{index - 1}.png", f"renamed-{index - 1}.png", ledger)
        if index % 4 == 3:  # delete this one
            answer = attempt(via, "DELETE", path_of(album, "images", name))
            if answer is not None and answer[0] == 200:
                ledger.note("deleted", key)
            elif answer is None or answer[0] >= 500:
                ledger.note("unknown", key)
            else:
                ledger.problem(f"DELETE {key}: {answer[0]}")


def rename(port: int, album: str, old: str, new: str, ledger: Ledger) -> None:
    answer = attempt(
        port, "PATCH", path_of(album, "images", old), json.dumps({"imageName": new}).encode()
    )
    if answer is not None and answer[0] == 200:
        sha = ledger.stored[(album, old)]
        ledger.note("deleted", (album, old))
        ledger.note("stored", (album, new), sha)
    elif answer is None or answer[0] >= 500:
        ledger.note("unknown", (album, old))
        ledger.note("unknown", (album, new))
    else:
        ledger.problem(f"PATCH {album}/{old}: {answer[0]}")


def reader(port: int, ledger: Ledger, stop: threading.Event) -> None:
    """Nothing half there: every image a list shows is served whole (or was deleted
    since: 404), never a 5xx from a live instance or a short body."""
    while not stop.is_set():
        albums = attempt(port, "GET", path_of())
        if albums is None or albums[0] != 200:
            time.sleep(0.05)
            continue
        for album in json.loads(albums[2])["albumList"]:
            listed = attempt(port, "GET", path_of(album, "images"))
            if listed is None or listed[0] != 200:
                continue
            for name in json.loads(listed[2])["imageList"]:
                got = attempt(port, "GET", path_of(album, "images", name))
                if got is None or got[0] == 404:
                    continue
                length = int(got[1].get("content-length", -1))
                if got[0] != 200 or length != len(got[2]) or not got[2].startswith(b"\x89PNG"):
                    ledger.problem(f"half image {album}/{name}: {got[0]}, {len(got[2])} bytes")


def first_arrivals(events: list[dict]) -> list[int]:
    """The ids in the order they first arrived (a new publisher may repeat some)."""
    seen: set[int] = set()
    order = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            order.append(event["id"])
    return order


@pytest.fixture
def cluster(tmp_path, postgres_cluster, seaweedfs):
    """(instances, nginx port, subscriber, catalog URL)."""
    broker = Broker(tmp_path / "mosquitto").start()
    subscriber = Subscriber(broker.port)
    catalog_url = postgres_cluster.new_database()
    blobs_url, s3_env = f"s3://{seaweedfs.new_bucket()}/cluster", seaweedfs.env()
    env = {
        "IMAGESTORE_CATALOG": catalog_url,
        "IMAGESTORE_BLOBS": blobs_url,
        "IMAGESTORE_MQTT_HOST": "127.0.0.1",
        "IMAGESTORE_MQTT_PORT": str(broker.port),
        "IMAGESTORE_WORKERS": "1",
        "IMAGESTORE_TRUSTED_PROXIES": "127.0.0.1",
        **s3_env,
    }
    instances = []
    for number in range(1, INSTANCES + 1):
        instances.append(Instance(number, tmp_path, env))
        # The first one started leads: the kills below know which is which.
        assert instances[-1].proc.wait_ready(instances[-1].port), instances[-1].proc.log()
        if number == 1:
            assert instances[0].proc.wait_for_log(LEADER_LINE), instances[0].proc.log()
    nginx, port = nginx_in_front([i.port for i in instances], tmp_path)
    yield instances, port, subscriber, catalog_url
    nginx.terminate()
    nginx.wait(10)
    subscriber.close()
    for instance in instances:
        if instance.alive():
            instance.kill()
    broker.stop()


def test_three_instances_behind_nginx_lose_nothing_when_instances_and_the_leader_die(
    cluster, postgres_cluster
):
    instances, nginx_port, subscriber, catalog_url = cluster
    ports = [instance.port for instance in instances]
    ledger, stop = Ledger(), threading.Event()
    writers = [
        threading.Thread(target=writer, args=(n, ports, nginx_port, ledger, stop))
        for n in range(WRITERS)
    ]
    readers = [threading.Thread(target=reader, args=(nginx_port, ledger, stop))]
    for thread in writers + readers:
        thread.start()

    def after(acknowledged: int) -> None:
        deadline = time.monotonic() + 60
        while ledger.acknowledged < acknowledged and time.monotonic() < deadline:
            time.sleep(0.02)

    # A non-leader dies in the middle of the stream, then the leader.
    after(WRITERS * IMAGES_PER_WRITER // 3)
    instances[2].kill()
    after(WRITERS * IMAGES_PER_WRITER * 2 // 3)
    assert instances[0].leads()
    instances[0].kill()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(60)
    assert not ledger.problems, "\n".join(ledger.problems[:20])

    # The survivor takes the lead over within seconds and publishes what is left.
    survivor = instances[1]
    assert survivor.proc.wait_for_log(LEADER_LINE, timeout=20), survivor.proc.log()
    port = survivor.port
    for (album, name), sha in ledger.stored.items():
        if (album, name) in ledger.unknown:
            continue
        status, _, body = request(port, "GET", path_of(album, "images", name))
        assert status == 200, (album, name, status)
        assert hashlib.sha256(body).hexdigest() == sha, (album, name)
    for album, name in ledger.deleted - ledger.unknown:
        assert request(port, "GET", path_of(album, "images", name))[0] == 404, (album, name)
    assert len(ledger.stored) > WRITERS * IMAGES_PER_WRITER // 3

    database = catalog_url.rsplit("/", 1)[1]
    # Every change committed reached the subscriber: ids in commit order, no gap.
    committed = int(
        postgres_cluster.psql(
            "SELECT value FROM counters WHERE name = 'changes'", database=database
        ).strip()
    )
    subscriber.wait_for(committed, timeout=30)
    events = subscriber.quiet_for(1.0)
    assert first_arrivals(events) == list(range(1, committed + 1))
    for event in events:  # a repeat carries the same event
        assert event == next(e for e in events if e["id"] == event["id"])
    # Each image the clients were told is stored arrived with its event.
    named = {(e["album"], e["image"]) for e in events if "image" in e}
    assert set(ledger.stored) - ledger.unknown <= named

    # One publisher: one advisory lock held, by the survivor.
    locks = postgres_cluster.psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        database=database,
    )
    assert int(locks.strip()) == 1
    assert sum(instance.leads() for instance in instances if instance.alive()) == 1
