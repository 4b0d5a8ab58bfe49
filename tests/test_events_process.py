"""Notifications end to end with imagestore as a real process: restarts, SIGKILL,
authentication, `imagestore watch`, and IMAGESTORE_MQTT=off."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mqtt import Broker, Subscriber
from process import SERVICE, clean_env, create_album, request, serve


def healthz(port: int) -> dict:
    status, _, body = request(port, "GET", "/healthz")
    assert status == 200
    return json.loads(body)


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def mqtt_env(broker: Broker, **more: str) -> dict[str, str]:
    return {"IMAGESTORE_MQTT_HOST": "127.0.0.1", "IMAGESTORE_MQTT_PORT": str(broker.port), **more}


def serve_with(run, data, env: dict[str, str]):
    """imagestore over ``data`` on a free port, with ``env`` on top of a clean one."""
    return serve(run, lambda port: (("--port", str(port), "--data", str(data)), env))


@pytest.fixture
def broker(tmp_path):
    made = Broker(tmp_path / "broker")  # not started: each test decides when
    yield made
    made.stop()


def test_sigkill_with_events_pending_and_broker_down_loses_no_event(run, tmp_path, broker):
    data = tmp_path / "db"
    env = mqtt_env(broker)
    proc, port = serve_with(run, data, env)
    began = time.monotonic()
    for index in range(30):
        create_album(port, f"album-{index}")
    assert time.monotonic() - began < 10, "a missing broker slowed the API down"
    assert healthz(port)["mqtt"] == {
        "enabled": True,
        "connected": False,
        "eventsPending": 30,
        "eventsDropped": 0,
    }
    time.sleep(2.5)  # several reconnect attempts
    assert proc.log().count("retrying with backoff") == 1, proc.log()
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(10)

    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        proc, port = serve_with(run, data, env)
        events = subscriber.wait_for(30)
        assert [e["album"] for e in events[:30]] == [f"album-{i}" for i in range(30)]
        assert [e["id"] for e in events[:30]] == list(range(1, 31))
        wait_until(lambda: healthz(port)["mqtt"]["eventsPending"] == 0)
        assert healthz(port)["mqtt"]["connected"] is True
    finally:
        subscriber.close()


def test_broker_restarts_and_the_service_restarts_every_event_arrives(run, tmp_path, broker):
    data = tmp_path / "db"
    env = mqtt_env(broker)
    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        proc, port = serve_with(run, data, env)
        for index in range(20):
            create_album(port, f"a{index}")
        subscriber.wait_for(20)
        broker.stop()
        for index in range(20, 40):
            create_album(port, f"a{index}")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(20) == 0
    finally:
        subscriber.close()
    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        proc, port = serve_with(run, data, env)
        # At least once: an event of the first twenty whose PUBACK the killed broker
        # never sent may come again, before the others; consumers drop it by id.
        wait_until(lambda: {21, 40} <= {e["id"] for e in subscriber.events})
        by_id = {e["id"]: e["album"] for e in subscriber.events}
        assert [by_id[i] for i in range(21, 41)] == [f"a{i}" for i in range(20, 40)]
        assert set(by_id) - set(range(21, 41)) <= set(range(1, 21))
        ids = [e["id"] for e in subscriber.events]
        assert ids == sorted(ids), "in order"
        assert proc.log().count("connected to the MQTT broker") == 1
    finally:
        subscriber.close()


def test_authentication_right_and_wrong_credentials(run, tmp_path):
    broker = Broker(tmp_path / "auth-broker", users={"imagestore": "s3cret-pass", "reader": "r"})
    broker.start()
    subscriber = Subscriber(broker.port, username="reader", password="r")
    try:
        good, good_port = serve_with(
            run,
            tmp_path / "good",
            mqtt_env(
                broker,
                IMAGESTORE_MQTT_USERNAME="imagestore",
                IMAGESTORE_MQTT_PASSWORD="s3cret-pass",
            ),
        )
        create_album(good_port, "pets")
        events = subscriber.wait_for(1)
        assert events[0]["message"] == "pets album created"

        bad, bad_port = serve_with(
            run,
            tmp_path / "bad",
            mqtt_env(
                broker, IMAGESTORE_MQTT_USERNAME="imagestore", IMAGESTORE_MQTT_PASSWORD="wrong-pass"
            ),
        )
        wait_until(lambda: "refused the connection" in bad.log())
        create_album(bad_port, "still-works")
        status, _, body = request(bad_port, "GET", "/api/v1/albums")
        assert status == 200 and json.loads(body) == {"albumList": ["still-works"]}
        assert healthz(bad_port)["mqtt"]["connected"] is False
        time.sleep(2.5)
        log = bad.log()
        assert log.count("refused the connection") == 1, log
        assert "Not authorized (check IMAGESTORE_MQTT_USERNAME and IMAGESTORE_MQTT_PASSWORD)" in log
        assert "wrong-pass" not in log and "s3cret-pass" not in good.log()
        assert len(subscriber.quiet_for(0.3)) == 1
    finally:
        subscriber.close()
        broker.stop()


def test_watch_prints_one_line_per_event(run, tmp_path, broker):
    broker.start()
    env = mqtt_env(broker)
    out = open(tmp_path / "watch.out", "wb")
    watcher = subprocess.Popen(
        [sys.executable, SERVICE, "watch"],
        stdout=out,
        stderr=subprocess.PIPE,
        env=clean_env(**env),
    )
    try:
        assert b"watching imagestore/events" in watcher.stderr.readline()
        proc, port = serve_with(run, tmp_path / "db", env)
        create_album(port, "pets")
        request(port, "PATCH", "/api/v1/albums/pets", json.dumps({"albumName": "cats"}).encode())
        request(port, "DELETE", "/api/v1/albums/cats")
        wait_until(lambda: (tmp_path / "watch.out").read_text().count("\n") >= 3)
        lines = (tmp_path / "watch.out").read_text().splitlines()
        assert [json.loads(line)["message"] for line in lines] == [
            "pets album created",
            "pets album modified to cats",
            "cats album deleted",
        ]
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        out.close()


def test_mqtt_off_records_and_publishes_nothing(run, tmp_path, broker):
    broker.start()
    subscriber = Subscriber(broker.port)
    try:
        data = tmp_path / "db"
        proc, port = serve_with(run, data, mqtt_env(broker, IMAGESTORE_MQTT="off"))
        create_album(port, "pets")
        request(port, "DELETE", "/api/v1/albums/pets")
        assert healthz(port)["mqtt"] == {"enabled": False}
        assert subscriber.quiet_for(1.0) == []
        with sqlite3.connect(data / "catalog.sqlite3") as catalog:
            assert catalog.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        assert "MQTT notifications are off" in proc.log()
    finally:
        subscriber.close()
