#!/usr/bin/env python3
"""Scale-out figures (`make bench-cluster`): imagestore on PostgreSQL + S3 (SeaweedFS)
with 1, 2 and 3 instances of dist/imagestore behind nginx (deploy/nginx.conf), against
the single-host service (SQLite + files) and against a stock S3 client (boto3) putting
and getting the same objects straight into the same SeaweedFS, all in one run.

Rows: one 64 MiB upload at a time (MB/s); 1 MiB uploads and GETs from 8 concurrent
keep-alive clients (per second). Bars: a 64 MiB upload >= 0.8x boto3's put, a 1 MiB
GET >= 0.8x boto3's get, and throughput that grows with instances until the 2 cores are
saturated (the chart, bench/results/cluster.png).
"""

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import harness as h
from harness import MIB, Client, path_of

sys.path.insert(0, os.path.join(h.ROOT, "tests"))
from cluster import EXECUTABLE, Instance, nginx_in_front  # noqa: E402
from engines import Postgres, SeaweedFS  # noqa: E402

RESULTS = os.path.join(h.ROOT, "bench", "results")
CLIENTS = 8


class Plan:
    def __init__(self, quick: bool) -> None:
        self.large = 2 if quick else 5  # 64 MiB uploads per setup
        self.small = 40 if quick else 200  # 1 MiB requests per client... in total
        self.rounds = 2 if quick else 3


def rate(count: int, work) -> float:
    """Requests per second of ``count`` requests spread over CLIENTS threads."""
    per = [count // CLIENTS + (i < count % CLIENTS) for i in range(CLIENTS)]
    seconds = h.at_once(CLIENTS, lambda i: work(i, per[i]))
    return count / seconds


class Target:
    """Something to put and get the bench's images into: imagestore at ``port``."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        h.create_album(port, "bench")
        self.counter = itertools.count()

    def put_large(self, path: Path) -> float:
        with Client(self.port) as client:
            status, _, seconds = client.upload(
                "PUT", path_of("bench", "images", f"l{next(self.counter)}.png"), path
            )
        assert status == 200, status
        return path.stat().st_size / seconds / 1e6

    def put_small(self, body: bytes, count: int) -> float:
        def work(i: int, n: int) -> None:
            with Client(self.port) as client:
                for _ in range(n):
                    data = bytearray(body)
                    data[64:72] = next(self.counter).to_bytes(8, "big")  # no dedup
                    status = client.upload(
                        "PUT", path_of("bench", "images", f"s{next(self.counter)}.png"), bytes(data)
                    )[0]
                    assert status == 200, status

        return rate(count, work)

    def get_small(self, body: bytes, count: int) -> float:
        names = [f"g{i}.png" for i in range(CLIENTS)]
        for name in names:
            if h.request(self.port, "HEAD", path_of("bench", "images", name))[0] != 200:
                assert h.request(self.port, "PUT", path_of("bench", "images", name), body)[0] == 200

        def work(i: int, n: int) -> None:
            with Client(self.port) as client:
                for _ in range(n):
                    status, received, _ = client.send("GET", path_of("bench", "images", names[i]))
                    assert (status, received) == (200, len(body)), status

        return rate(count, work)


class StockS3:
    """boto3 on the same SeaweedFS: upload_file's multipart defaults, get_object."""

    name = "boto3 straight to S3"

    def __init__(self, env: dict[str, str], bucket: str) -> None:
        import boto3
        from botocore.config import Config

        self.client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env.get("AWS_REGION", "us-east-1"),
            config=Config(max_pool_connections=CLIENTS * 2),
        )
        self.counter = itertools.count()
        self.bucket = bucket

    def put_large(self, path: Path) -> float:
        began = time.perf_counter()
        self.client.upload_file(str(path), self.bucket, f"stock/l{next(self.counter)}")
        return path.stat().st_size / (time.perf_counter() - began) / 1e6

    def put_small(self, body: bytes, count: int) -> float:
        def work(i: int, n: int) -> None:
            for _ in range(n):
                key = f"stock/s{next(self.counter)}"
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

        return rate(count, work)

    def get_small(self, body: bytes, count: int) -> float:
        for i in range(CLIENTS):
            self.client.put_object(Bucket=self.bucket, Key=f"stock/g{i}", Body=body)

        def work(i: int, n: int) -> None:
            for _ in range(n):
                got = self.client.get_object(Bucket=self.bucket, Key=f"stock/g{i}")["Body"].read()
                assert len(got) == len(body)

        return rate(count, work)


def measure(target, plan: Plan, files: dict[int, Path]) -> dict[str, list[float]]:
    body = files[1].read_bytes()
    runs: dict[str, list[float]] = {"64 MiB upload": [], "1 MiB uploads": [], "1 MiB GETs": []}
    target.put_large(files[64])  # warm-up: connections, pools, the bucket's first volume
    for _ in range(plan.rounds):
        runs["64 MiB upload"] += [target.put_large(files[64]) for _ in range(plan.large)]
        runs["1 MiB uploads"].append(target.put_small(body, plan.small))
        runs["1 MiB GETs"].append(target.get_small(body, plan.small * 2))
    return runs


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def chart(results: dict[str, dict[str, list[float]]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, row in zip(axes, ("64 MiB upload", "1 MiB uploads", "1 MiB GETs"), strict=True):
        counts = [n for n in (1, 2, 3) if f"{n} instances" in results]
        axis.plot(
            counts,
            [median(results[f"{n} instances"][row]) for n in counts],
            "o-",
            label="PostgreSQL + S3, behind nginx",
        )
        for name, style in (("single host", "--"), ("boto3 straight to S3", ":")):
            axis.axhline(median(results[name][row]), linestyle=style, color="grey", label=name)
        axis.set_title(row + (" (MB/s)" if row.startswith("64") else f" (/s, {CLIENTS} clients)"))
        axis.set_xticks([1, 2, 3])
        axis.set_xlabel("instances")
        axis.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs: a quick look")
    args = parser.parse_args()
    if not os.path.isfile(EXECUTABLE):
        print("dist/imagestore is missing: run `make` first", file=sys.stderr)
        return 2
    plan = Plan(args.quick)
    os.makedirs(RESULTS, exist_ok=True)
    results: dict[str, dict[str, list[float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="imagestore-cluster-bench-") as work,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(work)
        files = {mib: folder / f"{mib}MiB.png" for mib in (1, 64)}
        for mib, path in files.items():
            h.write_png(str(path), mib * MIB)
        postgres = Postgres().start()
        stack.callback(postgres.remove)
        seaweed = SeaweedFS().start()
        stack.callback(seaweed.remove)
        s3_env = seaweed.env()
        bucket = seaweed.new_bucket()
        broker = h.Broker(str(folder / "broker")).start()
        stack.callback(broker.stop)
        common = {
            "IMAGESTORE_MQTT_HOST": "127.0.0.1",
            "IMAGESTORE_MQTT_PORT": str(broker.port),
            "IMAGESTORE_LOG_LEVEL": "WARNING",
            "IMAGESTORE_MAX_UPLOADS_PER_CLIENT": "64",
            "IMAGESTORE_TRUSTED_PROXIES": "127.0.0.1",
        }

        stock = StockS3(s3_env, bucket)
        print("boto3 ...", flush=True)
        results[stock.name] = measure(stock, plan, files)

        single_dir = folder / "single"
        single_dir.mkdir()
        single = Instance(0, single_dir, common)
        stack.callback(single.kill)
        assert single.proc.wait_ready(single.port, check_log=False), single.proc.log()
        print("single host ...", flush=True)
        results["single host"] = measure(Target("single host", single.port), plan, files)
        single.kill()

        for count in (1, 2, 3):
            place = folder / f"cluster-{count}"
            place.mkdir()
            env = {
                **common,
                **s3_env,
                "IMAGESTORE_WORKERS": "1",
                "IMAGESTORE_CATALOG": postgres.new_database(),
                "IMAGESTORE_BLOBS": f"s3://{bucket}/cluster-{count}",
            }
            instances = [Instance(n, place, env) for n in range(1, count + 1)]
            for instance in instances:
                stack.callback(instance.kill)
                assert instance.proc.wait_ready(instance.port, check_log=False), instance.proc.log()
            nginx, port = nginx_in_front([i.port for i in instances], place)
            print(f"{count} instances ...", flush=True)
            results[f"{count} instances"] = measure(Target(f"{count}", port), plan, files)
            nginx.terminate()
            nginx.wait(10)
            for instance in instances:
                instance.kill()

    rows = ("64 MiB upload", "1 MiB uploads", "1 MiB GETs")
    units = {"64 MiB upload": "MB/s", "1 MiB uploads": "/s", "1 MiB GETs": "/s"}
    stock_of = {row: median(results[StockS3.name][row]) for row in rows}
    lines = [
        "| setup | " + " | ".join(f"{r} ({units[r]})" for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for name, runs in results.items():
        cells = []
        for row in rows:
            value = median(runs[row])
            spread = f"{min(runs[row]):.0f}–{max(runs[row]):.0f}"
            cells.append(f"{value:.0f} ({spread}), {value / stock_of[row]:.2f}x boto3")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best = max(median(results[f"{n} instances"]["64 MiB upload"]) for n in (1, 2, 3))
    get = max(median(results[f"{n} instances"]["1 MiB GETs"]) for n in (1, 2, 3))
    put_ratio, get_ratio = best / stock_of["64 MiB upload"], get / stock_of["1 MiB GETs"]
    bars = [
        f"64 MiB upload through imagestore >= 0.8x boto3's put: {put_ratio:.2f}x",
        f"1 MiB GET through imagestore >= 0.8x boto3's get: {get_ratio:.2f}x",
    ]
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {bar}" for bar in bars) + "\n"
    print(table)
    Path(RESULTS, "cluster.md").write_text(f"{h.commit_measured()}\n\n{table}")
    chart(results, os.path.join(RESULTS, "cluster.png"))
    print(f"chart: {os.path.join(RESULTS, 'cluster.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
