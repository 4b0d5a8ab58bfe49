"""The Swagger page in a real headless Chromium (Debian's), with the network limited
to the service: every operation listed, "Try it out" working, uploads included."""

import json
import shutil

import pytest
from images import png
from playwright.sync_api import sync_playwright
from process import create_album, request, serve

# Needs Debian's Chromium: `make test` runs it, `make check` leaves it out.
pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start(run, tmp_path, **env: str):
    return serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db"), "--no-mqtt"),
            env,
        ),
    )


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, origin: str):
    """A page whose every request outside ``origin`` is refused and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 2000})
    outside: list[str] = []
    problems: list[str] = []

    def guard(route) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return page, outside, problems


def operation(page, method: str, path: str):
    return page.locator(f".opblock-{method}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
    )


def test_every_operation_is_listed_and_try_it_out_works(run, tmp_path, browser):
    proc, port = start(run, tmp_path)
    origin = f"http://127.0.0.1:{port}"
    create_album(port, "pets")
    page, outside, problems = open_page(browser, origin)

    page.goto(origin + "/swagger/index.html")
    page.wait_for_selector(".opblock", timeout=30_000)
    status, _, body = request(port, "GET", "/swagger/openapi.json")
    spec = json.loads(body)
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "head", "post", "put", "patch", "delete")
    }
    listed = set()
    for block in page.locator(".opblock").all():
        method = block.locator(".opblock-summary-method").inner_text().strip().lower()
        path = block.locator(".opblock-summary-path").get_attribute("data-path")
        listed.add((method, path))
    assert listed == documented and len(listed) == 14  # as openapi.json says
    assert "Image Storage Service" in page.locator(".info .title").inner_text()

    # Try it out: GET /albums
    albums = operation(page, "get", "/albums")
    albums.locator(".opblock-summary").click()
    albums.locator(".try-out__btn").click()
    albums.locator(".execute").click()
    status_cell = albums.locator(".live-responses-table tr.response .response-col_status").first
    status_cell.wait_for(timeout=15_000)
    assert status_cell.inner_text().strip() == "200"
    assert '"pets"' in albums.locator(".live-responses-table .microlight").first.inner_text()

    # Try it out: a multipart upload, with a real file chosen in the form
    image_path = tmp_path / "cat.png"
    image_path.write_bytes(png(padding=2048))
    upload = operation(page, "post", "/albums/{album}/images")
    upload.locator(".opblock-summary").click()
    upload.locator(".try-out__btn").click()
    upload.locator('tr[data-param-name="album"] input').fill("pets")
    upload.locator('input[type="file"]').set_input_files(str(image_path))
    upload.locator(".execute").click()
    status_cell = upload.locator(".live-responses-table tr.response .response-col_status").first
    status_cell.wait_for(timeout=15_000)
    assert status_cell.inner_text().strip() == "200", upload.inner_text()
    page.screenshot(path=str(tmp_path / "swagger.png"), full_page=True)

    status, _, body = request(port, "GET", "/api/v1/albums/pets/images")
    assert json.loads(body) == {"imageList": ["cat.png"]}
    status, _, stored = request(port, "GET", "/api/v1/albums/pets/images/cat.png")
    assert stored == image_path.read_bytes()
    assert outside == [], f"the page asked for something outside the service: {outside}"
    assert problems == [], problems
    assert (tmp_path / "swagger.png").stat().st_size > 10_000


def test_prodmode_serves_no_documentation(run, tmp_path, browser):
    proc, port = start(run, tmp_path, PRODMODE="1")
    for path in ("/swagger/index.html", "/swagger/openapi.json", "/swagger/doc.json", "/swagger"):
        status, _, body = request(port, "GET", path)
        assert status == 404 and json.loads(body) == {"error": "no such endpoint"}, path
    assert "documentation is disabled" in proc.log()
    assert "Swagger Documentation available" not in proc.log()
    page, outside, problems = open_page(browser, f"http://127.0.0.1:{port}")
    response = page.goto(f"http://127.0.0.1:{port}/swagger/index.html")
    assert response.status == 404


def test_the_start_up_log_gives_the_page_address_with_hostip(run, tmp_path):
    proc, port = start(run, tmp_path, HOSTIP="192.0.2.44")
    assert f"Swagger Documentation available at http://192.0.2.44:{port}/swagger/index.html" in (
        proc.log()
    )
    status, _, body = request(port, "GET", "/swagger/openapi.json")
    assert json.loads(body)["servers"] == [{"url": f"http://192.0.2.44:{port}/api/v1"}]
