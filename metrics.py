"""Prometheus metrics, added up over the worker processes.

prometheus-client's multiprocess mode: each process writes its samples to memory-mapped
files in one folder, and a scrape, answered by any worker, reads them all. The folder:

- is private: made by mkdtemp (mode 0700, a name nobody can guess or plant first);
- is new at each start (nothing from an earlier run is counted twice), and removed at
  a clean stop;
- outlives a crash only until the next start, which removes the folders of services
  that are gone (their ``owner`` file names a process that no longer runs);
- forgets a dead worker's live gauges (``mark_process_dead``) when the supervisor
  replaces it; its counters stay, so totals never go down.

Served by one process (tests, or a service whose folder could not be made) the metrics
live in that process alone: the same names, without the folder.
"""

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger("imagestore.metrics")

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "imagestore-metrics-"
_OWNER = "owner"

# Seconds: from a cached list (sub-millisecond) to a large upload or archive.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_folders(parent: str) -> int:
    """Remove the metrics folders, ours by owner, of services that no longer run."""
    removed = 0
    for folder in glob.glob(os.path.join(parent, _PREFIX + "*")):
        try:
            info = os.lstat(folder)
            if info.st_uid != os.getuid() or not os.path.isdir(folder) or os.path.islink(folder):
                continue
            with open(os.path.join(folder, _OWNER)) as owner:
                pid = int(owner.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


class MultiprocessFolder:
    """The private folder of one service run (see the module docstring). Made before
    the workers fork, and before any metric exists: the mode is chosen then."""

    def __init__(self, parent: str = "") -> None:
        parent = parent or tempfile.gettempdir()
        stale = remove_stale_folders(parent)
        if stale:
            log.info("removed %d metrics folder(s) left by stopped services", stale)
        self.path = tempfile.mkdtemp(prefix=_PREFIX, dir=parent)
        with open(os.path.join(self.path, _OWNER), "w") as owner:
            owner.write(str(os.getpid()))
        os.environ[ENVIRONMENT] = self.path
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

    def worker_died(self, pid: int) -> None:
        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        os.environ.pop(ENVIRONMENT, None)
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        shutil.rmtree(self.path, ignore_errors=True)


def multiprocess_path() -> str | None:
    return os.environ.get(ENVIRONMENT) or None


class Metrics:
    """The service's own metrics, made in each worker (after the fork)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "imagestore_http_requests",
            "HTTP requests answered, by method, route (the path template) and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "imagestore_http_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte handed to the kernel.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bytes_in = Counter(
            "imagestore_http_received_bytes",
            "Request body bytes received, by route.",
            ["route"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "imagestore_http_sent_bytes",
            "Response body bytes sent, by route.",
            ["route"],
            registry=registry,
        )
        self.uploads_refused = Counter(
            "imagestore_uploads_refused",
            "Uploads refused, by cause.",
            ["cause"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "imagestore_backend_errors",
            "Requests that failed in a backend (503/507), by backend: catalog or blobs.",
            ["backend"],
            registry=registry,
        )
        self.renditions = Counter(
            "imagestore_renditions",
            "Renditions served, by source: made (for this request), shared (made once for"
            " requests asking at the same time), cache (made before).",
            ["source"],
            registry=registry,
        )
        self.events_published = Counter(
            "imagestore_events_published",
            "MQTT messages the broker acknowledged (one per event and topic).",
            registry=registry,
        )

    def scrape_registry(self, extra: Iterable[Metric]) -> CollectorRegistry:
        """What one scrape reports: every process's samples (or this one's), and
        ``extra``, read from the catalog for this scrape."""
        path = multiprocess_path()
        if path is None:
            registry = self.registry
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        scrape = CollectorRegistry()
        scrape.register(_Fixed([*_collect(registry), *extra]))
        return scrape


def _collect(registry: CollectorRegistry) -> list[Metric]:
    return list(registry.collect())


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


@contextlib.contextmanager
def multiprocess_folder(parent: str = "") -> Iterator[MultiprocessFolder | None]:
    """The run's folder, removed at the end; None (one process's metrics) when it
    cannot be made, which is logged, not fatal."""
    try:
        folder = MultiprocessFolder(parent)
    except OSError as err:
        log.warning(
            "metrics are per process: cannot make their folder in %s: %s",
            parent or tempfile.gettempdir(),
            err.strerror,
        )
        yield None
        return
    try:
        yield folder
    finally:
        folder.remove()
