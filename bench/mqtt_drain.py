#!/usr/bin/env python3
"""How fast events reach an MQTT subscriber (QoS 1), and how long a backlog takes to drain.

Runs imagestore from source with a private mosquitto, as real processes:
  1. broker down: N mutations through the API (they pile up in the outbox);
  2. the broker starts, with a subscriber: time until all N events have arrived;
  3. broker up: N more mutations from 8 client threads, events/s at the subscriber.
Usage: bench/mqtt_drain.py [N]   (default 10000)
"""

import os
import sys
import tempfile
import time

import harness as h
from mqtt import Subscriber


def create_albums(port: int, names: list[str], threads: int = 8) -> float:
    """Create the albums from ``threads`` clients; the seconds it took."""
    return h.at_once(threads, lambda i: [h.create_album(port, n) for n in names[i::threads]])


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as folder:
        broker = h.Broker(os.path.join(folder, "broker"))
        env = h.clean_env(IMAGESTORE_MQTT_PORT=str(broker.port), IMAGESTORE_LOG_LEVEL="WARNING")
        command = [sys.executable, os.path.join(h.ROOT, "imagestore.py")]
        service = h.Service(command, os.path.join(folder, "db"), env, folder)
        try:
            made = create_albums(service.port, [f"backlog-{i}" for i in range(count)])
            print(f"{count} mutations with the broker down: {made:.1f} s ({count / made:.0f}/s)")
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
            made = create_albums(service.port, [f"live-{i}" for i in range(count)])
            subscriber.wait_for(count, timeout=600)
            delivered = time.monotonic() - began
            print(
                f"live: {count} mutations in {made:.1f} s, all {count} events delivered "
                f"{delivered - made:.2f} s after the last response "
                f"({count / delivered:.0f} events/s end to end)"
            )
            subscriber.close()
        finally:
            service.stop()
            broker.stop()


if __name__ == "__main__":
    main()
