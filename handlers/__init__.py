"""HTTP in, HTTP out: the Tornado application over an ImageStore."""

from collections.abc import Callable
from typing import Any

from tornado.web import Application

from handlers.albums import AlbumHandler, AlbumsHandler
from handlers.base import NotFoundHandler, RequestTracker
from handlers.health import HealthHandler
from handlers.images import ImageHandler, ImagesHandler
from store import ImageStore

API_PREFIX = "/api/v1"


def make_app(
    store: ImageStore, notifier_status: Callable[[], dict] | None = None, **settings: Any
) -> Application:
    """``notifier_status``: the MQTT publisher's state for /healthz (None: MQTT off)."""
    args = {"store": store}
    routes = [
        (r"/healthz", HealthHandler, {**args, "notifier_status": notifier_status}),
        (rf"{API_PREFIX}/albums/?", AlbumsHandler, args),
        (rf"{API_PREFIX}/albums/([^/]+)/?", AlbumHandler, args),
        (rf"{API_PREFIX}/albums/([^/]+)/images/?", ImagesHandler, args),
        (rf"{API_PREFIX}/albums/([^/]+)/images/([^/]+)", ImageHandler, args),
    ]
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        requests=RequestTracker(),
        **settings,
    )
