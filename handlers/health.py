"""/healthz: is the service up, and how is its notifier doing."""

from collections.abc import Callable

from handlers.base import APIHandler
from store import ImageStore


class HealthHandler(APIHandler):
    def initialize(self, store: ImageStore, notifier_status: Callable[[], dict] | None) -> None:
        super().initialize(store)
        self._notifier_status = notifier_status

    async def get(self) -> None:
        mqtt = {"enabled": False}
        if self._notifier_status is not None:
            mqtt = {"enabled": True, **self._notifier_status()}
        self.write_json({"status": "ok", "mqtt": mqtt})
