#!/usr/bin/env python3
"""imagestore: the entry point. Configuration, wiring, serving, graceful shutdown.

One process claims the data folder and binds the port, then serves it alone
(IMAGESTORE_WORKERS=1) or forks that many workers that share the listening sockets;
it forwards SIGTERM/SIGINT to them and replaces one that dies.
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] in (["push"], ["pull"], ["ls"]):
    # The client commands start without the service's modules (libvips, the
    # adapters, prometheus...): a third of a second less per run of `push`.
    from cli.commands import client_command
    from onefile import follow_the_bootloader

    follow_the_bootloader()
    sys.exit(client_command(sys.argv[1], sys.argv[2:]))

import asyncio
import logging
import os
import signal
import socket
import time

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from cli.commands import COMMANDS, client_command
from cli.copy import copy_command
from cli.dimensions import dimensions_command
from cli.sign import sign_command
from handlers import api_server_url, make_app
from handlers.access import AccessPolicy
from handlers.limits import UploadLimits
from handlers.renditions import RenditionPolicy
from logformat import configure_logging
from memory import start_memory_release
from metrics import Metrics, MultiprocessFolder, multiprocess_folder
from notify import NotifierState, OutboxPublisher
from notify.watch import watch
from onefile import follow_the_bootloader, signal_on_parent_death
from settings import VERSION, Settings, parse_settings, parse_watch_settings, unknown_variables
from store import Claim, ImageStore, StoreError, open_store
from store.imaging import ImagingPool

log = logging.getLogger("imagestore")

# Non-upload bodies are JSON of a few names; uploads lift this per request.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
UPLOAD_CHUNK_BYTES = 256 * 1024
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# A worker that dies this many times in this many seconds is not restarted again.
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60.0


async def serve(
    settings: Settings,
    sockets: list[socket.socket],
    worker: int,
    state: NotifierState,
    limits: UploadLimits,
) -> int:
    """Serve the sockets until SIGTERM/SIGINT, then drain. Worker 0 also publishes
    the events and writes the start-up banner."""
    try:
        store = open_store(
            settings.backends,
            settings.max_upload_bytes,
            outbox_limit=settings.outbox_limit if settings.mqtt.enabled else None,
            min_free_bytes=settings.min_free_bytes,
            imaging=ImagingPool(settings.rendition_workers, settings.rendition_queue),
            max_pixels=settings.max_pixels,
            render_seconds=settings.rendition_seconds,
            rendition_cache_bytes=settings.rendition_cache_bytes,
            renditions_on_upload=settings.renditions_on_upload,
        )
    except StoreError as err:
        log.error("cannot open the store (%s): %s", settings.backends.describe(), err)
        return 1
    limits.slots.serve_as(worker)
    metrics = Metrics()  # after the fork: this worker's own files in the run's folder
    publisher = None
    if settings.mqtt.enabled and worker == 0:
        publisher = OutboxPublisher(
            store, settings.broker, state, on_published=metrics.events_published.inc
        )
        publisher.start()
    elif not settings.mqtt.enabled and worker == 0:
        log.info("MQTT notifications are off (IMAGESTORE_MQTT=off): no events are recorded")
    app = make_app(
        store,
        notifier_status=(lambda: state.status(store)) if settings.mqtt.enabled else None,
        docs=not settings.prod_mode,
        server_url=api_server_url(settings.host_ip, settings.port),
        access=AccessPolicy(
            settings.api_keys,
            settings.public_read,
            settings.cors_origins,
            settings.trusted_proxies,
        ),
        limits=limits,
        renditions=RenditionPolicy(
            settings.rendition_widths, tuple(key.encode() for key in settings.url_signing_key)
        ),
        list_cache_bytes=settings.list_cache_bytes,
        send_timeout_seconds=settings.send_timeout_seconds,
        metrics=metrics,
        metrics_key=settings.metrics_key,
        cache_max_age=settings.cache_max_age,
    )
    server = HTTPServer(
        app,
        max_body_size=DEFAULT_MAX_BODY_BYTES,
        max_header_size=settings.max_header_bytes,
        idle_connection_timeout=settings.idle_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        # Bodies arrive in pieces of up to this size, 4x Tornado's default: fewer
        # pieces, less overhead per byte (README, Performance).
        chunk_size=UPLOAD_CHUNK_BYTES,
    )
    server.add_sockets(sockets)
    memory_release = start_memory_release(settings.memory_release_seconds)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked since the fork
    log.debug("worker %d (pid %d) serving", worker, os.getpid())
    if worker == 0:
        log_banner(settings, store)
    await stopping.wait()

    if worker == 0:
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
    try:
        await asyncio.wait_for(store.settled(), timeout=5)  # renditions being cached
    except TimeoutError:
        log.warning("some renditions were not cached in time")
    store.close()
    return 0


def log_banner(settings: Settings, store: ImageStore) -> None:
    log.info(
        "imagestore %s serving %s/api/v1 (data in %s, uploads up to %d bytes, %d worker%s)",
        VERSION,
        settings.advertised_url,
        os.path.abspath(settings.data),
        settings.max_upload_bytes,
        settings.workers,
        "" if settings.workers == 1 else "s",
    )
    log.info("%s", settings.backends.describe())
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


def use_uvloop() -> bool:
    """uvloop when it is installed (more small requests per second: README, Performance)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(settings: Settings) -> int:
    """Claim the folder, bind the port, serve (alone or through workers)."""
    if not use_uvloop():
        log.info("uvloop is not installed: serving with asyncio's own event loop")
    try:
        claim = Claim(settings.backends)
    except StoreError as err:
        log.error("cannot open the store (%s): %s", settings.backends.describe(), err)
        return 1
    try:
        try:
            sockets = bind_sockets(settings.port, settings.address or None)
        except OSError as err:
            log.error(
                "cannot listen on %s:%d: %s", settings.address or "*", settings.port, err.strerror
            )
            return 1
        # Made before the workers fork: they share both.
        state = NotifierState()
        limits = UploadLimits(
            settings.max_concurrent_uploads,
            settings.body_timeout_seconds,
            settings.body_min_bytes_per_second,
            settings.max_uploads_per_client,
            workers=settings.workers,
        )
        # Before any metric exists and before the fork: the workers add up there.
        with multiprocess_folder(settings.metrics_dir) as metrics_folder:
            if settings.workers == 1:
                code = asyncio.run(serve(settings, sockets, 0, state, limits))
            else:
                code = supervise(settings, sockets, state, limits, claim, metrics_folder)
        log.info("stopped")
        return code
    finally:
        claim.release()


def supervise(
    settings: Settings,
    sockets: list[socket.socket],
    state: NotifierState,
    limits: UploadLimits,
    claim: Claim,
    metrics_folder: MultiprocessFolder | None = None,
) -> int:
    """Fork the workers, pass signals on, replace a worker that dies; wait for all.

    A dead worker's upload slots and unfinished uploads are freed here, at once: the
    service must not stay short of slots, or of disk, until its next restart."""
    workers: dict[int, int] = {}  # pid -> worker number
    stopping = False
    failed = False
    deaths: list[float] = []

    def spawn(number: int) -> None:
        parent = os.getpid()
        # Signals wait (blocked) until the worker can handle them: in between, the
        # parent's handler would run in the child, and the default one would kill it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        else:
            _die_with(parent)
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            try:
                code = asyncio.run(serve(settings, sockets, number, state, limits))
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            logging.shutdown()
            os._exit(code)
        workers[pid] = number

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        # The kernel accepts connections while any process holds the listening
        # socket: once the workers close theirs, new clients must be refused.
        for sock in sockets:
            sock.close()
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    for number in range(settings.workers):
        spawn(number)
    while workers:
        pid, status = os.wait()
        if pid not in workers:
            continue
        number = workers.pop(pid)
        slots = limits.slots.release_worker(number)
        if metrics_folder is not None:
            metrics_folder.worker_died(pid)
        temps = claim.remove_leftovers_of(pid)
        if slots or temps:
            log.warning(
                "worker %d died with %d upload(s) running: freed their slots, removed %d "
                "unfinished file(s)",
                number,
                slots,
                temps,
            )
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed |= code != 0
            continue
        now = time.monotonic()
        deaths[:] = [t for t in deaths if now - t < RESTART_WINDOW_SECONDS] + [now]
        if len(deaths) > MAX_RESTARTS:
            log.error(
                "workers keep dying (%d in %.0fs): stopping", len(deaths), RESTART_WINDOW_SECONDS
            )
            failed = True
            stop(signal.SIGTERM, None)
            continue
        log.error("worker %d exited with code %d: starting another", number, code)
        spawn(number)
    return 1 if failed else 0


def _die_with(parent: int) -> None:
    """Make the kernel kill this worker when its parent dies (even by SIGKILL), so that
    no orphan keeps serving the port or the data folder (not on other systems)."""
    if signal_on_parent_death(signal.SIGKILL) and os.getppid() != parent:
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    follow_the_bootloader()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["copy"]:
        return copy_command(argv[1:])
    if argv[:1] == ["sign"]:
        return sign_command(argv[1:])
    if argv[:1] == ["dimensions"]:
        return dimensions_command(argv[1:])
    if argv[:1] and argv[0] in COMMANDS:
        return client_command(argv[0], argv[1:])
    if argv[:1] == ["watch"]:
        settings = parse_watch_settings(argv[1:], os.environ)
        for warning in unknown_variables(os.environ):  # no logging here: plain stderr
            print(f"imagestore watch: {warning}", file=sys.stderr)
        return watch(settings.broker)
    settings = parse_settings(argv, os.environ)
    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_variables(os.environ):
        log.warning("%s", warning)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
