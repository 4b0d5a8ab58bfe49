"""HTTP in, HTTP out: the Tornado application over an ImageStore."""

from collections.abc import Awaitable, Callable
from typing import Any

from tornado.web import Application, RequestHandler

from handlers.access import AccessPolicy, hide_header_values_in_tornado_logs
from handlers.albums import AlbumHandler, AlbumsHandler
from handlers.archive import ArchiveHandler
from handlers.base import ListCache, NotFoundHandler, RequestTracker, Route
from handlers.docs import docs_routes
from handlers.health import HealthHandler
from handlers.images import ImageHandler, ImagesHandler
from handlers.limits import UploadLimits
from handlers.metrics import MetricsHandler
from handlers.observe import log_request
from handlers.openapi import build_spec, openapi_path
from handlers.renditions import RenditionPolicy
from metrics import Metrics
from onefile import bundled
from settings import Settings
from store import ImageStore

API_PREFIX = "/api/v1"

API_ROUTES: list[tuple[str, type[RequestHandler]]] = [
    (rf"{API_PREFIX}/albums", AlbumsHandler),
    (rf"{API_PREFIX}/albums/(?P<album>[^/]+)", AlbumHandler),
    (rf"{API_PREFIX}/albums/(?P<album>[^/]+)/images", ImagesHandler),
    (rf"{API_PREFIX}/albums/(?P<album>[^/]+)/archive", ArchiveHandler),
    (rf"{API_PREFIX}/albums/(?P<album>[^/]+)/images/(?P<image>[^/]+)", ImageHandler),
]
ROOT_ROUTES: list[tuple[str, type[RequestHandler]]] = [
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
]


def api_server_url(host_ip: str, port: int) -> str:
    """Absolute as the Go original when HOSTIP is known; relative otherwise, so that the
    Swagger page works behind a proxy."""
    return f"http://{host_ip}:{port}{API_PREFIX}" if host_ip else API_PREFIX


def make_app(
    store: ImageStore,
    notifier_status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    docs: bool = True,
    server_url: str = API_PREFIX,
    access: AccessPolicy | None = None,
    limits: UploadLimits | None = None,
    list_cache_bytes: int = Settings.list_cache_bytes,
    send_timeout_seconds: float = Settings.send_timeout_seconds,
    swagger_dir: str = "",
    renditions: RenditionPolicy | None = None,
    metrics: Metrics | None = None,
    metrics_key: str = "",
    cache_max_age: int = Settings.cache_max_age,
    **settings: Any,
) -> Application:
    """``notifier_status``: the MQTT publisher's state for /healthz (None: MQTT off).
    ``docs``: serve the Swagger page and the OpenAPI document under /swagger.
    ``access``: API keys and CORS (default: open, any origin, as the Go original).
    ``limits``: concurrent uploads and body timeouts. ``list_cache_bytes``: memory for
    cached list answers. ``send_timeout_seconds``: a response that sends nothing for
    this long is cut. ``swagger_dir``: the Swagger UI's files (default: the bundled
    static/swagger). ``renditions``: the allow-list of sizes and the URL signing keys.
    ``metrics``: where requests are counted (default: this process's own).
    ``metrics_key``: the bearer token /metrics asks for ("": none).
    ``cache_max_age``: seconds clients and proxies may keep an image (0: no-cache)."""
    access = access or AccessPolicy()
    hide_header_values_in_tornado_logs()
    args: dict[str, Any] = {"store": store}
    routes: list[Route] = [
        (pattern, handler, {**args, "notifier_status": notifier_status})
        for pattern, handler in ROOT_ROUTES
    ]
    # Gin redirected "/albums/" to "/albums"; some old clients add the slash and do not
    # follow a redirect on POST: every API path answers with one trailing slash too.
    routes += [(pattern + "/?", handler, args) for pattern, handler in API_ROUTES]
    if docs:
        document = build_spec(API_ROUTES, ROOT_ROUTES, server_url, access)
        routes += docs_routes(document, swagger_dir or bundled("static", "swagger"))
    # Metric labels and log lines name the route, never the path a client sent.
    route_names: dict[type[RequestHandler], str] = {
        handler: openapi_path(pattern) for pattern, handler in API_ROUTES + ROOT_ROUTES
    }
    for _pattern, handler, *_ in routes:
        route_names.setdefault(handler, "/swagger")
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        requests=RequestTracker(),
        list_cache=ListCache(list_cache_bytes),
        send_timeout_seconds=send_timeout_seconds,
        access=access,
        limits=limits or UploadLimits(Settings.max_concurrent_uploads),
        renditions=renditions or RenditionPolicy(),
        metrics=metrics or Metrics(),
        metrics_key=metrics_key,
        cache_max_age=cache_max_age,
        route_names=route_names,
        log_function=log_request,
        **settings,
    )
