"""/metrics: the Prometheus text format, every worker process added up."""

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from handlers.base import APIHandler, http_error
from metrics import Metrics, gauge
from store import StorageUnavailable


class MetricsHandler(APIHandler):
    # Public like /healthz (scrapers carry no API key), unless IMAGESTORE_METRICS_KEY.
    public = True

    async def get(self) -> None:
        """The service's metrics, for Prometheus.
        ---
        summary: Metrics in the Prometheus text format (all worker processes added up)
        tags: [service]
        responses:
          200:
            description: >-
              Requests by method, route and status, latency histograms, bytes in and
              out, uploads refused by cause, backend errors, MQTT messages published;
              albums, images, bytes and events pending read from the catalog (left
              out, with imagestore_catalog_up 0, while it is unreachable).
            content:
              text/plain:
                schema: {type: string}
          401: {$ref: "#/components/responses/Unauthorized"}
        """
        key: str = self.settings.get("metrics_key", "")
        if key and not self._has_key(key):
            raise http_error(
                401,
                "the metrics need IMAGESTORE_METRICS_KEY: send Authorization: Bearer <key>",
                {"WWW-Authenticate": 'Bearer realm="imagestore metrics"'},
            )
        metrics: Metrics = self.settings["metrics"]
        # The catalog's figures when it answers; the counters always, so that a scrape
        # during an outage still shows it (imagestore_catalog_up 0, backend errors).
        extra = []
        try:
            extra = await self._catalog_gauges()
        except StorageUnavailable:
            pass
        extra.append(
            gauge(
                "imagestore_catalog_up",
                "1 when the catalog answered this scrape.",
                1 if extra else 0,
            )
        )
        if self.notifier_status is not None:
            try:
                status = await self.notifier_status()
            except StorageUnavailable:  # it counts the outbox too
                status = {"connected": False}
            extra.append(
                gauge(
                    "imagestore_broker_connected",
                    "1 while the publishing process is connected to the MQTT broker.",
                    1 if status.get("connected") else 0,
                )
            )
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(generate_latest(metrics.scrape_registry(extra)))

    async def _catalog_gauges(self) -> list[GaugeMetricFamily]:
        totals = await self.store.totals()
        return [
            gauge("imagestore_albums", "Albums in the catalog.", totals.albums),
            gauge("imagestore_images", "Images in the catalog.", totals.images),
            gauge(
                "imagestore_image_bytes",
                "The images' sizes added up (identical bytes, stored once, counted each time).",
                totals.bytes,
            ),
            gauge(
                "imagestore_events_pending",
                "Events in the outbox, not yet acknowledged by the broker.",
                await self.store.events_pending(),
            ),
            gauge(
                "imagestore_events_dropped",
                "Events dropped from a full outbox, in all.",
                await self.store.events_dropped(),
            ),
        ]

    def _has_key(self, key: str) -> bool:
        given = self.request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "surrogateescape"), key.encode()
        )
