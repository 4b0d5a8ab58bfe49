"""`imagestore watch`: print every event published on the JSON events topic, one line
each (or the sentences, when only that topic is published). Like the service, it
waits for a broker that is away and reconnects by itself; Ctrl-C ends it at once."""

import signal
import sys
import threading
import time
import uuid
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from notify.publisher import make_client
from settings import BrokerSettings

# A person is waiting: retry this often, not with the publisher's backoff up to 30 s.
RETRY_SECONDS = 3


def watch(settings: BrokerSettings, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Subscribe and print until interrupted (exit status 0)."""
    topic = settings.events_topic or settings.topic
    where = f"{settings.address}:{settings.port}"
    client = make_client(settings, f"imagestore-watch-{uuid.uuid4().hex[:12]}")
    client.reconnect_delay_set(min_delay=1, max_delay=RETRY_SECONDS)
    # Say each state change once: not one line per reconnection attempt.
    said = {"state": ""}

    def say(state: str, line: str) -> None:
        if said["state"] != state:
            said["state"] = state
            print(line, file=err, flush=True)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            say("refused", f"the broker at {where} refused the connection ({reason}): retrying")
            return
        client.subscribe(topic, qos=1)
        say("connected", f"watching {topic} on {where}")

    def on_disconnect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        # paho's failed reconnections that follow stay silent: this line said it.
        if said["state"] == "connected":
            say("lost", f"lost the broker at {where} ({reason}): reconnecting")

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        out.write(message.payload.decode("utf-8", "replace") + "\n")
        out.flush()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    if threading.current_thread() is threading.main_thread():
        # Started in the background by a shell, SIGINT would be ignored: Ctrl-C must end it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # The first connection here rather than in paho's thread: only here does the
        # error say why (refused, unknown host, TLS...). The sleep ends on Ctrl-C.
        while True:
            try:
                client.connect(settings.address, settings.port, keepalive=30)
                break
            except OSError as error:
                why = error.strerror or str(error) or type(error).__name__
                say(
                    "away",
                    f"cannot reach the broker at {where} ({why}): retrying every few seconds",
                )
                time.sleep(RETRY_SECONDS)
        # paho's network loop runs on its own thread; this one only waits, so that
        # Ctrl-C (delivered to the main thread) ends the wait at once.
        client.loop_start()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        connected = said["state"] == "connected"
        said["state"] = "stopping"
        client.disconnect()
        # Connected, paho's thread ends at once; waiting out a reconnect delay, it
        # would take up to a second: it is a daemon thread, left to die with us.
        if connected:
            client.loop_stop()
    return 0
