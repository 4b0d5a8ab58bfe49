"""MQTT notifications from the live service to a real, private mosquitto."""

import asyncio
import hashlib
import socket
import time

import pytest
from conftest import body_json
from images import NOT_IMAGES, png
from mqtt import Broker, Subscriber, make_certificates, wait_for_events
from tornado.iostream import IOStream

from handlers import make_app
from notify import OutboxPublisher
from settings import BrokerSettings
from store import Backends, open_store

OUTBOX_LIMIT = 1_000_000


@pytest.fixture
def broker(tmp_path):
    started = Broker(tmp_path / "broker").start()
    yield started
    started.stop()


@pytest.fixture
def outbox_limit():
    return OUTBOX_LIMIT


@pytest.fixture
def store(data_dir, max_upload_bytes, outbox_limit):
    image_store = open_store(
        Backends.of(str(data_dir)), max_upload_bytes, outbox_limit=outbox_limit
    )
    yield image_store
    image_store.close()


@pytest.fixture
def publisher(store, broker, io_loop):
    sender = OutboxPublisher(store, BrokerSettings(port=broker.port, reconnect_max_seconds=1))
    sender.start()
    yield sender
    sender.close()


@pytest.fixture
def app(store, publisher):
    return make_app(store, notifier_status=publisher.status)


@pytest.fixture
def subscriber(broker):
    listener = Subscriber(broker.port)
    yield listener
    listener.close()


def without_time(event: dict) -> dict:
    stamp = event.pop("time")
    assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f" + "Z")
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-28T10:00:00.123Z")
    return event


@pytest.mark.gen_test(timeout=30)
async def test_each_mutation_publishes_one_exact_event(api, subscriber):
    image = png()
    sha = hashlib.sha256(image).hexdigest()
    assert (await api.create_album("pets")).code == 200
    assert (await api.upload("pets", "cat.png", image)).code == 200
    assert (
        await api.request("PATCH", "/albums/pets/images/cat.png", {"imageName": "kitty.png"})
    ).code == 200
    assert (await api.request("DELETE", "/albums/pets/images/kitty.png")).code == 200
    assert (await api.request("PATCH", "/albums/pets", {"albumName": "animals"})).code == 200
    assert (await api.request("DELETE", "/albums/animals")).code == 200

    events = [without_time(e) for e in await wait_for_events(subscriber, 6)]
    assert events == [
        {"id": 1, "event": "album.created", "album": "pets", "message": "pets album created"},
        {
            "id": 2,
            "event": "image.added",
            "album": "pets",
            "image": "cat.png",
            "message": "cat.png image added to album pets",
            "size": len(image),
            "sha256": sha,
            "contentType": "image/png",
            "width": 1,
            "height": 1,
        },
        {
            "id": 3,
            "event": "image.renamed",
            "album": "pets",
            "image": "kitty.png",
            "from": "cat.png",
            "message": "cat.png image modified to kitty.png",
        },
        {
            "id": 4,
            "event": "image.deleted",
            "album": "pets",
            "image": "kitty.png",
            "message": "kitty.png image deleted from album pets",
        },
        {
            "id": 5,
            "event": "album.renamed",
            "album": "animals",
            "from": "pets",
            "message": "pets album modified to animals",
        },
        {"id": 6, "event": "album.deleted", "album": "animals", "message": "animals album deleted"},
    ]
    await asyncio.sleep(0.3)
    assert len(subscriber.events) == 6, "exactly one message per mutation"


@pytest.fixture
def sentences(broker):
    """What the Go service's subscribers read: the bare sentence, as bytes."""
    listener = Subscriber(broker.port, topic="imagestore/notifier", raw=True)
    yield listener
    listener.close()


@pytest.mark.gen_test(timeout=30)
async def test_the_notifier_topic_carries_the_go_services_bare_sentences(
    api, subscriber, sentences
):
    assert (await api.create_album("pets")).code == 200
    assert (await api.upload("pets", "çat.png", png())).code == 200
    assert (
        await api.request(
            "PATCH", "/albums/pets/images/" + api.path("çat.png"), {"imageName": "k.png"}
        )
    ).code == 200
    assert (await api.request("DELETE", "/albums/pets/images/k.png")).code == 200
    assert (await api.request("PATCH", "/albums/pets", {"albumName": "animals"})).code == 200
    assert (await api.request("DELETE", "/albums/animals")).code == 200
    expected = [
        "pets album created",
        "çat.png image added to album pets",
        "çat.png image modified to k.png",
        "k.png image deleted from album pets",
        "pets album modified to animals",
        "animals album deleted",
    ]
    # Byte for byte: plain UTF-8, no JSON, no quotes, no newline.
    assert await wait_for_events(sentences, 6) == [line.encode("utf-8") for line in expected]
    events = await wait_for_events(subscriber, 6)
    assert [e["message"] for e in events] == expected
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5, 6]
    await asyncio.sleep(0.3)
    assert len(sentences.events) == 6 and len(subscriber.events) == 6


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "topics, json_expected, sentences_expected",
    [
        ({"events_topic": ""}, False, True),
        ({"topic": ""}, True, False),
        ({"topic": "legacy/x", "events_topic": "new/y"}, True, True),
    ],
)
async def test_either_topic_can_be_turned_off_or_renamed(
    tmp_path, broker, io_loop, topics, json_expected, sentences_expected
):
    settings = BrokerSettings(port=broker.port, reconnect_max_seconds=1, **topics)
    json_topic = settings.events_topic or "imagestore/events"
    sentence_topic = settings.topic or "imagestore/notifier"
    json_listener = Subscriber(broker.port, topic=json_topic)
    sentence_listener = Subscriber(broker.port, topic=sentence_topic, raw=True)
    store = open_store(Backends.of(str(tmp_path / "db")), 1 << 20, outbox_limit=OUTBOX_LIMIT)
    sender = OutboxPublisher(store, settings)
    sender.start()
    try:
        for index in range(5):
            await store.create_album(f"a{index}")
        if json_expected:
            events = await wait_for_events(json_listener, 5)
            assert [e["album"] for e in events] == [f"a{i}" for i in range(5)]
        if sentences_expected:
            lines = await wait_for_events(sentence_listener, 5)
            assert lines == [f"a{i} album created".encode() for i in range(5)]
        for _ in range(100):
            if (await store.events_pending()) == 0:
                break
            await asyncio.sleep(0.05)
        assert (await store.events_pending()) == 0, (
            "each row forgotten once its messages are acknowledged"
        )
        await asyncio.sleep(0.3)
        assert bool(json_listener.events) == json_expected
        assert bool(sentence_listener.events) == sentences_expected
    finally:
        sender.close()
        store.close()
        json_listener.close()
        sentence_listener.close()


@pytest.mark.gen_test(timeout=30)
async def test_raw_put_upload_publishes_image_added(api, subscriber):
    await api.create_album("a b")
    assert (await api.put_image("a b", "é.png", png())).code == 200
    events = await wait_for_events(subscriber, 2)
    assert events[1]["event"] == "image.added"
    assert events[1]["message"] == "é.png image added to album a b"


@pytest.fixture
def max_upload_bytes():
    return 64 * 1024


@pytest.mark.gen_test(timeout=30)
async def test_failed_mutations_publish_nothing(api, subscriber, http_port):
    await api.create_album("pets")
    await api.create_album("cats")
    await api.upload("pets", "cat.png", png())
    await wait_for_events(subscriber, 3)

    failures = [
        await api.create_album("pets"),  # 409
        await api.request("DELETE", "/albums/ghost"),  # 404
        await api.request("PATCH", "/albums/pets", {"albumName": "cats"}),  # 409
        await api.request("PATCH", "/albums/ghost", {"albumName": "x"}),  # 404
        await api.upload("pets", "cat.png", png()),  # 409
        await api.upload("ghost", "x.png", png()),  # 404
        await api.upload("pets", "x.svg", NOT_IMAGES["svg"]),  # 415
        await api.put_image("pets", "big.png", png(padding=100 * 1024)),  # 413
        await api.upload("pets", "empty.png", b""),  # 400
        await api.request("DELETE", "/albums/pets/images/ghost.png"),  # 404
        await api.request("PATCH", "/albums/pets/images/ghost.png", {"imageName": "y"}),  # 404
        await api.request("POST", "/albums", "{bad json"),  # 400
    ]
    assert [r.code for r in failures] == [
        409,
        404,
        409,
        404,
        409,
        404,
        415,
        413,
        400,
        404,
        404,
        400,
    ]

    # An upload aborted mid-body.
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", http_port))
    await stream.write(
        b"PUT /api/v1/albums/pets/images/aborted.png HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 60000\r\n\r\n" + png() + b"\0" * 20000
    )
    await asyncio.sleep(0.2)
    stream.close()
    await asyncio.sleep(0.5)
    assert len(subscriber.events) == 3, [e["event"] for e in subscriber.events[3:]]
    assert body_json(await api.list_images("pets")) == {"imageList": ["cat.png"]}


@pytest.mark.gen_test(timeout=60)
async def test_500_mixed_mutations_arrive_in_commit_order(api, subscriber, sentences):
    expected = []
    for index in range(100):
        album = f"album-{index}"
        await api.create_album(album)
        expected.append(("album.created", album))
        await api.put_image(album, "a.png", png())
        expected.append(("image.added", album))
        await api.request("PATCH", f"/albums/{album}/images/a.png", {"imageName": "b.png"})
        expected.append(("image.renamed", album))
        await api.request("DELETE", f"/albums/{album}/images/b.png")
        expected.append(("image.deleted", album))
        if index % 2:
            await api.request("PATCH", f"/albums/{album}", {"albumName": album + "-x"})
            expected.append(("album.renamed", album + "-x"))
        else:
            await api.request("DELETE", f"/albums/{album}")
            expected.append(("album.deleted", album))
    events = await wait_for_events(subscriber, 500, timeout=40)
    assert [(e["event"], e["album"]) for e in events] == expected
    assert [e["id"] for e in events] == list(range(1, 501))
    lines = await wait_for_events(sentences, 500, timeout=40)
    assert lines == [e["message"].encode() for e in events], "both topics in the same order"


@pytest.mark.gen_test(timeout=60)
async def test_broker_killed_mid_stream_loses_nothing(api, broker, store):
    async def mutate(start: int, count: int) -> None:
        for index in range(start, start + count):
            response = await api.create_album(f"a{index}")
            assert response.code == 200

    subscriber = Subscriber(broker.port)
    try:
        await mutate(0, 50)
        await wait_for_events(subscriber, 50)
    finally:
        subscriber.close()
    broker.stop()
    began = time.monotonic()
    await mutate(50, 100)  # the broker is gone: every call still succeeds, promptly
    assert time.monotonic() - began < 10
    broker.start()
    subscriber = Subscriber(broker.port)
    sentences = Subscriber(broker.port, topic="imagestore/notifier", raw=True)
    try:
        # The subscriber came back after the outage; it must see every event since.
        events = await wait_for_events(subscriber, 100, timeout=30)
        await asyncio.sleep(0.5)
        ids = sorted({e["id"] for e in subscriber.events})
        assert ids[-1] == 150 and set(range(51, 151)) <= set(ids)
        assert len(events) >= 100
        # At least once on the sentence topic too (duplicates allowed), in order.
        lines = await wait_for_events(sentences, 100, timeout=30)
        wanted = [f"a{index} album created".encode() for index in range(50, 150)]
        assert [line for line in lines if line in wanted][-100:] == wanted
    finally:
        subscriber.close()
        sentences.close()
    for _ in range(100):
        if (await store.events_pending()) == 0:
            break
        await asyncio.sleep(0.05)
    assert (await store.events_pending()) == 0


@pytest.fixture
def late_broker(tmp_path):
    """A broker that is NOT running when the service starts."""
    broker = Broker(tmp_path / "late-broker")
    yield broker
    broker.stop()


@pytest.mark.gen_test(timeout=60)
async def test_broker_down_at_start_up(tmp_path, late_broker, io_loop):
    store = open_store(Backends.of(str(tmp_path / "db")), 1 << 20, outbox_limit=OUTBOX_LIMIT)
    sender = OutboxPublisher(store, BrokerSettings(port=late_broker.port, reconnect_max_seconds=1))
    sender.start()
    try:
        began = time.monotonic()
        for index in range(200):
            await store.create_album(f"a{index}")
        assert time.monotonic() - began < 10
        assert (await sender.status()) == {
            "connected": False,
            "eventsPending": 200,
            "eventsDropped": 0,
        }
        late_broker.start()
        subscriber = Subscriber(late_broker.port)
        try:
            events = await wait_for_events(subscriber, 200, timeout=30)
            assert [e["album"] for e in events[:200]] == [f"a{i}" for i in range(200)]
        finally:
            subscriber.close()
    finally:
        sender.close()
        store.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_full_outbox_drops_the_oldest_and_the_api_keeps_working(
    tmp_path, late_broker, caplog
):
    store = open_store(Backends.of(str(tmp_path / "db")), 1 << 20, outbox_limit=5)
    sender = OutboxPublisher(store, BrokerSettings(port=late_broker.port, reconnect_max_seconds=1))
    sender.start()
    try:
        for index in range(20):
            await store.create_album(f"a{index}")
        assert (await store.events_pending()) == 5
        assert (await store.events_dropped()) == 15
        assert "the event outbox is full" in caplog.text
        late_broker.start()
        subscriber = Subscriber(late_broker.port)
        try:
            events = await wait_for_events(subscriber, 5, timeout=30)
            await asyncio.sleep(0.3)
            assert [e["album"] for e in subscriber.events] == [f"a{i}" for i in range(15, 20)]
            assert [e["id"] for e in events] == list(range(16, 21))
        finally:
            subscriber.close()
    finally:
        sender.close()
        store.close()


@pytest.mark.gen_test(timeout=30)
async def test_healthz_reports_the_broker_and_the_backlog(api, broker, subscriber):
    response = await api.http.fetch(api.base.replace("/api/v1", "/healthz"))
    health = body_json(response)
    assert health["status"] == "ok"
    assert health["mqtt"] == {
        "enabled": True,
        "connected": True,
        "eventsPending": 0,
        "eventsDropped": 0,
    }
    broker.stop()
    await asyncio.sleep(0.5)
    await api.create_album("x")
    response = await api.http.fetch(api.base.replace("/api/v1", "/healthz"))
    assert body_json(response)["mqtt"] == {
        "enabled": True,
        "connected": False,
        "eventsPending": 1,
        "eventsDropped": 0,
    }


@pytest.mark.gen_test(timeout=30)
async def test_mqtt_5_works_too(tmp_path, broker):
    store = open_store(Backends.of(str(tmp_path / "db5")), 1 << 20, outbox_limit=OUTBOX_LIMIT)
    sender = OutboxPublisher(store, BrokerSettings(port=broker.port, protocol="5"))
    sender.start()
    subscriber = Subscriber(broker.port)
    try:
        await store.create_album("five")
        events = await wait_for_events(subscriber, 1)
        assert events[0]["message"] == "five album created"
        for _ in range(100):
            if (await store.events_pending()) == 0:
                break
            await asyncio.sleep(0.05)
        assert (await store.events_pending()) == 0, "acknowledged (PUBACK) and forgotten"
    finally:
        subscriber.close()
        sender.close()
        store.close()


@pytest.mark.gen_test(timeout=30)
async def test_tls_to_the_broker_with_a_ca_file(tmp_path, caplog):
    ca, cert, key = make_certificates(tmp_path / "certs")
    tls_broker = Broker(tmp_path / "tls-broker", tls=(ca, cert, key)).start()
    store = open_store(Backends.of(str(tmp_path / "db-tls")), 1 << 20, outbox_limit=OUTBOX_LIMIT)
    sender = OutboxPublisher(store, BrokerSettings(port=tls_broker.port, tls=True, ca_file=ca))
    untrusting = open_store(
        Backends.of(str(tmp_path / "db-untrusting")), 1 << 20, outbox_limit=OUTBOX_LIMIT
    )
    # Without our CA, the system's CAs do not vouch for the broker: no connection.
    refused = OutboxPublisher(untrusting, BrokerSettings(port=tls_broker.port, tls=True))
    sender.start()
    refused.start()
    try:
        await store.create_album("secure")
        for _ in range(200):
            if (await sender.status())["connected"] and (await store.events_pending()) == 0:
                break
            await asyncio.sleep(0.05)
        assert (await sender.status()) == {
            "connected": True,
            "eventsPending": 0,
            "eventsDropped": 0,
        }
        await untrusting.create_album("never-sent")
        await asyncio.sleep(1.0)
        assert (await refused.status())["connected"] is False
        assert (await untrusting.events_pending()) == 1
    finally:
        sender.close()
        refused.close()
        store.close()
        untrusting.close()
        tls_broker.stop()
