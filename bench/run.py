#!/usr/bin/env python3
"""imagestore's benchmark: throughput, latency and memory, each as a ratio to a
baseline measured in the same run on the same machine (`make bench`).

For each target (the source, and dist/imagestore when it is built), the service runs
on a free loopback port with a temporary data folder, a private mosquitto, log level
WARNING and a short memory-release interval, and is measured, each figure several
times (median and spread):
  - upload MB/s of 1, 64 and 512 MiB images, multipart POST (curl -F) and raw PUT
    (curl -T), against dd conv=fdatasync of the same size in the same folder;
  - 32 concurrent 1 MiB uploads (one curl, 32 connections), images/s;
  - download MB/s of the 512 MiB image (curl -o /dev/null), and req/s and p99 of a
    64 KiB image (wrk), against nginx serving the same files (sendfile on, no log);
  - req/s and p99 of GET /api/v1/albums (20 albums) and of an album's image list
    (1000 images), against nginx serving a static JSON file of the same bytes;
  - RSS of the service's process tree (VmRSS summed over it): idle, peak during the
    512 MiB uploads (sampled every 50 ms), after the memory-release tick;
  - the executable's cold start to its first 200 (bench/startup.py).
Service and baseline runs alternate, so drift on a shared machine hits both.
Prints a table, writes bench/results/<date>.json (and latest.json), a chart
bench/results/<date>.png (and latest.png) and the table as Markdown (latest.md).

Settings for the service pass through: IMAGESTORE_* from the environment (except the
ones the bench sets), or --env NAME=VALUE, e.g. to measure a lever:
  .venv/bin/python bench/run.py --env IMAGESTORE_WORKERS=2 --label workers=2

--profile instead runs py-spy against the service from source under the GET /albums
load and during the 512 MiB uploads and download, and prints the hot spots.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

import report
import tools
from tools import MIB, Broker, Nginx, RssSampler, Service, summary, tree_rss

ROOT = tools.ROOT
SOURCE = os.path.join(ROOT, "imagestore.py")
EXECUTABLE = os.path.join(ROOT, "dist", "imagestore")
RESULTS = os.path.join(ROOT, "bench", "results")

RELEASE_SECONDS = 2.0  # IMAGESTORE_MEMORY_RELEASE_SECONDS for the runs
SIZES_MIB = (1, 64, 512)
CONCURRENT = 32  # uploads at once
PER_CLIENT = 4  # uploads each of the 32 clients makes per round
ALBUM_COUNT = 20
IMAGE_COUNT = 1000
# The settings the bench sets itself; the caller's values for these are ignored.
BENCH_SETTINGS = (
    "IMAGESTORE_PORT",
    "IMAGESTORE_ADDRESS",
    "IMAGESTORE_DATA",
    "IMAGESTORE_MQTT",
    "IMAGESTORE_MQTT_HOST",
    "IMAGESTORE_MQTT_PORT",
    "IMAGESTORE_LOG_LEVEL",
    "IMAGESTORE_MEMORY_RELEASE_SECONDS",
    "IMAGESTORE_API_KEYS",
)


class Plan:
    """How many times each figure is measured, and for how long."""

    def __init__(self, quick: bool, wrk_seconds: float | None) -> None:
        self.uploads = {1: 3, 64: 3, 512: 2} if quick else {1: 9, 64: 5, 512: 5}
        self.downloads = 2 if quick else 5
        self.rounds = 1 if quick else 3
        self.wrk_runs = 2 if quick else 3
        self.wrk_seconds = wrk_seconds or (2 if quick else 5)
        self.startups = 3 if quick else 10


def album_names() -> list[str]:
    return [f"album-{i:02d}" for i in range(ALBUM_COUNT)]


def paired_ratios(figures: list[float], baselines: list[float]) -> list[float]:
    return [f / b for f, b in zip(figures, baselines, strict=False) if b]


def row(key, what, unit, runs, baseline=None, baseline_runs=None, bar=None, **extra) -> dict:
    """One line of the table: a figure, its baseline, their ratio, the bar."""
    entry = {"key": key, "what": what, "unit": unit, "figure": summary(runs), **extra}
    if baseline_runs:
        entry["baseline"] = {"what": baseline, **summary(baseline_runs)}
        pairs = paired_ratios(runs, baseline_runs)
        entry["ratio"] = entry["figure"]["median"] / entry["baseline"]["median"]
        entry["ratio_range"] = [min(pairs), max(pairs)]
    if bar:
        kind, threshold = bar
        if kind == "ratio":
            entry["bar"] = {"text": f">= {threshold:g}x", "ratio_at_least": threshold}
            entry["met"] = entry["ratio"] >= threshold
        elif kind == "at_least":
            entry["bar"] = {"text": f">= {threshold:g} {unit}", "at_least": threshold}
            entry["met"] = entry["figure"]["median"] >= threshold
    return entry


# --- one target ----------------------------------------------------------------------


def service_env(data: str, broker: Broker, extra: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in BENCH_SETTINGS and name not in ("HOSTIP", "PRODMODE")
    }
    env.update(extra)
    env.update(
        IMAGESTORE_DATA=data,
        IMAGESTORE_MQTT="on",
        IMAGESTORE_MQTT_HOST="127.0.0.1",
        IMAGESTORE_MQTT_PORT=str(broker.port),
        IMAGESTORE_LOG_LEVEL="WARNING",
        IMAGESTORE_MEMORY_RELEASE_SECONDS=str(RELEASE_SECONDS),
    )
    return env


def settle() -> None:
    """Long enough for a memory-release tick to have run."""
    time.sleep(2 * RELEASE_SECONDS + 0.5)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def measure_uploads(service, files, work, plan, rows, memory) -> None:
    port = service.port
    album = album_names()[0]
    peaks = {"POST": [], "PUT": []}
    for mib in SIZES_MIB:
        path = files[f"{mib}MiB"]
        size = os.path.getsize(path)
        runs = {"dd": [], "POST": [], "PUT": []}
        for i in range(plan.uploads[mib]):
            order = ["dd", "POST", "PUT"]
            order = order[i % 3 :] + order[: i % 3]  # no one always goes first
            for what in order:
                name = f"up-{mib}-{what}-{i}.png"
                if what == "dd":
                    seconds = tools.dd_write(os.path.join(work, "dd.out"), mib)
                else:
                    with RssSampler(service.pid) as sampler:
                        if what == "POST":
                            seconds = tools.curl_post_form(service.url(album, "images"), path, name)
                        else:
                            seconds = tools.curl_put(service.url(album, "images", name), path)
                    if mib == 512:
                        peaks[what].append(sampler.peak / MIB)
                    tools.delete_image(port, album, name)
                runs[what].append(size / seconds / 1e6)
        say(
            f"upload {mib} MiB: POST {summary(runs['POST'])['median']:.0f}, "
            f"PUT {summary(runs['PUT'])['median']:.0f}, "
            f"dd {summary(runs['dd'])['median']:.0f} MB/s"
        )
        bars = {512: {"POST": ("ratio", 0.85), "PUT": ("ratio", 0.9)}}.get(mib, {})
        for what, label in (("POST", "multipart POST"), ("PUT", "raw PUT")):
            rows.append(
                row(
                    f"upload_{what.lower()}_{mib}MiB",
                    f"upload {mib} MiB, {label}",
                    "MB/s",
                    runs[what],
                    "dd conv=fdatasync",
                    runs["dd"],
                    bars.get(what),
                )
            )
    memory["peak_upload_post"] = peaks["POST"]
    memory["peak_upload_put"] = peaks["PUT"]


def measure_concurrent(service, files, plan, rows) -> None:
    port = service.port
    path = files["1MiB"]
    count = CONCURRENT * PER_CLIENT
    rates = {"POST": [], "PUT": []}
    failed: dict[str, dict[str, int]] = {"POST": {}, "PUT": {}}
    for r in range(plan.rounds):
        for what in ("POST", "PUT") if r % 2 == 0 else ("PUT", "POST"):
            album = f"burst-{what.lower()}-{r}"
            tools.create_album(port, album)
            transfers = []
            for j in range(count):
                name = f"burst-{j:03d}.png"
                if what == "POST":
                    options = [f'form = "file=@{path};filename={name}"']
                    url = service.url(album, "images")
                else:
                    options = [f'upload-file = "{path}"']
                    url = service.url(album, "images", name)
                transfers.append([*options, f'url = "{url}"'])
            seconds, codes = tools.curl_many(transfers, CONCURRENT)
            # Only stored images count; any other answer (a 503 "too many uploads")
            # is reported, and fails the bar.
            rates[what].append(codes.count(200) / seconds)
            for code in codes + [0] * (count - len(codes)):
                if code != 200:
                    failed[what][str(code)] = failed[what].get(str(code), 0) + 1
            tools.delete_album(port, album)
    say(
        f"{CONCURRENT} concurrent 1 MiB uploads: POST {summary(rates['POST'])['median']:.0f}, "
        f"PUT {summary(rates['PUT'])['median']:.0f} images/s"
        + (f"; FAILED uploads by status: {failed}" if any(failed.values()) else "")
    )
    for what, label, bar in (
        ("POST", "multipart POST", ("at_least", 150)),
        ("PUT", "raw PUT", None),
    ):
        entry = row(
            f"concurrent_{what.lower()}_1MiB",
            f"{CONCURRENT} concurrent 1 MiB uploads, {label}",
            "images/s",
            rates[what],
            bar=bar,
        )
        if failed[what]:
            entry["failed"] = failed[what]
            if bar:
                entry["met"] = False
        rows.append(entry)


def measure_download(service, nginx, files, plan, rows, memory) -> None:
    album = album_names()[0]
    path = files["512MiB"]
    size = os.path.getsize(path)
    tools.curl_put(service.url(album, "images", "download.png"), path)
    runs = {"service": [], "nginx": []}
    peaks = []
    for i in range(plan.downloads):
        for who in ("service", "nginx") if i % 2 == 0 else ("nginx", "service"):
            if who == "service":
                with RssSampler(service.pid) as sampler:
                    seconds = tools.curl_get(service.url(album, "images", "download.png"), size)
                peaks.append(sampler.peak / MIB)
            else:
                seconds = tools.curl_get(nginx.url(os.path.basename(path)), size)
            runs[who].append(size / seconds / 1e6)
    memory["peak_download"] = peaks
    say(
        f"download 512 MiB: {summary(runs['service'])['median']:.0f} MB/s, "
        f"nginx {summary(runs['nginx'])['median']:.0f} MB/s"
    )
    rows.append(
        row(
            "download_512MiB",
            "download 512 MiB",
            "MB/s",
            runs["service"],
            "nginx, sendfile",
            runs["nginx"],
            ("ratio", 0.8),
        )
    )


def populate_list(service, files) -> str:
    """1000 small images in one album (PUT from 8 connections); returns the album."""
    album = album_names()[1]
    transfers = [
        [f'upload-file = "{files["tiny"]}"', f'url = "{service.url(album, "images", name)}"']
        for name in (f"IMG_{i:04d}.png" for i in range(IMAGE_COUNT))
    ]
    _, codes = tools.curl_many(transfers, 8)
    if len(codes) != IMAGE_COUNT or any(code != 200 for code in codes):
        raise RuntimeError(f"populating {album}: {sorted(set(codes))}")
    return album


def measure_small_requests(service, nginx, files, plan, rows) -> None:
    port = service.port
    album = album_names()[0]
    tools.curl_put(service.url(album, "images", "64k.png"), files["64KiB"])
    list_album = populate_list(service, files)
    # The static files nginx serves: the service's own answers, byte for byte.
    for name, path in (
        ("albums.json", tools.api_path()),
        ("images.json", tools.api_path(list_album, "images")),
    ):
        with open(os.path.join(files["root"], name), "wb") as out:
            out.write(tools.expect_ok(port, "GET", path))
    albums = json.loads(open(os.path.join(files["root"], "albums.json"), "rb").read())
    if len(albums["albumList"]) != ALBUM_COUNT:
        raise RuntimeError(f"expected {ALBUM_COUNT} albums, found {albums}")
    cases = [
        (
            "image_64KiB",
            "GET a 64 KiB image",
            service.url(album, "images", "64k.png"),
            nginx.url("64k.png"),
            "nginx, sendfile",
            ("ratio", 0.2),
        ),
        (
            "albums",
            f"GET /albums ({ALBUM_COUNT} albums, "
            f"{os.path.getsize(os.path.join(files['root'], 'albums.json'))} B)",
            service.url(),
            nginx.url("albums.json"),
            "nginx, static JSON",
            ("ratio", 0.2),
        ),
        (
            "image_list",
            f"GET an album's images ({IMAGE_COUNT}, "
            f"{os.path.getsize(os.path.join(files['root'], 'images.json')) / 1000:.0f} kB)",
            service.url(list_album, "images"),
            nginx.url("images.json"),
            "nginx, static JSON",
            None,
        ),
    ]
    for key, what, url, baseline_url, baseline, bar in cases:
        tools.wrk(url, seconds=1)  # warm-up, not counted
        tools.wrk(baseline_url, seconds=1)
        got = {"service": [], "nginx": []}
        for i in range(plan.wrk_runs):
            for who in ("service", "nginx") if i % 2 == 0 else ("nginx", "service"):
                got[who].append(
                    tools.wrk(url if who == "service" else baseline_url, seconds=plan.wrk_seconds)
                )
        rps = [r["rps"] for r in got["service"]]
        nginx_rps = [r["rps"] for r in got["nginx"]]
        p99 = [r["p99_ms"] for r in got["service"]]
        nginx_p99 = [r["p99_ms"] for r in got["nginx"]]
        say(
            f"{what}: {summary(rps)['median']:.0f} req/s p99 {summary(p99)['median']:.1f} ms; "
            f"nginx {summary(nginx_rps)['median']:.0f} req/s p99 "
            f"{summary(nginx_p99)['median']:.2f} ms"
        )
        rows.append(
            row(
                f"{key}_rps",
                what,
                "req/s",
                rps,
                baseline,
                nginx_rps,
                bar,
                p99_ms=summary(p99),
                baseline_p99_ms=summary(nginx_p99),
            )
        )


def measure_memory(service, memory: dict, rows: list) -> None:
    settle()
    memory["after"] = tree_rss(service.pid) / MIB
    peak = max(memory["peak_upload_post"] + memory["peak_upload_put"])
    say(
        f"RSS peak during the 512 MiB uploads {peak:.1f} MiB, "
        f"after the tick {memory['after']:.1f} MiB"
    )
    rows.extend(memory_rows(memory))


def memory_rows(memory: dict) -> list[dict]:
    idle = memory["idle"]
    peaks = memory["peak_upload_post"] + memory["peak_upload_put"]
    peak = max(peaks)
    upload = row(
        "rss_peak_upload_512MiB",
        "RSS, peak during a 512 MiB upload",
        "MiB",
        peaks,
        over_idle=peak - idle,
    )
    upload["bar"] = {"text": f"<= idle + 16 MiB ({idle + 16:.0f})", "at_most": idle + 16}
    upload["met"] = peak <= idle + 16
    return [
        row("rss_idle", "RSS, idle (after a warm-up and a release tick)", "MiB", [idle]),
        upload,
        row(
            "rss_peak_download_512MiB",
            "RSS, peak during a 512 MiB download",
            "MiB",
            memory["peak_download"],
            over_idle=max(memory["peak_download"]) - idle,
        ),
        row("rss_after", "RSS, after the memory-release tick", "MiB", [memory["after"]]),
    ]


def run_target(target, command, files, nginx, broker, args, plan) -> dict:
    data = os.path.join(files["work"], f"data-{target}")
    env = service_env(data, broker, args.env)
    print(f"{target}: {' '.join(tools.shown(c) for c in command)}", flush=True)
    service = Service(command, env, files["work"])
    rows: list[dict] = []
    memory: dict = {}
    errors: list[str] = []
    try:
        port = service.port
        for album in album_names():
            tools.create_album(port, album)
        # Warm-up: one of each request kind, then a release tick: idle.
        album = album_names()[0]
        tools.curl_put(service.url(album, "images", "warm-put.png"), files["1MiB"])
        tools.curl_post_form(service.url(album, "images"), files["1MiB"], "warm-post.png")
        tools.curl_get(service.url(album, "images", "warm-put.png"), os.path.getsize(files["1MiB"]))
        tools.expect_ok(port, "GET", tools.api_path())
        tools.expect_ok(port, "GET", tools.api_path(album, "images"))
        for name in ("warm-put.png", "warm-post.png"):
            tools.delete_image(port, album, name)
        settle()
        memory["idle"] = tree_rss(service.pid) / MIB
        say(f"RSS idle {memory['idle']:.1f} MiB (pid {service.pid} and its children)")

        def phase(name, measure, *more) -> None:
            """A failed measure is reported, and the others still run."""
            if service.proc.poll() is not None:
                errors.append(f"{name}: not measured, the service has exited")
                return
            try:
                measure(service, *more)
            except Exception as err:  # noqa: BLE001 (reported in the table and the JSON)
                errors.append(f"{name}: {err}")
                say(f"FAILED {name}: {err}")

        phase("uploads", measure_uploads, files, files["work"], plan, rows, memory)
        phase("download", measure_download, nginx, files, plan, rows, memory)
        phase("memory", measure_memory, memory, rows)
        phase("concurrent uploads", measure_concurrent, files, plan, rows)
        phase("small requests", measure_small_requests, nginx, files, plan, rows)
    finally:
        code = service.stop()
        log = service.log()
        shutil.rmtree(data, ignore_errors=True)
    problems = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    return {
        "command": [tools.shown(c) for c in command],
        "rows": rows,
        "exit_code": code,
        "errors": errors,
        "log_problems": problems[:20],
    }


def measure_startup(plan) -> dict | None:
    """The executable's cold start to its first 200, with bench/startup.py."""
    try:
        import startup
    except ImportError as err:
        print(f"startup: skipped, bench/startup.py cannot be used ({err})")
        return None
    with tools.quiet():  # the service's own output (a broker it cannot reach) is noise here
        results = [startup.one_start([EXECUTABLE]) for _ in range(plan.startups)]
    entry = row(
        "startup_first_200",
        "cold start of dist/imagestore to its first 200",
        "ms",
        [r[0] * 1000 for r in results],
        size_mb=os.path.getsize(EXECUTABLE) / 1e6,
    )
    say(f"cold start to first 200: {entry['figure']['median']:.0f} ms")
    return entry


# --- files and set-up ----------------------------------------------------------------


def make_files(work: str) -> dict:
    root = os.path.join(work, "www")
    os.makedirs(root)
    files = {"work": work, "root": root}
    for mib in SIZES_MIB:
        files[f"{mib}MiB"] = os.path.join(root, f"image-{mib}MiB.png")
        tools.write_png(files[f"{mib}MiB"], mib * MIB)
    files["64KiB"] = os.path.join(root, "64k.png")
    tools.write_png(files["64KiB"], 64 * 1024)
    files["tiny"] = os.path.join(root, "tiny.png")
    tools.write_png(files["tiny"], 128)
    return files


def exe_is_stale() -> list[str]:
    built = os.path.getmtime(EXECUTABLE)
    newer = []
    for folder in (".", "handlers", "store", "notify"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            path = os.path.join(ROOT, folder, name)
            if name.endswith(".py") and os.path.getmtime(path) > built:
                newer.append(os.path.relpath(path, ROOT))
    return sorted(newer)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--targets",
        default=None,
        help="comma-separated: source, exe (default: source, and exe when dist/imagestore exists)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test)")
    parser.add_argument("--wrk-seconds", type=float, default=None, help="each wrk run (default 5)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service (repeatable), e.g. IMAGESTORE_WORKERS=2",
    )
    parser.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        help="where the temporary folder goes: the data folder, dd's file and nginx's files "
        "(default: $TMPDIR or /tmp)",
    )
    parser.add_argument("--out", default=RESULTS, help="folder for JSON, PNG and Markdown")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is not met")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the service from source with py-spy instead (no table)",
    )
    args = parser.parse_args()
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        extra[name] = value
    args.env = extra
    return args


def main() -> int:
    args = parse_args()
    tools.need("curl", "wrk", "nginx", "mosquitto", "dd")
    if args.profile:
        import profile_service

        return profile_service.main(args)
    plan = Plan(args.quick, args.wrk_seconds)
    if args.targets:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    else:
        targets = ["source"] + (["exe"] if os.path.isfile(EXECUTABLE) else [])
    commands = {"source": [sys.executable, SOURCE], "exe": [EXECUTABLE]}
    for target in targets:
        if target not in commands:
            sys.exit(f"bench: unknown target {target!r} (source, exe)")
    if "exe" in targets and not os.path.isfile(EXECUTABLE):
        sys.exit("bench: dist/imagestore is not built (run `make`)")
    stale = exe_is_stale() if "exe" in targets else []
    if stale:
        print(f"warning: dist/imagestore is older than {', '.join(stale)}: `make` rebuilds it")
    if not os.path.isfile(EXECUTABLE):
        print("dist/imagestore is not built: measuring the source only (`make` builds it)")

    os.makedirs(args.workdir, exist_ok=True)
    if shutil.disk_usage(args.workdir).free < 3 * 1024**3:
        sys.exit(f"bench: less than 3 GiB free in {args.workdir}")
    began = time.monotonic()
    started = datetime.datetime.now().astimezone()
    results = {
        "date": started.isoformat(timespec="seconds"),
        "label": args.label,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "commit": tools.git_commit(),
        "settings": {
            **{k: v for k, v in os.environ.items() if k.startswith("IMAGESTORE_")},
            **args.env,
        },
        "plan": vars(plan),
        # Anything else running on the machine skews the figures: this says how busy it was.
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
        "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="imagestore-bench-", dir=args.workdir) as work:
        results["machine"] = tools.machine_info(work)
        print(
            f"machine: {results['machine']['nproc']} cores, {results['machine']['cpu']}, "
            f"{results['machine']['memory']}, disk {results['machine']['disk']} "
            f"({results['machine']['filesystem']}); work folder {work}",
            flush=True,
        )
        files = make_files(work)
        broker = Broker(os.path.join(work, "broker")).start()
        nginx = Nginx(files["root"], os.path.join(work, "nginx"))
        try:
            for target in targets:
                results["targets"][target] = run_target(
                    target, commands[target], files, nginx, broker, args, plan
                )
                if target == "exe":
                    try:
                        entry = measure_startup(plan)
                    except Exception as err:  # noqa: BLE001 (reported)
                        entry = None
                        results["targets"][target]["errors"].append(f"start-up: {err}")
                    if entry:
                        results["targets"][target]["rows"].append(entry)
                    results["targets"][target]["stale"] = stale
        finally:
            nginx.stop()
            broker.stop()
    results["seconds"] = round(time.monotonic() - began, 1)
    results["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]

    os.makedirs(args.out, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(args.out, stamp)
    with open(base + ".json", "w") as out:
        json.dump(results, out, indent=1)
    markdown = report.markdown(results)
    print()
    print(markdown)
    with open(os.path.join(args.out, "latest.md"), "w") as out:
        out.write(markdown)
    shutil.copyfile(base + ".json", os.path.join(args.out, "latest.json"))
    try:
        report.chart(results, base + ".png")
        shutil.copyfile(base + ".png", os.path.join(args.out, "latest.png"))
        chart_note = f", {os.path.relpath(base, ROOT)}.png"
    except ImportError as err:
        chart_note = f" (no chart: {err}; `make bench` installs matplotlib)"
    print(f"written: {os.path.relpath(base, ROOT)}.json{chart_note} in {results['seconds']:.0f} s")
    unmet = [
        r["what"] for t in results["targets"].values() for r in t["rows"] if r.get("met") is False
    ]
    return 1 if args.strict and unmet else 0


if __name__ == "__main__":
    sys.exit(main())
