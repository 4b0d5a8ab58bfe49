"""/swagger: the bundled Swagger UI page and the OpenAPI document, served offline."""

import json
from datetime import datetime
from typing import Any

from tornado.web import RedirectHandler, RequestHandler, StaticFileHandler

from handlers.base import Route

# Only the service's own origin; Swagger UI sets inline styles and data: icons.
SWAGGER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class _JSONErrors(RequestHandler):
    """Errors as the API's: JSON, never an HTML page."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": "no such page" if status_code == 404 else self._reason}))


class SwaggerAssetHandler(_JSONErrors, StaticFileHandler):
    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", SWAGGER_CSP)

    def get_cache_time(self, path: str, modified: datetime | None, mime_type: str) -> int:
        return 0 if path == "index.html" else 3600

    async def get(self, path: str, include_body: bool = True) -> None:
        # A Range is ignored (RFC 9110 lets a server send the whole file): these files
        # are small, and Tornado's 416 for a bad one is an empty text/plain answer.
        self.request.headers.pop("Range", None)
        await super().get(path, include_body)


class SwaggerRedirectHandler(_JSONErrors, RedirectHandler):
    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


class OpenAPIHandler(_JSONErrors, RequestHandler):
    def initialize(self, document: dict[str, Any]) -> None:
        self._body = json.dumps(document, ensure_ascii=False).encode("utf-8")

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.finish(self._body)


def docs_routes(document: dict[str, Any], swagger_dir: str) -> list[Route]:
    return [
        (r"/swagger/?", SwaggerRedirectHandler, {"url": "/swagger/index.html"}),
        (r"/swagger/(?:openapi|doc)\.json", OpenAPIHandler, {"document": document}),
        (r"/swagger/(.+)", SwaggerAssetHandler, {"path": swagger_dir}),
    ]
