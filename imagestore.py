#!/usr/bin/env python3
"""imagestore: the entry point. Configuration, wiring, serving, graceful shutdown."""

import asyncio
import logging
import os
import signal
import sys

from tornado.httpserver import HTTPServer

from handlers import api_server_url, make_app
from handlers.access import AccessPolicy
from handlers.images import UploadLimits
from memory import start_memory_release
from notify import BrokerSettings, OutboxPublisher
from notify.watch import watch
from onefile import follow_the_bootloader
from settings import VERSION, Settings, parse_settings
from store import ImageStore, StoreError

log = logging.getLogger("imagestore")

# Non-upload bodies are JSON of a few names; uploads lift this per request.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def broker_settings(settings: Settings) -> BrokerSettings:
    return BrokerSettings(
        host=settings.broker_host,
        port=settings.mqtt_port,
        topic=settings.mqtt_topic,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_ca_file,
        client_id=settings.mqtt_client_id,
        protocol=settings.mqtt_protocol,
    )


async def serve(settings: Settings) -> int:
    try:
        store = ImageStore(
            settings.data,
            settings.max_upload_bytes,
            outbox_limit=settings.outbox_limit if settings.mqtt else None,
            min_free_bytes=settings.min_free_bytes,
        )
    except StoreError as err:
        log.error("cannot open the data folder %s: %s", os.path.abspath(settings.data), err)
        return 1
    publisher = None
    if settings.mqtt:
        publisher = OutboxPublisher(store, broker_settings(settings))
        publisher.start()
    else:
        log.info("MQTT notifications are off (IMAGESTORE_MQTT=off): no events are recorded")
    app = make_app(
        store,
        notifier_status=publisher.status if publisher else None,
        docs=not settings.prod_mode,
        server_url=api_server_url(settings.host_ip, settings.port),
        access=AccessPolicy(settings.api_keys, settings.public_read, settings.cors_origins),
        limits=UploadLimits(
            settings.max_concurrent_uploads,
            settings.body_timeout_seconds,
            settings.body_min_bytes_per_second,
        ),
    )
    server = HTTPServer(
        app,
        max_body_size=DEFAULT_MAX_BODY_BYTES,
        max_header_size=settings.max_header_bytes,
        idle_connection_timeout=settings.idle_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )
    try:
        server.listen(settings.port, settings.address)
    except OSError as err:
        log.error(
            "cannot listen on %s:%d: %s", settings.address or "*", settings.port, err.strerror
        )
        store.close()
        return 1

    memory_release = start_memory_release(settings.memory_release_seconds)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info(
        "imagestore %s serving %s/api/v1 (data in %s, uploads up to %d bytes)",
        VERSION,
        settings.advertised_url,
        store.data_dir,
        settings.max_upload_bytes,
    )
    if settings.api_keys:
        log.info(
            "access control on: %d API key(s); reads %s",
            len(settings.api_keys),
            "are public" if settings.public_read else "need a key too",
        )
    if settings.prod_mode:
        log.info("API documentation is disabled (PRODMODE is set): nothing under /swagger")
    else:
        log.info(
            "Swagger Documentation available at %s/swagger/index.html", settings.advertised_url
        )
    await stopping.wait()

    log.info(
        "shutting down: no new connections; waiting up to %.0fs for requests in flight",
        settings.shutdown_grace_seconds,
    )
    server.stop()
    tracker = app.settings["requests"]
    tracker.draining = True
    if not await tracker.wait_idle(settings.shutdown_grace_seconds):
        log.warning(
            "%d request(s) still running after the grace period: cutting them", tracker.active
        )
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=5)
    except TimeoutError:
        log.warning("some connections did not close in time")
    if memory_release:
        memory_release.stop()
    if publisher:
        await publisher.stop(timeout=2)
    store.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    follow_the_bootloader()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["watch"]:
        return watch(broker_settings(parse_settings(argv[1:], os.environ)))
    settings = parse_settings(argv, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
