"""/healthz: is the service up, and how is its notifier doing."""

from typing import Any

from handlers.base import APIHandler


class HealthHandler(APIHandler):
    # Load balancers and orchestrators probe it without credentials.
    public = True

    async def get(self) -> None:
        """The service's health.
        ---
        summary: Health of the service, its catalog, its blob store and its MQTT notifier
        tags: [service]
        responses:
          200:
            description: >-
              Up: the catalog and the blob store answer (with their latency); whether
              the broker is connected and how many events wait.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Health"}
          503:
            description: >-
              The catalog or the blob store cannot be reached (a sentence says which and
              why), or the service is shutting down.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Unhealthy"}
        """
        backends = await self.store.check_backends()
        down = [
            f"the {what} is unreachable: {state['error']}"
            for what, state in (("catalog", backends["catalog"]), ("blob store", backends["blobs"]))
            if not state["reachable"]
        ]
        if down:
            self.set_status(503)
            self.set_header("Retry-After", "5")
            self.write_json({"error": "; ".join(down), "status": "unavailable", **backends})
            return
        mqtt: dict[str, Any] = {"enabled": False}
        if self.notifier_status is not None:
            mqtt = {"enabled": True, **await self.notifier_status()}
        storage = {
            "freeBytes": await self.store.free_bytes(),
            "minFreeBytes": self.store.min_free_bytes,
            "uploadsRefused": await self.store.refusing_uploads(),
        }
        self.write_json({"status": "ok", "mqtt": mqtt, "storage": storage, **backends})
