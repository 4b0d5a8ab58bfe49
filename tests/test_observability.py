"""Operating the service: /metrics (summed over the workers, its folder private, fresh
at each start, cleaned after a crash), request logs (text and JSON, X-Request-ID, no
key or signature), and the images' cache rules."""

import json
import os
import signal
import stat
import time

import pytest
from conftest import body_json
from images import SVG, png
from process import create_album, path_of, request, serve
from prometheus_client.parser import text_string_to_metric_families

from handlers import make_app
from handlers.access import AccessPolicy


def scrape(port, headers=None) -> dict:
    """{(name, labels as a sorted tuple): value} of the live service's /metrics."""
    status, response_headers, body = request(port, "GET", "/metrics", headers=headers)
    assert status == 200, body
    assert response_headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_counted(samples, method, route, status) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("imagestore_http_requests_total", labels), 0.0)


def settled(port, check, timeout: float = 10.0) -> dict:
    """The first scrape for which ``check(samples)`` holds: a request's counts are
    written just after its answer leaves, and the next scrape may be served by the
    other worker in between."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(child) for child in found.read().split()]


def metrics_folders(parent) -> list:
    return sorted(parent.glob("imagestore-metrics-*"))


def start(run, tmp_path, workers="2", **env):
    return serve(
        run,
        lambda port: (
            ("--port", str(port), "--data", str(tmp_path / "db"), "--workers", workers),
            {
                "IMAGESTORE_MQTT": "off",
                "IMAGESTORE_METRICS_DIR": str(tmp_path / "metrics"),
                **env,
            },
        ),
    )


def test_counters_add_up_over_two_workers_and_survive_a_worker_crash(run, tmp_path):
    (tmp_path / "metrics").mkdir()
    proc, port = start(run, tmp_path)
    # The start-up check's one GET, once counted.
    first = settled(port, lambda found: requests_counted(found, "GET", "/api/v1/albums", "200"))
    before = requests_counted(first, "GET", "/api/v1/albums", "200")
    assert before == 1
    for _ in range(40):  # a new connection each: the kernel hands them to both workers
        assert request(port, "GET", "/api/v1/albums")[0] == 200
    create_album(port, "pets")
    assert request(port, "GET", path_of("pets", "images", "x.png"))[0] == 404
    samples = settled(
        port,
        lambda found: (
            requests_counted(found, "GET", "/api/v1/albums/{album}/images/{image}", "404")
            and requests_counted(found, "GET", "/api/v1/albums", "200") >= before + 40
        ),
    )
    assert requests_counted(samples, "GET", "/api/v1/albums", "200") == before + 40
    assert requests_counted(samples, "POST", "/api/v1/albums", "200") == 1
    assert requests_counted(samples, "GET", "/api/v1/albums/{album}/images/{image}", "404") == 1
    assert samples[("imagestore_albums", ())] == 1
    assert samples[("imagestore_images", ())] == 0
    histogram = (
        "imagestore_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/v1/albums")),
    )
    assert samples[histogram] == before + 40

    workers = children(proc.popen.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait_for_log("starting another")
    proc.wait_ready(port, check_log=False)
    after = scrape(port)
    counted = requests_counted(after, "GET", "/api/v1/albums", "200")
    assert counted >= before + 40, "a dead worker's counts stay: totals never go down"
    for _ in range(10):
        assert request(port, "GET", "/api/v1/albums")[0] == 200
    wanted = counted + 10
    samples = settled(
        port, lambda found: requests_counted(found, "GET", "/api/v1/albums", "200") >= wanted
    )
    assert requests_counted(samples, "GET", "/api/v1/albums", "200") == wanted


def test_the_metrics_folder_is_private_fresh_and_cleaned_after_a_crash(run, tmp_path):
    parent = tmp_path / "metrics"
    parent.mkdir()
    stale = parent / "imagestore-metrics-leftover"
    stale.mkdir()
    (stale / "owner").write_text("999999999")  # no such process
    (stale / "counter_1.db").write_bytes(b"old counts")
    proc, port = start(run, tmp_path)
    folders = metrics_folders(parent)
    assert len(folders) == 1 and folders[0] != stale, "the dead service's folder is gone"
    mode = stat.S_IMODE(os.stat(folders[0]).st_mode)
    assert mode == 0o700, oct(mode)
    scrape(port)

    proc.popen.kill()  # a crash: no clean-up; the workers die with it
    proc.popen.wait(timeout=10)
    assert metrics_folders(parent) == folders, "left behind by the crash"
    time.sleep(0.5)  # the workers' exit (parent-death signal)
    proc, port = start(run, tmp_path)
    again = metrics_folders(parent)
    assert len(again) == 1 and again != folders, "the crashed run's folder was removed"
    assert requests_counted(scrape(port), "GET", "/api/v1/albums", "200") >= 1
    assert requests_counted(scrape(port), "GET", "/api/v1/albums", "200") < 5, "counts start afresh"
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    assert metrics_folders(parent) == [], "a clean stop removes its folder"


def test_json_logs_one_object_a_line_with_the_request_id_and_no_secret(run, tmp_path):
    proc, port = start(
        run, tmp_path, workers="1", IMAGESTORE_LOG_FORMAT="json", IMAGESTORE_API_KEYS="sekret-key-1"
    )
    auth = {"Authorization": "Bearer sekret-key-1"}
    status, _, _ = request(
        port,
        "POST",
        "/api/v1/albums",
        json.dumps({"albumName": "pets"}).encode(),
        {**auth, "X-Request-ID": "trace-42"},
    )
    assert status == 200
    status, headers, _ = request(
        port,
        "GET",
        "/api/v1/albums?signature=feedface0123&expires=1",
        headers={"X-Request-ID": "bad id with spaces"},
    )
    assert status == 200 and headers["x-request-id"] != "bad id with spaces"
    made = headers["x-request-id"]
    assert proc.wait_for_log(made)
    lines = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    posted = [line for line in lines if line.get("requestId") == "trace-42"]
    assert len(posted) == 1
    assert posted[0]["method"] == "POST" and posted[0]["route"] == "/api/v1/albums"
    assert posted[0]["status"] == 200 and posted[0]["bytes"] > 0 and posted[0]["duration"] >= 0
    assert posted[0]["client"] == "127.0.0.1" and posted[0]["level"] == "INFO"
    listed = [line for line in lines if line.get("requestId") == made]
    assert listed[0]["path"] == "/api/v1/albums"
    assert "sekret-key-1" not in proc.log() and "feedface0123" not in proc.log()


def test_text_access_logs_are_on_by_default(run, tmp_path):
    proc, port = start(run, tmp_path, workers="1")
    status, headers, _ = request(port, "GET", "/api/v1/albums/ghost/images?after=x")
    assert status == 404
    assert proc.wait_for_log("GET /api/v1/albums/ghost/images 404 ")
    assert f"id={headers['x-request-id']}" in proc.log()
    assert "after=x" not in proc.log()


# --- in process -----------------------------------------------------------------------


@pytest.mark.gen_test
async def test_refused_uploads_are_counted_by_cause(api, app):
    await api.create_album("pets")
    assert (await api.put_image("pets", "x.svg", SVG)).code == 415
    assert (await api.put_image("pets", "a.png", png())).code == 200
    assert (await api.put_image("pets", "a.png", png())).code == 409
    assert (await api.put_image("ghost", "a.png", png())).code == 404
    response = await api.http.fetch(api.base.removesuffix("/api/v1") + "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.body.decode())
        for s in family.samples
    }
    refused = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "imagestore_uploads_refused_total"
    }
    assert refused == {"not_an_image": 1, "name_taken": 1, "no_album": 1}
    received = samples[
        (
            "imagestore_http_received_bytes_total",
            (("route", "/api/v1/albums/{album}/images/{image}"),),
        )
    ]
    assert received == len(SVG) + len(png()), "the refused-early bodies were never read"
    assert samples[("imagestore_images", ())] == 1


class TestWithKeysAndMaxAge:
    @pytest.fixture
    def app(self, store, upload_limits):
        return make_app(
            store,
            limits=upload_limits,
            metrics_key="scrape-token",
            cache_max_age=300,
            access=AccessPolicy(("key-1",), public_read=False),
        )

    @pytest.mark.gen_test
    async def test_the_metrics_key_and_private_caching(self, api):
        root = api.base.removesuffix("/api/v1")
        refused = await api.http.fetch(root + "/metrics", raise_error=False)
        assert refused.code == 401 and "IMAGESTORE_METRICS_KEY" in body_json(refused)["error"]
        wrong = await api.http.fetch(
            root + "/metrics", raise_error=False, headers={"Authorization": "Bearer key-1"}
        )
        assert wrong.code == 401, "an API key is not the metrics key"
        scraped = await api.http.fetch(
            root + "/metrics", headers={"Authorization": "Bearer scrape-token"}
        )
        assert b"imagestore_http_requests_total" in scraped.body
        auth = {"Authorization": "Bearer key-1"}
        await api.request("POST", "/albums", {"albumName": "pets"}, headers=auth)
        await api.put_image("pets", "a.png", png(), headers=auth)
        image = await api.download("pets", "a.png", headers=auth)
        assert image.headers["Cache-Control"] == "private, max-age=300", "reads need a key"


@pytest.mark.gen_test
async def test_images_are_no_cache_by_default_and_public_with_a_max_age(api, app):
    await api.create_album("pets")
    await api.put_image("pets", "a.png", png())
    assert (await api.download("pets", "a.png")).headers["Cache-Control"] == "no-cache"
    app.settings["cache_max_age"] = 60
    assert (await api.download("pets", "a.png")).headers["Cache-Control"] == "public, max-age=60"
    head = await api.download("pets", "a.png", method="HEAD")
    assert head.headers["Cache-Control"] == "public, max-age=60"
    listing = await api.list_images("pets")
    assert listing.headers["Cache-Control"] == "no-cache", "lists are always asked again"
