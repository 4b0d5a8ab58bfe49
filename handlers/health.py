"""/healthz: is the service up, and how is its notifier doing."""

from typing import Any

from handlers.base import APIHandler


class HealthHandler(APIHandler):
    # Load balancers and orchestrators probe it without credentials.
    public = True

    async def get(self) -> None:
        """The service's health.
        ---
        summary: Health of the service and of its MQTT notifier
        tags: [service]
        responses:
          200:
            description: Up; whether the broker is connected and how many events wait.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Health"}
          503: {$ref: "#/components/responses/Unavailable"}
        """
        mqtt: dict[str, Any] = {"enabled": False}
        if self.notifier_status is not None:
            mqtt = {"enabled": True, **await self.notifier_status()}
        storage = {
            "freeBytes": await self.store.free_bytes(),
            "minFreeBytes": self.store.min_free_bytes,
            "uploadsRefused": await self.store.refusing_uploads(),
        }
        self.write_json({"status": "ok", "mqtt": mqtt, "storage": storage})
