"""The API documents itself truthfully: a valid OpenAPI document generated from the
handlers, no drift between routes and spec, and contract fuzzing of the live service."""

import json
import re
import subprocess
import sys

import pytest
from conftest import body_json
from openapi_spec_validator import validate
from process import request, serve
from tornado.web import RequestHandler

from handlers import API_ROUTES, ROOT_ROUTES, api_server_url, make_app
from handlers.openapi import build_spec, openapi_path
from settings import VERSION

# OPTIONS is every route's CORS preflight, not an operation of the API.
HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete")


@pytest.fixture
def spec():
    return build_spec(API_ROUTES, ROOT_ROUTES, api_server_url("", 3333))


@pytest.mark.parametrize("host_ip", ["", "192.0.2.10"])
def test_the_document_is_valid_openapi(host_ip):
    document = build_spec(API_ROUTES, ROOT_ROUTES, api_server_url(host_ip, 3333))
    validate(document)
    assert document["info"]["title"] == "Image Storage Service"
    assert document["info"]["version"] == VERSION
    expected = f"http://{host_ip}:3333/api/v1" if host_ip else "/api/v1"
    assert document["servers"] == [{"url": expected}]
    root = f"http://{host_ip}:3333/" if host_ip else "/"
    assert document["paths"]["/healthz"]["servers"] == [{"url": root}]


def implemented_methods(handler: type[RequestHandler]) -> set[str]:
    return {
        method
        for method in HTTP_METHODS
        if getattr(handler, method) is not getattr(RequestHandler, method)
    }


def test_no_drift_between_the_routes_served_and_the_spec(store, spec):
    app = make_app(store)
    served: dict[str, set[str]] = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.removesuffix("$")
        if pattern.startswith("/swagger"):
            continue  # the documentation itself, not an API operation
        served[openapi_path(pattern)] = implemented_methods(rule.target)
    documented = {
        ("/api/v1" if "servers" not in item else "") + path: {m for m in item if m in HTTP_METHODS}
        for path, item in spec["paths"].items()
    }
    assert served == documented


def test_every_operation_documents_its_errors_and_success(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            codes = set(operation["responses"])
            assert "200" in {str(c) for c in codes}, (method, path)
            assert operation.get("summary"), (method, path)
            if "{" in path:
                assert {400, 404} <= {int(c) for c in codes}, (method, path)
            if method in ("post", "put", "patch"):
                assert "requestBody" in operation, (method, path)


def test_uploads_are_documented_as_binary(spec):
    post = spec["paths"]["/albums/{album}/images"]["post"]
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"] == {"type": "string", "format": "binary"}
    put = spec["paths"]["/albums/{album}/images/{image}"]["put"]
    assert put["requestBody"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    get = spec["paths"]["/albums/{album}/images/{image}"]["get"]
    assert {"200", "206", "304", "416"} <= {str(c) for c in get["responses"]}


@pytest.mark.gen_test
async def test_the_document_is_served_at_both_paths(api, spec):
    for path in ("/swagger/openapi.json", "/swagger/doc.json"):
        response = await api.http.fetch(api.base.replace("/api/v1", path))
        assert response.code == 200
        assert body_json(response) == json.loads(json.dumps(spec))


@pytest.mark.gen_test
async def test_the_page_and_its_assets_are_served_with_a_strict_policy(api):
    root = api.base.replace("/api/v1", "")
    for path in ("/swagger", "/swagger/"):
        response = await api.http.fetch(root + path, follow_redirects=False, raise_error=False)
        assert response.code == 301 and response.headers["Location"] == "/swagger/index.html"
    for name in (
        "index.html",
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ):
        response = await api.http.fetch(f"{root}/swagger/{name}")
        assert response.code == 200, name
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "http" not in csp, "only the service's own origin"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = (await api.http.fetch(f"{root}/swagger/index.html")).body.decode()
    assert "http://" not in page and "https://" not in page, "no external resource"
    initializer = (await api.http.fetch(f"{root}/swagger/swagger-initializer.js")).body.decode()
    assert "validatorUrl: null" in initializer
    response = await api.http.fetch(f"{root}/swagger/missing.js", raise_error=False)
    assert response.code == 404 and body_json(response) == {"error": "no such page"}


def test_schemathesis_finds_no_5xx_and_no_contract_violation(run, tmp_path):
    """Every operation fuzzed against the live service: examples, coverage of edge
    values, random and invalid data (bad names, bad JSON, bad bodies), and stateful
    sequences following the inferred links."""
    proc, port = serve(
        run,
        lambda port: (("--port", str(port), "--data", str(tmp_path / "db"), "--no-mqtt"), {}),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"http://127.0.0.1:{port}/swagger/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--mode",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "20261128",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    tested = re.search(r"Tested: (\d+)", report)
    assert tested and int(tested.group(1)) == 14, report[-3000:]
    assert "Traceback" not in proc.log() and "Uncaught exception" not in proc.log(), proc.log()[
        -5000:
    ]
    assert request(port, "GET", "/healthz")[0] == 200
