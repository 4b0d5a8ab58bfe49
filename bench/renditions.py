"""Renditions against thumbor 7 and against the bare libvips call, in one run.

  .venv/bin/python bench/renditions.py [--seconds 5] [--quick]   (make bench-renditions)

On the same two images, made here: a 24-megapixel JPEG (6000x4000) and a PNG of about
2 MiB. For a 256 px WebP and a 1024 px JPEG of each:
  cold     imagestore with its rendition cache off: every request renders
  thumbor  thumbor 7.8 (.venv-thumbor: requirements-thumbor.txt), file loader, unsafe
           URLs, no storage and no result storage, a thread pool of one per core
  libvips  pyvips' thumbnail + save in this process, one thread per core: the limit
  warm     imagestore with its cache on, the rendition cached
  plain    a GET of an image the size of that rendition (the bar for warm)
Requests/s by wrk (4 connections for the renditions, 32 for warm and plain); then the
RSS of a burst of 32 concurrent cold 1024 px renditions (distinct, so none is shared)
against idle. Bars (issue 14): cold >= 1.5x thumbor and >= 0.7x libvips; warm >= 0.8x
plain; burst RSS < idle + 300 MiB.
"""

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import harness as h
import pyvips

ROOT = h.ROOT
THUMBOR = os.path.join(ROOT, ".venv-thumbor", "bin", "thumbor")
CORES = os.cpu_count() or 1
RENDITIONS = {"256 webp": (256, "webp"), "1024 jpeg": (1024, "jpeg")}


def make_images(folder: str) -> dict[str, str]:
    """photo.jpg: 6000x4000, photo-like (smooth gradients and noise); chart.png: ~2 MiB."""
    xyz = pyvips.Image.xyz(6000, 4000)
    noise = pyvips.Image.gaussnoise(6000, 4000, sigma=12, mean=0)
    photo = (xyz[0] / 24).bandjoin([xyz[1] / 16, (xyz[0] + xyz[1]) / 40]) + noise
    photo.cast("uchar").write_to_file(os.path.join(folder, "photo.jpg"), Q=85)
    small = pyvips.Image.gaussnoise(1400, 1000, sigma=20, mean=128)
    chart = (pyvips.Image.xyz(1400, 1000)[0] / 6 + small / 4).bandjoin([small, small / 2])
    chart.cast("uchar").write_to_file(os.path.join(folder, "chart.png"), compression=9)
    return {"24 MP JPEG": "photo.jpg", "2 MiB PNG": "chart.png"}


def bare_libvips(path: str, width: int, fmt: str, seconds: float) -> float:
    """Renditions/s of pyvips alone, CORES threads, from the file on disk, set up as
    the service sets it (one thread per operation, no operation cache)."""
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    suffix = ".webp" if fmt == "webp" else ".jpg"
    done = [0] * CORES
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop:
            pyvips.Image.thumbnail(path, width, height=10_000_000).write_to_buffer(suffix)
            done[index] += 1

    took = h.at_once(CORES, work)
    return sum(done) / took


class Thumbor:
    def __init__(self, root: str, folder: str) -> None:
        conf = os.path.join(folder, "thumbor.conf")
        Path(conf).write_text(
            f"LOADER = 'thumbor.loaders.file_loader'\nFILE_LOADER_ROOT_PATH = {root!r}\n"
            "STORAGE = 'thumbor.storages.no_storage'\nRESULT_STORAGE = None\n"
            f"ALLOW_UNSAFE_URL = True\nENGINE_THREADPOOL_SIZE = {CORES}\n"
            "MAX_WIDTH = 0\nMAX_HEIGHT = 0\nQUALITY = 80\n"
        )
        self.port = h.free_port()
        self.log = open(os.path.join(folder, "thumbor.log"), "wb")
        self.proc = subprocess.Popen(
            [
                THUMBOR,
                "--port",
                str(self.port),
                "--ip",
                "127.0.0.1",
                "--conf",
                conf,
                "-l",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid
        h.wait_for_port(self.port)

    @staticmethod
    def path(name: str, width: int, fmt: str, quality: bool = False) -> str:
        filters = f"format({fmt})" + (":quality(%d)" if quality else "")
        return f"/unsafe/{width}x0/filters:{filters}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def service(data: str, cache_bytes: int, folder: str) -> h.Service:
    env = h.clean_env(
        IMAGESTORE_MQTT="off",
        IMAGESTORE_LOG_LEVEL="WARNING",
        IMAGESTORE_WORKERS="1",
        IMAGESTORE_RENDITION_CACHE_BYTES=str(cache_bytes),
    )
    return h.Service([h.sys.executable, os.path.join(ROOT, "imagestore.py")], data, env, folder)


RANDOM_QUALITY_LUA = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format("GET", string.format("%s", math.random(50, 99)))
end
"""


def distinct(folder: str, pattern: str) -> str:
    """A wrk script asking ``pattern`` (with %d: the quality) at a random quality each
    time: no two requests in flight share a rendition (which the service would make
    once for both), for imagestore and thumbor alike."""
    path = os.path.join(folder, f"wrk-{abs(hash(pattern))}.lua")
    Path(path).write_text(
        RANDOM_QUALITY_LUA.replace("%s", pattern.replace("%", "%%").replace("%%d", "%d"), 1)
    )
    return path


def rendition_path(name: str, width: int, fmt: str, quality: int | None = None) -> str:
    query = f"?width={width}&format={fmt}" + (f"&quality={quality}" if quality else "")
    return h.path_of("bench", "images", name) + query


def burst(svc: h.Service, name: str) -> dict:
    """32 concurrent cold 1024 px JPEGs, each with another quality (none shared)."""
    idle = h.tree_rss(svc.pid)
    codes: list[int] = []
    with h.rss_peak(svc.pid) as peak:

        def one(index: int) -> None:
            status, _, _ = h.request(
                svc.port, "GET", rendition_path(name, 1024, "jpeg", 60 + index), timeout=120
            )
            codes.append(status)

        took = h.at_once(32, one)
    return {
        "idleMiB": round(idle, 1),
        "peakMiB": round(peak[0], 1),
        "ok": codes.count(200),
        "busy503": codes.count(503),
        "seconds": round(took, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run [5]")
    parser.add_argument("--quick", action="store_true", help="2 s per run")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    if not os.path.exists(THUMBOR):
        raise SystemExit("thumbor is missing: `make bench` makes .venv-thumbor")
    rows, folder = [], tempfile.mkdtemp(prefix="imagestore-bench-renditions-")
    images = os.path.join(folder, "images")
    os.makedirs(images)
    sources = make_images(images)
    cold = service(os.path.join(folder, "cold"), 0, folder)
    warm = service(os.path.join(folder, "warm"), 1024**3, folder)
    thumbor = Thumbor(images, folder)
    try:
        for svc in (cold, warm):
            h.create_album(svc.port, "bench")
            for name in sources.values():
                svc.ok("PUT", h.path_of("bench", "images", name), Path(images, name).read_bytes())
        burst_result = burst(cold, "photo.jpg")
        thumbor_rss_idle = h.tree_rss(thumbor.pid)
        for label, name in sources.items():
            for what, (width, fmt) in RENDITIONS.items():
                path = rendition_path(name, width, fmt)
                made = warm.ok("GET", path)  # primes the cache
                time.sleep(0.5)  # the cache entry lands after the first answer
                plain_name = f"plain-{width}-{name}.{fmt}"
                warm.ok("PUT", h.path_of("bench", "images", plain_name), made)
                base = "http://127.0.0.1:{}{}"
                row = {"image": label, "rendition": what, "bytes": len(made)}
                row["cold"] = h.wrk(base.format(cold.port, path), seconds, connections=4)[0]
                with h.rss_peak(thumbor.pid) as thumbor_peak:
                    row["thumbor"] = h.wrk(
                        base.format(thumbor.port, Thumbor.path(name, width, fmt)),
                        seconds,
                        connections=4,
                    )[0]
                row["thumborPeakMiB"] = round(thumbor_peak[0], 1)
                row["libvips"] = bare_libvips(os.path.join(images, name), width, fmt, seconds)
                row["warm"] = h.wrk(base.format(warm.port, path), seconds)[0]
                row["plain"] = h.wrk(
                    base.format(warm.port, h.path_of("bench", "images", plain_name)), seconds
                )[0]
                rows.append(row)
                print(json.dumps(row))
    finally:
        thumbor.stop()
        cold.stop()
        warm.stop()
    print()
    print(
        "| image | rendition | cold req/s | thumbor req/s | libvips/s | cold/thumbor (>=1.5) "
        "| cold/libvips (>=0.7) | warm req/s | plain GET req/s | warm/plain (>=0.8) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['image']} | {r['rendition']} | {r['cold']:.1f} | {r['thumbor']:.1f} | "
            f"{r['libvips']:.1f} | {r['cold'] / r['thumbor']:.2f} | "
            f"{r['cold'] / r['libvips']:.2f} | "
            f"{r['warm']:.0f} | {r['plain']:.0f} | {r['warm'] / r['plain']:.2f} |"
        )
    b = burst_result
    print(
        f"\nburst of 32 cold 1024 px JPEGs of the 24 MP image: RSS {b['idleMiB']} MiB idle, "
        f"{b['peakMiB']} MiB peak (+{b['peakMiB'] - b['idleMiB']:.0f} MiB; bar +300); "
        f"{b['ok']} made, {b['busy503']} refused with 503 (workers + queue full), "
        f"{b['seconds']} s. "
        f"thumbor: {thumbor_rss_idle:.0f} MiB idle."
    )
    print(f"\n(images and logs in {folder})")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
