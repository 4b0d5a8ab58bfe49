"""A private mosquitto for each test, and a subscriber that records what arrives."""

import getpass
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


class Broker:
    """A real mosquitto on a free loopback port; stop() and start() keep the port."""

    def __init__(
        self, folder, users: dict[str, str] | None = None, tls: tuple[str, str, str] | None = None
    ) -> None:
        """``tls``: (CA file, certificate, key) to listen with TLS only."""
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        os.makedirs(folder, exist_ok=True)
        conf = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            # Tests publish bursts faster than a subscriber may read them: never drop.
            "max_queued_messages 0",
            "log_type error",
            "log_type warning",
            # Started as root, mosquitto would become "mosquitto" and lose access to
            # the test's private folder (its password file): stay who we are.
            f"user {getpass.getuser()}",
        ]
        if tls:
            conf += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        if users:
            password_file = os.path.join(folder, "passwords")
            open(password_file, "w").close()
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", password_file, user, password], check=True
                )
            conf += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            conf.append("allow_anonymous true")
        self.conf_path = os.path.join(folder, "mosquitto.conf")
        with open(self.conf_path, "w") as conf_file:
            conf_file.write("\n".join(conf) + "\n")

    def start(self) -> "Broker":
        log = open(os.path.join(self.folder, "mosquitto.log"), "ab")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", self.conf_path], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class Subscriber:
    """Subscribes to a topic with QoS 1 and keeps every payload, decoded as JSON (the
    events topic), or as the bytes received with ``raw`` (the sentences topic)."""

    def __init__(
        self, port: int, topic: str = "imagestore/events", raw: bool = False, **auth: str
    ) -> None:
        self.raw = raw
        self.events: list = []
        self.arrival_times: list[float] = []  # time.monotonic() of each event
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}"
        )
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.events.append(message.payload if self.raw else json.loads(message.payload))
            self.arrival_times.append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        """At least ``count`` events, or TimeoutError with what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.events)} of {count} events arrived")
                self._cond.wait(left)
            return list(self.events)

    def quiet_for(self, seconds: float) -> list[dict]:
        """Everything that arrived, after waiting ``seconds`` for stragglers."""
        time.sleep(seconds)
        with self._cond:
            return list(self.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def wait_for_events(subscriber: Subscriber, count: int, timeout: float = 20.0) -> list[dict]:
    """Like Subscriber.wait_for, without blocking the IOLoop (for in-process servers)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while len(subscriber.events) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(subscriber.events)} of {count} events arrived")
        await asyncio.sleep(0.02)
    return list(subscriber.events)


def make_certificates(folder) -> tuple[str, str, str]:
    """A throw-away CA and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    ca, ca_key = os.path.join(folder, "ca.pem"), os.path.join(folder, "ca.key")
    cert, key = os.path.join(folder, "server.pem"), os.path.join(folder, "server.key")
    csr, ext = os.path.join(folder, "server.csr"), os.path.join(folder, "san.ext")
    quiet = {"check": True, "capture_output": True}
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=imagestore test CA",
            "-keyout",
            ca_key,
            "-out",
            ca,
        ],
        **quiet,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            key,
            "-out",
            csr,
        ],
        **quiet,
    )
    with open(ext, "w") as ext_file:
        ext_file.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            cert,
        ],
        **quiet,
    )
    return ca, cert, key
