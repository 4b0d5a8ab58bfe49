#!/usr/bin/env python3
"""imagestore: the entry point. Configuration, wiring, serving, graceful shutdown."""

import asyncio
import logging
import os
import signal
import sys

from tornado.httpserver import HTTPServer

from handlers import make_app
from settings import VERSION, Settings, parse_settings
from store import ImageStore, StoreError

log = logging.getLogger("imagestore")

# Non-upload bodies are JSON of a few names; uploads lift this per request.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


async def serve(settings: Settings) -> int:
    try:
        store = ImageStore(settings.data, settings.max_upload_bytes)
    except StoreError as err:
        log.error("cannot open the data folder %s: %s", os.path.abspath(settings.data), err)
        return 1
    app = make_app(store)
    server = HTTPServer(app, max_body_size=DEFAULT_MAX_BODY_BYTES)
    try:
        server.listen(settings.port, settings.address)
    except OSError as err:
        log.error(
            "cannot listen on %s:%d: %s", settings.address or "*", settings.port, err.strerror
        )
        store.close()
        return 1

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
    await stopping.wait()

    log.info(
        "shutting down: no new connections; waiting up to %.0fs for requests in flight",
        settings.shutdown_grace_seconds,
    )
    server.stop()
    tracker = app.settings["requests"]
    if not await tracker.wait_idle(settings.shutdown_grace_seconds):
        log.warning(
            "%d request(s) still running after the grace period: cutting them", tracker.active
        )
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=5)
    except TimeoutError:
        log.warning("some connections did not close in time")
    store.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
