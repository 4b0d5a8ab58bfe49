"""Deliver the store's outbox to MQTT: in order, at least once, never blocking a request.

Rows are handed to paho a bounded window at a time and deleted from the outbox only
after the broker's PUBACK. paho keeps the handed ones across reconnects and sends
them again first, so order holds; after a restart the outbox itself is the memory.
paho's callbacks run on its network thread: they only hand over to the IOLoop.
"""

import asyncio
import logging
import multiprocessing
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from tornado.ioloop import IOLoop, PeriodicCallback

from settings import BrokerSettings
from store import ImageStore, StoreError

log = logging.getLogger("imagestore.notify")


def make_client(settings: BrokerSettings, client_id: str) -> mqtt.Client:
    """A paho client configured from the settings (shared by the publisher and `watch`)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_seconds)
    return client


class NotifierState:
    """The broker connection's state as /healthz tells it. It lives in shared memory,
    so that every worker process answers for the one that publishes."""

    def __init__(self) -> None:
        self._connected = multiprocessing.RawValue("b", 0)

    @property
    def connected(self) -> bool:
        return bool(self._connected.value)

    @connected.setter
    def connected(self, value: bool) -> None:
        self._connected.value = 1 if value else 0

    async def status(self, store: ImageStore) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "eventsPending": await store.events_pending(),
            "eventsDropped": await store.events_dropped(),
        }


# Other worker processes commit events too: look for them this often (ms).
POLL_MILLISECONDS = 200


class OutboxPublisher:
    def __init__(
        self,
        store: ImageStore,
        settings: BrokerSettings,
        state: NotifierState | None = None,
        on_published: Callable[[], None] | None = None,
    ) -> None:
        """``on_published``: called for each message the broker acknowledges."""
        self._on_published = on_published
        self._store = store
        self._settings = settings
        self._state = state or NotifierState()
        self._loop = IOLoop.current()
        self._poll = PeriodicCallback(self._pump, POLL_MILLISECONDS)
        self._client = make_client(
            settings, settings.client_id or f"imagestore-{uuid.uuid4().hex[:12]}"
        )
        self._client.max_inflight_messages_set(settings.window)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self.connected = False
        self._handed_up_to = 0  # highest outbox id given to paho
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox id
        self._acked_up_to = 0  # every id <= this one is acknowledged
        self._forgetting = False
        self._pumping = False
        self._pump_again = False
        self._leading_now: bool | None = None
        self._failing_since: float | None = None
        self._stopped = False
        # Each outbox row goes to each topic, in row order; it is forgotten only once
        # every one of its messages is acknowledged.
        self._topics = [
            (topic, form)
            for topic, form in ((settings.topic, "sentence"), (settings.events_topic, "json"))
            if topic
        ]

    # --- lifecycle (IOLoop) ------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._state.connected

    @connected.setter
    def connected(self, value: bool) -> None:
        self._state.connected = value

    def start(self) -> None:
        self._store.on_new_events(self._pump)
        self._poll.start()
        log.info(
            "publishing events to mqtt://%s:%d: %s",
            self._settings.address,
            self._settings.port,
            ", ".join(
                f"{'sentences' if form == 'sentence' else 'JSON events'} on {topic}"
                for topic, form in self._topics
            ),
        )
        self._client.connect_async(self._settings.address, self._settings.port, keepalive=30)
        self._client.loop_start()

    async def stop(self, timeout: float) -> None:
        """Give the events in flight a moment to be acknowledged, then disconnect."""
        self._stopped = True
        deadline = time.monotonic() + timeout
        while self._in_flight and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._forget_acknowledged()
        self.close()

    def close(self) -> None:
        """Disconnect now; what was not acknowledged stays in the outbox."""
        self._stopped = True
        self._poll.stop()
        self._client.disconnect()
        self._client.loop_stop()

    async def status(self) -> dict[str, Any]:
        return await self._state.status(self._store)

    # --- paho's thread: hand everything to the IOLoop -----------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._loop.add_callback(self._connected, reason_code)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._loop.add_callback(self._connect_failed, "the broker cannot be reached")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._loop.add_callback(self._disconnected, reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._loop.add_callback(self._acknowledged, mid)

    # --- the IOLoop's side -------------------------------------------------------

    def _connected(self, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            why = f"the broker refused the connection: {reason_code}"
            if reason_code in ("Not authorized", "Bad user name or password"):
                why += " (check IMAGESTORE_MQTT_USERNAME and IMAGESTORE_MQTT_PASSWORD)"
            self._connect_failed(why)
            return
        self.connected = True
        self._failing_since = None
        log.info(
            "connected to the MQTT broker at %s:%d", self._settings.address, self._settings.port
        )
        self._pump()

    def _connect_failed(self, why: str) -> None:
        self.connected = False
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "MQTT broker %s:%d: %s; events wait in the outbox, retrying with backoff",
                self._settings.address,
                self._settings.port,
                why,
            )

    def _disconnected(self, reason_code: ReasonCode) -> None:
        was_connected = self.connected
        self.connected = False
        if was_connected and not self._stopped:
            self._failing_since = time.monotonic()
            log.warning(
                "lost the MQTT broker (%s); events wait in the outbox, reconnecting", reason_code
            )

    def _pump(self) -> None:
        """Hand the next outbox rows to paho, up to the window (one read at a time;
        a call meanwhile makes the running one look again)."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        self._loop.add_callback(self._pump_rows)

    async def _pump_rows(self) -> None:
        try:
            while True:
                self._pump_again = False
                await self._hand_over()
                if not self._pump_again:
                    break
        except StoreError as err:
            log.warning("could not read the event outbox (%s); retrying", err)
        finally:
            self._pumping = False

    async def _hand_over(self) -> None:
        if not self.connected or self._stopped or not self._topics:
            return
        if not await self._leading():
            return
        room = (self._settings.window - len(self._in_flight)) // len(self._topics)
        if room <= 0:
            return
        for event in await self._store.pending_events(self._handed_up_to, room):
            for topic, form in self._topics:
                payload = event.sentence if form == "sentence" else event.json
                info = self._client.publish(topic, payload, qos=1)
                self._in_flight[info.mid] = event.id
            self._handed_up_to = event.id

    async def _leading(self) -> bool:
        """Whether this process publishes: instances sharing a catalog elect one (the
        catalog's lead); the others stand by and take over when it goes."""
        leading = await self._store.lead()
        if leading != self._leading_now:
            self._leading_now = leading
            if leading:
                log.info("this instance publishes the event outbox")
                self._handed_up_to = 0  # from the oldest unacknowledged: the last lead's too
            else:
                log.info("another instance publishes the event outbox: this one stands by")
        return leading

    def _acknowledged(self, mid: int) -> None:
        if self._in_flight.pop(mid, None) is None:
            return
        if self._on_published is not None:
            self._on_published()
        self._acked_up_to = min(self._in_flight.values(), default=self._handed_up_to + 1) - 1
        self._loop.add_callback(self._forget_acknowledged)
        self._pump()

    async def _forget_acknowledged(self) -> None:
        # One delete at a time; acks arriving meanwhile are batched into the next.
        if self._forgetting:
            return
        self._forgetting = True
        try:
            while True:
                up_to = self._acked_up_to
                await self._store.forget_events(up_to)
                if self._acked_up_to == up_to:
                    break
        except StoreError as err:
            log.warning(
                "could not remove delivered events from the outbox (%s); they may repeat", err
            )
        finally:
            self._forgetting = False
