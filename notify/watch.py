"""`imagestore watch`: print every event published on the topic, one JSON line each."""

import sys
import uuid
from typing import TextIO

import paho.mqtt.client as mqtt

from notify.publisher import BrokerSettings, make_client


def watch(settings: BrokerSettings, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Subscribe and print until interrupted; reconnects by itself."""
    client = make_client(settings, f"imagestore-watch-{uuid.uuid4().hex[:12]}")

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            print(f"broker refused the connection: {reason_code}", file=err, flush=True)
            return
        client.subscribe(settings.topic, qos=1)
        print(f"watching {settings.topic} on {settings.host}:{settings.port}", file=err, flush=True)

    def on_message(client, userdata, message: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        out.write(message.payload.decode("utf-8", "replace") + "\n")
        out.flush()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as error:
        print(f"cannot reach the broker at {settings.host}:{settings.port}: {error}", file=err)
        return 1
    try:
        client.loop_forever(retry_first_connection=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
    return 0
