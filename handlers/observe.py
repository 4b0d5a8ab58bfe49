"""Every finished request, seen once: its access-log line and its metrics.

Tornado calls ``log_request`` (the Application's ``log_function``) as each request
finishes, whatever handler served it, errors and unknown paths included. Labels are
bounded whatever a client sends: the route is the path template the request matched
(never its path), the method one of the known ones or "OTHER". The log line carries
the path but never the query (a signed URL's signature lives there) nor any header
value (keys travel in headers).
"""

import logging
import re
import uuid
from typing import Any

from tornado.web import RequestHandler

from metrics import Metrics

log = logging.getLogger("imagestore.access")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# What an X-Request-ID from a client may be to be kept (else one is made).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# Uploads refused, by status: the causes operators tell apart.
REFUSAL_CAUSES = {
    400: "malformed",
    404: "no_album",
    408: "too_slow",
    409: "name_taken",
    413: "too_large",
    415: "not_an_image",
    429: "client_busy",
    503: "busy_or_unavailable",
    507: "storage_full",
}


def request_id(handler: RequestHandler) -> str:
    """The request's id: the client's X-Request-ID when it is a sane token, else a
    new one; the same for the whole request (kept on the request object)."""
    request = handler.request
    found: str | None = getattr(request, "imagestore_request_id", None)
    if found is None:
        given = request.headers.get("X-Request-ID", "")
        found = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.imagestore_request_id = found  # type: ignore[attr-defined]
    return found


def route_of(handler: RequestHandler) -> str:
    """The path template the handler serves, or "unmatched" (no route took it)."""
    names: dict[type[RequestHandler], str] = handler.application.settings.get("route_names", {})
    return names.get(type(handler), "unmatched")


def log_request(handler: RequestHandler) -> None:
    request = handler.request
    status = handler.get_status()
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    route = route_of(handler)
    seconds = request.request_time()
    sent = int(getattr(handler, "bytes_sent", 0))
    received = int(getattr(handler, "bytes_received", 0))
    metrics: Metrics | None = handler.application.settings.get("metrics")
    if metrics is not None:
        metrics.requests.labels(method, route, str(status)).inc()
        metrics.latency.labels(method, route).observe(seconds)
        if received:
            metrics.bytes_in.labels(route).inc(received)
        if sent:
            metrics.bytes_out.labels(route).inc(sent)
        if getattr(handler, "is_upload", False) and status >= 400:
            metrics.uploads_refused.labels(REFUSAL_CAUSES.get(status, "other")).inc()
        rendition = getattr(handler, "rendition_source", None)
        if rendition is not None:
            metrics.renditions.labels(rendition).inc()
        backend = getattr(handler, "failed_backend", None)
        if backend is not None:
            metrics.backend_errors.labels(backend).inc()
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "path": request.path,
        "status": status,
        "bytes": sent,
        "duration": round(seconds, 6),
        "client": getattr(handler, "client", request.remote_ip),
        "requestId": request_id(handler),
    }
    level = logging.INFO if status < 500 or status in (503, 507) else logging.ERROR
    log.log(
        level,
        "%s %s %d %dB %.1fms client=%s id=%s",
        method,
        request.path,
        status,
        sent,
        seconds * 1000,
        fields["client"],
        fields["requestId"],
        extra={"request": fields},
    )
