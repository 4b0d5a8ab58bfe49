#!/usr/bin/env python3
"""Does imagestore give memory back after a burst of large transfers?

RSS summed over its process tree (bootloader, supervisor, workers): idle (after a small
warm-up and a release tick in every worker), the peak (sampled every 50 ms) during
--clients concurrent --mib MiB multipart uploads then as many downloads, and after the
next tick; the ticks' durations from its DEBUG log. Pass: after <= 1.25 x idle.

Usage: bench/memory.py [--source] [--clients 16] [--mib 64] [--interval 5]
(default: dist/imagestore, built by `make`; --source runs imagestore.py instead)
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import harness as h

TICK = re.compile(r"memory release: RSS (\d+) -> (\d+) MiB in ([\d.]+) ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="store_true", help="run imagestore.py, not dist/")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--interval", type=float, default=5.0, help="release interval, seconds")
    args = parser.parse_args()
    command = [os.path.join(h.ROOT, "dist", "imagestore")]
    if args.source:
        command = [sys.executable, os.path.join(h.ROOT, "imagestore.py")]
    elif not os.path.exists(command[0]):
        sys.exit(f"{command[0]} is missing: run `make` first (or pass --source)")
    with tempfile.TemporaryDirectory() as folder:
        image, small = Path(folder, "big.png"), Path(folder, "small.png")
        h.write_png(str(image), args.mib * h.MIB)
        h.write_png(str(small), h.MIB)
        broker = h.Broker(os.path.join(folder, "broker")).start()
        env = h.clean_env(
            IMAGESTORE_MQTT_PORT=str(broker.port),
            IMAGESTORE_MEMORY_RELEASE_SECONDS=str(args.interval),
            IMAGESTORE_LOG_LEVEL="DEBUG",  # every release tick is logged
            IMAGESTORE_MAX_UPLOADS_PER_CLIENT=str(max(8, args.clients)),
        )
        service = h.Service(command, os.path.join(folder, "db"), env, folder)
        try:
            h.create_album(service.port, "bench")
            path = h.path_of("bench", "images", "warm-up.png")
            for _ in range(4):
                with h.Client(service.port) as client:
                    client.upload("multipart POST", path, small)
                    client.send("GET", path)
                service.ok("DELETE", path)
            time.sleep(args.interval * 1.5)  # a tick in every worker
            idle, processes = h.tree_rss(service.pid), len(h.tree(service.pid))

            def each(method: str) -> float:
                def one(i: int) -> None:
                    name = h.path_of("bench", "images", f"big-{i}.png")
                    with h.Client(service.port) as client:
                        up = method == "multipart POST"
                        got = client.upload(method, name, image) if up else client.send("GET", name)
                    assert got[0] == 200, got

                return args.clients * args.mib / h.at_once(args.clients, one)

            with h.rss_peak(service.pid) as peak:
                up, down = each("multipart POST"), each("GET")
            time.sleep(args.interval * 1.5)
            after = h.tree_rss(service.pid)
            ticks = TICK.findall(service.proc.log())
        finally:
            service.stop()
            broker.stop()
    print(f"imagestore: {os.path.relpath(command[-1], h.ROOT)}, {processes} processes")
    print(f"burst: {args.clients} x {args.mib} MiB up at {up:.0f} MiB/s, down at {down:.0f} MiB/s")
    print(f"RSS idle {idle:.0f} MiB, peak {peak[0]:.0f} MiB, after {after:.0f} MiB")
    durations = sorted(float(t[2]) for t in ticks)
    print(f"release ticks: {len(ticks)}, {durations[0]:.1f} to {durations[-1]:.1f} ms each")
    verdict = "PASS" if after <= 1.25 * idle else "FAIL"
    print(f"after / idle = {after / idle:.2f} ({verdict}: must be <= 1.25)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
