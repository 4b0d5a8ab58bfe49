#!/usr/bin/env python3
"""How fast events reach an MQTT subscriber (QoS 1), and how long a backlog takes to drain.

Runs imagestore from source on a free port with a private mosquitto, as real processes:
  1. broker down: N mutations are made through the API (they pile up in the outbox);
  2. the broker starts with a subscriber: time until all N events have arrived;
  3. broker up: N more mutations from 8 client threads, events/s seen by the subscriber.
Usage: bench/mqtt_drain.py [N]   (default 10000)
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from mqtt import Broker, Subscriber, free_port, wait_for_port  # noqa: E402


def create_albums(port: int, names: list[str], threads: int = 8) -> float:
    """Create the albums from ``threads`` clients; return the seconds it took."""

    def work(chunk: list[str]) -> None:
        for name in chunk:
            body = json.dumps({"albumName": name}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/albums", data=body, method="POST"
            )
            with urllib.request.urlopen(req) as response:
                assert response.status == 200

    began = time.monotonic()
    workers = [threading.Thread(target=work, args=(names[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.monotonic() - began


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as folder:
        broker = Broker(os.path.join(folder, "broker"))
        port = free_port()
        env = {
            **os.environ,
            "IMAGESTORE_MQTT_HOST": "127.0.0.1",
            "IMAGESTORE_MQTT_PORT": str(broker.port),
            "IMAGESTORE_LOG_LEVEL": "WARNING",
        }
        service = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "..", "imagestore.py"),
                "--port",
                str(port),
                "--data",
                os.path.join(folder, "db"),
            ],
            env=env,
        )
        try:
            wait_for_port(port)
            made = create_albums(port, [f"backlog-{i}" for i in range(count)])
            print(
                f"{count} mutations with the broker down: {made:.1f} s "
                f"({count / made:.0f}/s through the API)"
            )
            broker.start()
            began = time.monotonic()
            subscriber = Subscriber(broker.port)
            subscriber.wait_for(count, timeout=600)
            first, last = subscriber.arrival_times[0], subscriber.arrival_times[count - 1]
            print(
                f"backlog of {count} drained {last - began:.2f} s after the broker came back: "
                f"reconnect backoff {first - began:.2f} s, then {last - first:.2f} s of delivery "
                f"({count / (last - first):.0f} events/s)"
            )
            subscriber.close()

            subscriber = Subscriber(broker.port)
            began = time.monotonic()
            made = create_albums(port, [f"live-{i}" for i in range(count)])
            subscriber.wait_for(count, timeout=600)
            delivered = time.monotonic() - began
            print(
                f"live: {count} mutations in {made:.1f} s, all {count} events delivered "
                f"{delivered - made:.2f} s after the last response "
                f"({count / delivered:.0f} events/s end to end)"
            )
            subscriber.close()
        finally:
            service.terminate()
            service.wait(20)
            broker.stop()


if __name__ == "__main__":
    main()
