"""/metrics: the Prometheus text format, every worker process added up."""

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers.base import APIHandler, http_error
from metrics import Metrics, gauge


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
              albums, images, bytes and events pending read from the catalog.
            content:
              text/plain:
                schema: {type: string}
          401: {$ref: "#/components/responses/Unauthorized"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        key: str = self.settings.get("metrics_key", "")
        if key and not self._has_key(key):
            raise http_error(
                401,
                "the metrics need IMAGESTORE_METRICS_KEY: send Authorization: Bearer <key>",
                {"WWW-Authenticate": 'Bearer realm="imagestore metrics"'},
            )
        metrics: Metrics = self.settings["metrics"]
        totals = await self.store.totals()
        extra = [
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
        if self.notifier_status is not None:
            status = await self.notifier_status()
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

    def _has_key(self, key: str) -> bool:
        given = self.request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "surrogateescape"), key.encode()
        )
