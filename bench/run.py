#!/usr/bin/env python3
"""imagestore's benchmark (`make bench`), each figure as a ratio to a baseline measured
in the same run; README's "Performance" says what each row measures. The sets:

  uploads     sequential 1 MiB uploads from one keep-alive client vs nginx PUT, and
              the service's CPU per upload (vs the --compare commit's)
  concurrent  32 clients, 1 MiB uploads each, vs nginx PUT
  large       64 and 512 MiB uploads vs dd conv=fdatasync
  downloads   a 512 MiB GET vs nginx (sendfile)
  memory      RSS of the process tree: idle, peaks during 512 MiB transfers, after a tick
  small       wrk: a 64 KiB image and GET /albums vs nginx
  cli         `imagestore push` of 500 x 1 MiB files with --jobs 8 vs curl --parallel
              PUTs of the same files, 8 at once; `pull` of them vs curl --parallel GETs
  pages       wrk: the first and the 100th page (limit=100, detail=true) of a
              200,000-image album, list cache off (the keyset read itself)
  archive     GET an album's ZIP (8 x 64 MiB) vs zip -0 of the same files
  startup     dist/imagestore's cold start, when it is built

--compare REF checks REF out in a temporary git worktree and runs its service (from
source, with this venv) next to this one's: the uploads and concurrent sets measure both.
"""

import argparse
import collections
import contextlib
import datetime
import http.client
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness as h
from harness import MIB, Client, path_of, summary, tree_cpu, tree_rss

SETS = (
    "memory",
    "uploads",
    "concurrent",
    "large",
    "downloads",
    "small",
    "pages",
    "archive",
    "cli",
    "startup",
)  # in order
PAGE_ALBUM_IMAGES = 200_000
CLI_JOBS = 8
KINDS = ("PUT", "multipart POST")
EXE = os.path.join(h.ROOT, "dist", "imagestore")
RESULTS = os.path.join(h.ROOT, "bench", "results")
RELEASE_SECONDS = 2.0
CLIENTS = 32
SETTINGS = {  # the bench's own; the caller's IMAGESTORE_* and --env pass through
    "IMAGESTORE_MQTT": "on",
    "IMAGESTORE_LOG_LEVEL": "WARNING",
    "IMAGESTORE_MEMORY_RELEASE_SECONDS": str(RELEASE_SECONDS),
    "IMAGESTORE_MAX_UPLOADS_PER_CLIENT": "64",
    "IMAGESTORE_MAX_CONCURRENT_UPLOADS": "256",
}


class Plan:
    def __init__(self, quick: bool) -> None:
        self.rounds = 3 if quick else 7  # of the uploads, concurrent and downloads sets
        self.sequential = 30 if quick else 200  # uploads in one sequential batch
        self.per_client = 2 if quick else 8  # uploads of each of the 32 clients, per round
        self.large = {64: 2, 512: 1} if quick else {64: 7, 512: 5}
        self.wrk_runs, self.wrk_seconds = (2, 2) if quick else (5, 5)
        self.startups = 3 if quick else 10
        self.cli_files, self.cli_rounds = (200, 2) if quick else (500, 5)

    def __str__(self) -> str:
        return (
            f"Rounds: {self.rounds} (batches of {self.sequential} sequential uploads, of "
            f"{CLIENTS} x {self.per_client} concurrent ones, downloads); {self.large[64]} x 64 "
            f"MiB, {self.large[512]} x 512 MiB; wrk {self.wrk_runs} x {self.wrk_seconds} s; "
            f"push/pull {self.cli_rounds} x {self.cli_files} files."
        )


def number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def figure(runs: list[float], unit: str) -> str:
    s = summary(runs)
    spread = f" ({number(s['min'])}–{number(s['max'])})" if len(runs) > 1 else ""
    return f"{number(s['median'])} {unit}{spread}"


class Table:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, what, unit, runs, base="", base_runs=None, bar=None, note="", met=None):
        """A row. ``bar`` (">=" or "<=", x) is a bar on the ratio to
        the baseline's runs; any other bar comes as its text, and ``met``."""
        row = {"what": what, "figure": figure(runs, unit) + note, "runs": runs, "met": met}
        row.update(baseline="", ratio="", bar=bar if isinstance(bar, str) else "")
        if base_runs:
            ratio = summary(runs)["median"] / summary(base_runs)["median"]
            pairs = [a / b for a, b in zip(runs, base_runs, strict=True)]
            row.update(baseline=f"{base}: {figure(base_runs, unit)}", base_runs=base_runs)
            row["ratio"] = f"**{ratio:.2f}x** ({min(pairs):.2f}–{max(pairs):.2f})"
            if isinstance(bar, tuple):
                row["bar"] = f"{bar[0]} {bar[1]:g}x"
                row["met"] = ratio >= bar[1] if bar[0] == ">=" else ratio <= bar[1]
        self.rows.append(row)
        print(f"  {what}: {row['figure']}  {row['baseline']}  {row['ratio']}", flush=True)

    def markdown(self) -> str:
        lines = ["| measure | imagestore | baseline | ratio | bar | |", "|---|---|---|---|---|---|"]
        for row in self.rows:
            met = {True: "✅ met", False: "❌ NOT met", None: ""}[row["met"]]
            cells = [row["what"], row["figure"], row["baseline"], row["ratio"], row["bar"], met]
            lines.append("| " + " | ".join(cells) + " |")
        bars = [row["met"] for row in self.rows if row["met"] is not None]
        return "\n".join(lines) + f"\n\nBars met: {sum(bars)} of {len(bars)}."


class Bench:
    def __init__(self, args, work: str, stack: contextlib.ExitStack) -> None:
        self.args, self.plan, self.work, self.table = args, Plan(args.quick), work, Table()
        self.www, self.data = os.path.join(work, "www"), os.path.join(work, "data")
        os.makedirs(self.www)
        self.files = {mib: Path(self.www, f"{mib}MiB.png") for mib in (1, 64, 512)}
        for mib, path in self.files.items():
            h.write_png(str(path), mib * MIB)
        h.write_png(os.path.join(self.www, "64k.png"), 64 * 1024)
        self.one_mib, self.counter = self.files[1].read_bytes(), itertools.count()
        self.broker = h.Broker(os.path.join(work, "broker")).start()
        stack.callback(self.broker.stop)
        self.nginx = h.Nginx(self.www, os.path.join(work, "nginx"))
        stack.callback(self.nginx.stop)
        source = [sys.executable, os.path.join(h.ROOT, "imagestore.py")]
        self.service = self.start(stack, self.data, source, h.ROOT)
        # The upload targets: (server, kind of upload, status of a success).
        self.targets = {kind: (self.service, kind, 200) for kind in KINDS}
        self.targets["nginx PUT"] = (self.nginx, "PUT", 201)
        self.ref = None
        if args.compare and {"uploads", "concurrent"} & set(args.only):
            self.ref, tree = stack.enter_context(h.worktree(args.compare))
            print(f"--compare {args.compare}: {self.ref}, checked out in {tree}", flush=True)
            command = [sys.executable, os.path.join(tree, "imagestore.py")]
            ref = self.start(stack, os.path.join(work, "ref-data"), command, tree)
            self.targets.update({f"{kind} at {self.ref}": (ref, kind, 200) for kind in KINDS})

    def start(self, stack, data: str, command: list[str], cwd: str) -> h.Service:
        caller = {k: v for k, v in os.environ.items() if k.startswith("IMAGESTORE_")}
        env = h.clean_env(**{**caller, **SETTINGS, **self.args.env})
        env.update(IMAGESTORE_MQTT_HOST="127.0.0.1", IMAGESTORE_MQTT_PORT=str(self.broker.port))
        service = h.Service(command, data, env, cwd)
        stack.callback(self.check_log, service)
        stack.callback(service.stop)
        for album in [f"album-{i:02d}" for i in range(20)] + ["files"]:
            h.create_album(service.port, album)
        for kind in KINDS:  # warm-up: one of each kind of request
            path = path_of("files", "images", "warm-up.png")
            with Client(service.port) as client:
                codes = client.upload(kind, path, self.one_mib)[0], client.send("GET", path)[0]
            if codes != (200, 200):
                raise RuntimeError(f"warm-up {kind}: HTTP {codes}")
            service.ok("DELETE", path)
        return service

    def check_log(self, service: h.Service) -> None:
        problems = [x for x in service.proc.log().splitlines() if "Traceback" in x or "ERROR" in x]
        if problems:
            print(f"warning: the log of {service.command[-1]} says:\n" + "\n".join(problems[:10]))

    def rounds(self, count: int, keys, measure) -> dict[str, list]:
        """measure(key, round) of each key, ``count`` rounds, nobody always first."""
        keys, runs = list(keys), {key: [] for key in keys}
        for r in range(count):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                runs[key].append(measure(key, r))
        return runs

    @contextlib.contextmanager
    def batch(self, key: str, label: str):
        """A fresh place for a batch of uploads to ``key``: (server, kind, status of a
        success, prefix of the paths); emptied afterwards."""
        server, kind, ok = self.targets[key]
        label += f"-{KINDS.index(kind)}"
        if server is self.nginx:
            yield server, kind, ok, f"/put/{label}"
            shutil.rmtree(os.path.join(self.www, "put", label), ignore_errors=True)
        else:
            h.create_album(server.port, label)
            yield server, kind, ok, path_of(label, "images")
            server.ok("DELETE", path_of(label))
        time.sleep(0.2)  # events published, files removed: not in the next batch

    def body(self) -> bytearray:
        """The 1 MiB image but for 8 bytes of its padding: no two uploads alike."""
        body = bytearray(self.one_mib)
        body[64:72] = next(self.counter).to_bytes(8, "big")
        return body

    def upload(self, kind: str, mib: int, name: str, keep: bool = False) -> float:
        """MB/s of one upload of the ``mib`` MiB image, from its first byte to the answer."""
        path = path_of("files", "images", name)
        with Client(self.service.port) as client:
            status, _, seconds = client.upload(kind, path, self.files[mib])
        if status != 200:
            raise RuntimeError(f"{kind} of {mib} MiB: HTTP {status}")
        if not keep:
            self.service.ok("DELETE", path)
        return mib * MIB / seconds / 1e6

    def download(self, port: int, path: str) -> float:
        """MB/s of one download of the 512 MiB image."""
        with Client(port) as client:
            status, received, seconds = client.send("GET", path)
        if status != 200 or received != 512 * MIB:
            raise RuntimeError(f"GET {path}: HTTP {status}, {received} bytes")
        return received / seconds / 1e6

    def big(self) -> str:
        """The path of the 512 MiB image in the service (uploaded the first time)."""
        path = path_of("files", "images", "512MiB.png")
        if h.request(self.service.port, "HEAD", path)[0] != 200:
            self.upload("PUT", 512, "512MiB.png", keep=True)
        return path

    # --- the sets ---------------------------------------------------------------------

    def uploads(self) -> None:
        def batch(key: str, r: int) -> tuple[float, float]:
            batch = self.batch(key, f"seq-{r}")
            with batch as (server, kind, ok, prefix), Client(server.port) as client:
                count = self.plan.sequential
                began_cpu, began = tree_cpu(server.pid), time.perf_counter()
                for i in range(count):
                    status = client.upload(kind, f"{prefix}/{i}.png", self.body())[0]
                    if status != ok:
                        raise RuntimeError(f"{key}: HTTP {status}")
                seconds, cpu = time.perf_counter() - began, tree_cpu(server.pid) - began_cpu
                return count / seconds, cpu * 1000 / count

        runs = self.rounds(self.plan.rounds, self.targets, batch)
        rate = {key: [x[0] for x in values] for key, values in runs.items()}
        cpu = {key: [x[1] for x in values] for key, values in runs.items()}
        nginx = rate.pop("nginx PUT")
        for key, values in rate.items():
            bar = (">=", 0.5) if key in KINDS else None
            self.table.add(
                f"1 MiB uploads, one client, {key}", "uploads/s", values, "nginx PUT", nginx, bar
            )
        for kind in KINDS:
            what = f"server CPU per 1 MiB upload, {kind}"
            base = cpu.get(f"{kind} at {self.ref}")
            self.table.add(what, "ms", cpu[kind], self.ref, base, ("<=", 0.6))
        self.table.add("nginx's CPU per 1 MiB PUT", "ms", cpu["nginx PUT"])

    def concurrent(self) -> None:
        failed: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

        def burst(key: str, r: int) -> float:
            with self.batch(key, f"burst-{r}") as (server, kind, ok, prefix):
                clients, codes = [Client(server.port) for _ in range(CLIENTS)], []

                def work(c: int) -> None:
                    for j in range(self.plan.per_client):
                        try:
                            path = f"{prefix}/{c}-{j}.png"
                            codes.append(clients[c].upload(kind, path, self.body())[0])
                        except (OSError, http.client.HTTPException) as err:
                            codes.append(type(err).__name__)
                            return

                seconds = h.at_once(CLIENTS, work)
                for client in clients:
                    client.conn.close()
                failed[key].update(code for code in codes if code != ok)
                return codes.count(ok) / seconds

        refs = [f"{kind} at {self.ref}" for kind in KINDS] if self.ref else []
        runs = self.rounds(self.plan.rounds, [*KINDS, *refs, "nginx PUT"], burst)
        for kind in [*KINDS, *refs]:
            note = f"; FAILED: {dict(failed[kind])}" if failed[kind] else ""
            what, nginx = f"{CLIENTS} clients, 1 MiB uploads, {kind}", runs["nginx PUT"]
            bar = (">=", 0.7) if kind in KINDS else None
            self.table.add(what, "uploads/s", runs[kind], "nginx PUT", nginx, bar, note)
            if failed[kind]:
                self.table.rows[-1]["met"] = False

    def large(self) -> None:
        for mib in (64, 512):

            def one(key: str, r: int, mib: int = mib) -> float:
                if key == "dd":
                    return mib * MIB / h.dd(os.path.join(self.data, "dd.out"), mib) / 1e6
                return self.upload(key, mib, f"{r}.png")

            runs = self.rounds(self.plan.large[mib], ["dd", *KINDS], one)
            for kind in KINDS:
                what, dd = f"upload {mib} MiB, {kind}", runs["dd"]
                self.table.add(what, "MB/s", runs[kind], "dd conv=fdatasync", dd, (">=", 0.8))

    def downloads(self) -> None:
        paths = {
            "imagestore": (self.service.port, self.big()),
            "nginx": (self.nginx.port, "/512MiB.png"),
        }
        runs = self.rounds(self.plan.rounds, paths, lambda who, r: self.download(*paths[who]))
        nginx = runs["nginx"]
        self.table.add(
            "download 512 MiB", "MB/s", runs["imagestore"], "nginx, sendfile", nginx, (">=", 0.8)
        )

    def memory(self) -> None:
        pid, settle = self.service.pid, 2 * RELEASE_SECONDS + 0.5  # a tick in every worker
        time.sleep(settle)
        idle, uploads = tree_rss(pid), []
        for kind in KINDS:
            with h.rss_peak(pid) as peak:
                self.upload(kind, 512, "rss.png")
            uploads.append(peak[0])
        path = self.big()
        with h.rss_peak(pid) as peak:
            self.download(self.service.port, path)
        time.sleep(settle)
        self.table.add("RSS, idle (after a warm-up and a release tick)", "MiB", [idle])
        bar, met = f"<= idle + 16 MiB ({idle + 16:.0f})", max(uploads) <= idle + 16
        self.table.add(
            "RSS, peak during a 512 MiB upload (PUT, multipart)", "MiB", uploads, bar=bar, met=met
        )
        self.table.add("RSS, peak during a 512 MiB download", "MiB", [peak[0]])
        self.table.add("RSS, after the memory-release tick", "MiB", [tree_rss(pid)])

    def small(self) -> None:
        image, albums = path_of("files", "images", "64k.png"), path_of()
        self.service.ok("PUT", image, Path(self.www, "64k.png").read_bytes())
        answer = self.service.ok("GET", albums)
        Path(self.www, "albums.json").write_bytes(answer)  # nginx's copy
        listed = f"GET /albums ({len(json.loads(answer)['albumList'])} albums, {len(answer)} B)"
        for what, path, static, base in (
            ("GET a 64 KiB image", image, "64k.png", "nginx, sendfile"),
            (listed, albums, "albums.json", "nginx, static JSON"),
        ):
            urls = [f"http://127.0.0.1:{self.service.port}{path}"]
            urls.append(f"http://127.0.0.1:{self.nginx.port}/{static}")
            for url in urls:
                h.wrk(url, 1)  # warm-up
            runs = self.rounds(
                self.plan.wrk_runs, urls, lambda url, r: h.wrk(url, self.plan.wrk_seconds)
            )
            (rps, p99), (nginx, nginx_p99) = (list(zip(*runs[url], strict=True)) for url in urls)
            note = f", p99 {summary(p99)['median']:.2f} ms"
            base = f"{base}, p99 {summary(nginx_p99)['median']:.2f} ms"
            self.table.add(what, "req/s", list(rps), base, list(nginx), (">=", 0.2), note)

    def cli(self) -> None:
        """Wall time of each command, process start included (as a user sees it)."""
        count, imagestore = self.plan.cli_files, os.path.join(h.ROOT, "imagestore.py")
        folder = Path(self.work, "push")
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:04}.png").write_bytes(self.body())
        total = sum(f.stat().st_size for f in folder.iterdir())
        base = f"http://127.0.0.1:{self.service.port}"
        env = h.clean_env(IMAGESTORE_URL=base)

        def curl(lines: list[str], what: str) -> None:
            config = Path(self.work, "curl.cfg")
            head = [
                "parallel",
                f"parallel-max = {CLI_JOBS}",
                "silent",
                'write-out = "%{http_code}\\n"',
            ]
            config.write_text("\n".join(head + lines) + "\n")
            done = subprocess.run(["curl", "-K", str(config)], capture_output=True, text=True)
            codes = done.stdout.split()
            if done.returncode != 0 or codes != ["200"] * count:
                raise RuntimeError(f"curl {what}: {done.returncode}, {sorted(set(codes))}")

        def command(*args: str) -> None:
            done = subprocess.run([sys.executable, imagestore, *args], capture_output=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(
                    f"imagestore {args[0]}: {done.returncode} {done.stderr[-500:]!r}"
                )

        def push(key: str, r: int) -> float:
            album = f"cli-{r}-{key.split()[0]}"
            began = time.perf_counter()
            if key.startswith("curl"):
                h.create_album(self.service.port, album)
                curl(
                    [
                        f'upload-file = "{f}"\nurl = "{base}{path_of(album, "images", f.name)}"\n'
                        'output = "/dev/null"'
                        for f in sorted(folder.iterdir())
                    ],
                    "PUT",
                )
            else:
                command("push", str(folder), "--album", album, "--jobs", str(CLI_JOBS))
            seconds = time.perf_counter() - began
            self.service.ok("DELETE", path_of(album))
            time.sleep(0.2)
            return total / seconds / 1e6

        def pull(key: str, r: int) -> float:
            into = Path(self.work, f"pull-{r}-{key.split()[0]}")
            began = time.perf_counter()
            if key.startswith("curl"):
                into.mkdir()
                curl(
                    [
                        f'url = "{base}{path_of("cli-pull", "images", f.name)}"\n'
                        f'output = "{into / f.name}"'
                        for f in sorted(folder.iterdir())
                    ],
                    "GET",
                )
            else:
                command("pull", "cli-pull", str(into), "--jobs", str(CLI_JOBS))
            seconds = time.perf_counter() - began
            shutil.rmtree(into)
            return total / seconds / 1e6

        keys = [f"imagestore push --jobs {CLI_JOBS}", f"curl --parallel-max {CLI_JOBS}"]
        runs = self.rounds(self.plan.cli_rounds, keys, push)
        what = f"push of {count} x 1 MiB files, {CLI_JOBS} at once"
        self.table.add(what, "MB/s", runs[keys[0]], keys[1] + " PUT", runs[keys[1]], (">=", 0.9))
        command("push", str(folder), "--album", "cli-pull", "--jobs", str(CLI_JOBS))
        keys = [f"imagestore pull --jobs {CLI_JOBS}", f"curl --parallel-max {CLI_JOBS}"]
        runs = self.rounds(self.plan.cli_rounds, keys, pull)
        what = f"pull of {count} x 1 MiB files, {CLI_JOBS} at once (pull: sha256 checked, fsync)"
        self.table.add(what, "MB/s", runs[keys[0]], keys[1] + " GET", runs[keys[1]])
        self.service.ok("DELETE", path_of("cli-pull"))
        shutil.rmtree(folder)

    def pages(self) -> None:
        """A catalog of 200,000 images (written straight into SQLite: the bench
        measures reads), served with the list cache off."""
        data = os.path.join(self.work, "pages-data")
        seed_album(data, "big", PAGE_ALBUM_IMAGES)
        command = [sys.executable, os.path.join(h.ROOT, "imagestore.py")]
        env = h.clean_env(**{**SETTINGS, "IMAGESTORE_MQTT": "off", **self.args.env})
        env["IMAGESTORE_LIST_CACHE_BYTES"] = "0"
        service = h.Service(command, data, env, h.ROOT)
        try:
            base = (
                f"http://127.0.0.1:{service.port}{path_of('big', 'images')}?limit=100&detail=true"
            )
            urls = {"first page": base, "100th page": base + f"&after={image_name(9899)}"}
            for url in urls.values():
                h.wrk(url, 1)  # warm-up
            runs = self.rounds(
                self.plan.wrk_runs, urls, lambda key, r: h.wrk(urls[key], self.plan.wrk_seconds)
            )
        finally:
            service.stop()
        (first, first_p99), (deep, deep_p99) = (
            list(zip(*runs[key], strict=True)) for key in ("first page", "100th page")
        )
        what = "GET images?limit=100&detail=true of 200,000"
        note = f", p99 {summary(first_p99)['median']:.2f} ms"
        self.table.add(f"{what}, first page", "req/s", list(first), note=note)
        note = f", p99 {summary(deep_p99)['median']:.2f} ms"
        self.table.add(
            f"{what}, 100th page",
            "req/s",
            list(deep),
            "the first page",
            list(first),
            (">=", 1 / 1.2),
            note,
        )

    def archive(self) -> None:
        files = [Path(self.www, f"archive-{index}.png") for index in range(8)]
        for index, path in enumerate(files):
            body = bytearray(self.files[64].read_bytes())
            body[64:72] = index.to_bytes(8, "big")
            path.write_bytes(body)
        h.create_album(self.service.port, "archive")
        for path in files:
            self.service.ok("PUT", path_of("archive", "images", path.name), path.read_bytes())
        total = sum(path.stat().st_size for path in files)
        out = os.path.join(self.work, "zip0.zip")

        def one(key: str, r: int) -> float:
            if key == "zip -0":
                began = time.perf_counter()
                subprocess.run(["zip", "-0", "-q", "-j", out, *map(str, files)], check=True)
                seconds = time.perf_counter() - began
                os.remove(out)
                return total / seconds / 1e6
            with Client(self.service.port) as client:
                status, received, seconds = client.send("GET", path_of("archive") + "/archive")
            if status != 200 or received < total:
                raise RuntimeError(f"archive: HTTP {status}, {received} bytes")
            return total / seconds / 1e6

        runs = self.rounds(self.plan.rounds, ["zip -0", "imagestore"], one)
        self.table.add(
            "album archive, 8 x 64 MiB (ZIP, stored)",
            "MB/s",
            runs["imagestore"],
            "zip -0 of the files",
            runs["zip -0"],
            (">=", 0.8),
        )
        self.service.ok("DELETE", path_of("archive"))
        for path in files:
            path.unlink()

    def startup(self) -> None:
        if not os.path.isfile(EXE):
            print("  not measured: dist/imagestore is not built (`make` builds it)")
            return
        import startup

        runs = [startup.one_start([EXE])[0] * 1000 for _ in range(self.plan.startups)]
        self.table.add("cold start of dist/imagestore to its first 200", "ms", runs)


def image_name(index: int) -> str:
    return f"img-{index:06d}.jpg"


def seed_album(data: str, album: str, count: int) -> None:
    """An album of ``count`` images in a new SQLite catalog, written in one
    transaction: the schema from the catalog adapter, the rows straight in (one blob
    shared by all, as identical bytes would be; its file need not exist to list)."""
    import asyncio

    sys.path.insert(0, h.ROOT)
    from store.sqlite_catalog import SqliteCatalog

    path = os.path.join(data, "catalog.sqlite3")
    catalog = SqliteCatalog(path)
    asyncio.run(catalog.create_album(album, "{}"))
    catalog.close()
    sha, now = "ab" * 32, time.time()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        album_id = db.execute("SELECT id FROM albums WHERE name = ?", (album,)).fetchone()[0]
        db.execute("INSERT INTO blobs VALUES ('shared', ?, 4096, ?)", (sha, count))
        db.executemany(
            "INSERT INTO images (album_id, name, size, sha256, content_type, created_at, "
            "blob_key, width, height) VALUES (?, ?, 4096, ?, 'image/jpeg', ?, 'shared', 640, 480)",
            ((album_id, image_name(index), sha, now) for index in range(count)),
        )
        db.execute(
            "UPDATE albums SET image_count = ?, bytes = ? WHERE id = ?",
            (count, 4096 * count, album_id),
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SETS), help="the sets to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds: a smoke run")
    parser.add_argument("--compare", metavar="REF", help="also measure this git ref's service")
    parser.add_argument("--profile", action="store_true", help="py-spy records each set")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="for the data folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is not met")
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := set(args.only) - set(SETS):
        parser.error(f"unknown sets: {', '.join(sorted(unknown))} (sets: {', '.join(SETS)})")
    args.env = dict(item.partition("=")[::2] for item in args.env)
    return args


def main() -> int:
    args = parse_args()
    for tool in ("nginx", "wrk", "mosquitto", "dd"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing; `make bench` installs it")
    if shutil.disk_usage(args.workdir).free < 4 * 1024**3:
        sys.exit(f"bench: less than 4 GiB free in {args.workdir}")
    started, began, load = datetime.datetime.now().astimezone(), time.monotonic(), os.getloadavg()
    os.makedirs(RESULTS, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="imagestore-bench-", dir=args.workdir) as work,
        contextlib.ExitStack() as stack,
    ):
        bench = Bench(args, work, stack)
        for name in (name for name in SETS if name in args.only):
            print(f"{name}:", flush=True)
            profile = os.path.join(RESULTS, f"profile-{name}.txt")
            spy = args.profile and name != "startup"
            with h.profile(bench.service.pid, profile) if spy else contextlib.nullcontext():
                getattr(bench, name)()
    text = (
        f"Run {started:%Y-%m-%d %H:%M %Z} at commit {h.commit_measured()}"
        + (f" (--compare {bench.ref})" if bench.ref else "")
        + f": `{' '.join(['bench/run.py', *sys.argv[1:]])}`, {time.monotonic() - began:.0f} s"
        + (", under py-spy" if args.profile else "")
        + f"; {os.cpu_count()} cores, load average {load[0]:.2f} at the start,"
        f" {os.getloadavg()[0]:.2f} at the end. {bench.plan}\n\n{bench.table.markdown()}\n"
    )
    print("\n" + text)
    stamp = os.path.join(RESULTS, f"{started:%Y%m%d-%H%M%S}")
    Path(stamp + ".md").write_text(text)
    Path(stamp + ".json").write_text(json.dumps(bench.table.rows, indent=1))
    print(f"written: {os.path.relpath(stamp, h.ROOT)}.md and .json")
    return 1 if args.strict and any(row["met"] is False for row in bench.table.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
