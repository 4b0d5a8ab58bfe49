"""kill -9 while many uploads finish together (the SQLite catalog commits them in
batches, the service's two workers taking turns): after the restart, every upload that
got its 200 is there with its bytes and exactly one event, each refused one left
nothing, the one in flight per client went wholly one way or the other, and the outbox
ids have no gap (a batch is committed whole or not at all)."""

import hashlib
import http.client
import json
import os
import random
import signal
import sqlite3
import threading
import time

from images import png
from process import Service, json_request, path_of, request
from test_crash import check_disk, observe

CLIENTS = 24
ROUNDS = 4
RACE = "race.png"  # every client also tries this one name in the shared album


class Uploader(threading.Thread):
    """PUTs distinct small images into its own album, one at a time, and now and then
    races the others for one name in a shared album."""

    def __init__(
        self, number: int, round_no: int, port: int, stop: threading.Event, seed: int
    ) -> None:
        super().__init__(name=f"uploader-{number}", daemon=True)
        self.album = f"c{number}"
        self.round_no = round_no
        self.port = port
        self.stop = stop
        self.rng = random.Random(seed)
        self.stored: dict[str, str] = {}  # image -> sha256, every upload answered 200
        self.pending: tuple[str, str, str] | None = None  # (album, image, sha256)
        self.won_race: str | None = None  # sha256 of this client's race.png, if it won
        self.error: str | None = None

    def run(self) -> None:
        counter = 0
        try:
            while not self.stop.is_set():
                counter += 1
                racing = self.rng.random() < 0.1
                album, image = (
                    ("shared", RACE) if racing else (self.album, f"{self.round_no}-{counter}.png")
                )
                data = png(padding=self.rng.randrange(1000, 60_000))
                data += (
                    f"{self.album}-{self.round_no}-{counter}".encode()
                )  # after IEND: distinct bytes
                sha = hashlib.sha256(data).hexdigest()
                self.pending = (album, image, sha)
                status, _, body = request(self.port, "PUT", path_of(album, "images", image), data)
                if status == 200 and racing:
                    self.won_race = sha
                elif status == 200:
                    self.stored[image] = sha
                elif not (racing and status == 409):
                    self.error = f"{album}/{image}: {status} {body[:200]!r}"
                    return
                self.pending = None
        except (OSError, http.client.HTTPException) as err:
            if not self.stop.is_set():
                self.error = f"{type(err).__name__}: {err}"


def outbox(db_path) -> list[tuple[int, dict]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return [(i, json.loads(p)) for i, p in conn.execute("SELECT id, payload FROM outbox")]
    finally:
        conn.close()


def test_kill_9_during_group_commits_keeps_every_acknowledged_upload(tmp_path):
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000_007))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    # Two workers (the default on 2 cores, set here for any machine): both commit.
    service = Service(
        tmp_path / "image-db",
        tmp_path,
        env={"IMAGESTORE_WORKERS": "2", "IMAGESTORE_MAX_UPLOADS_PER_CLIENT": "64"},
    )
    service.start()
    try:
        for album in ["shared", *(f"c{n}" for n in range(CLIENTS))]:
            assert json_request(service.port, "POST", path_of(), {"albumName": album})[0] == 200
        expected: dict[str, dict[str, str]] = {f"c{n}": {} for n in range(CLIENTS)}
        expected["shared"] = {}
        acknowledged = 0
        for round_no in range(ROUNDS):
            stop = threading.Event()
            uploaders = [
                Uploader(n, round_no, service.port, stop, rng.randrange(1 << 30))
                for n in range(CLIENTS)
            ]
            for uploader in uploaders:
                uploader.start()
            time.sleep(rng.uniform(0.5, 1.5))
            stop.set()
            os.kill(service.proc.popen.pid, signal.SIGKILL)
            service.kill()
            for uploader in uploaders:
                uploader.join(timeout=30)
                assert not uploader.is_alive()
            errors = [u.error for u in uploaders if u.error]
            assert not errors, f"round {round_no}: " + "; ".join(errors)
            winners = [u.won_race for u in uploaders if u.won_race]
            assert len(winners) <= 1 and not (winners and RACE in expected["shared"]), (
                "two uploads of one name both got their 200"
            )

            service.start()
            check_disk(service.data)
            state = observe(service.port)
            race = state["shared"].get(RACE)
            if winners or RACE in expected["shared"]:
                assert race is not None, "the race's winner is gone"
                assert race[0] == (expected["shared"].get(RACE) or winners[0]), "not the winner"
            for uploader in uploaders:
                expected[uploader.album].update(uploader.stored)
                acknowledged += len(uploader.stored) + (uploader.won_race is not None)
                mine = {image: sha for image, (sha, _) in state[uploader.album].items()}
                if uploader.pending is not None and uploader.pending[0] == uploader.album:
                    album, image, sha = uploader.pending
                    if mine.get(image) == sha:  # cut after its commit: it stays, whole
                        expected[album][image] = sha
                assert mine == expected[uploader.album], (
                    f"round {round_no}, {uploader.album} (seed {seed}): acknowledged uploads "
                    f"lost or unknown ones appeared: "
                    f"missing {sorted(set(expected[uploader.album]) - set(mine))}, "
                    f"unexpected {sorted(set(mine) - set(expected[uploader.album]))}"
                )
            if race is not None:
                expected["shared"][RACE] = race[0]
            assert set(state["shared"]) <= {RACE}

        # Every stored image has exactly one image.added event; the ids have no gap.
        events = outbox(service.data / "catalog.sqlite3")
        ids = [event_id for event_id, _ in events]
        assert ids == list(range(1, len(ids) + 1)), "a gap in the outbox ids"
        added = [(e["album"], e["image"]) for _, e in events if e["event"] == "image.added"]
        stored = [(album, image) for album, images in expected.items() for image in images]
        assert sorted(added) == sorted(stored)
        assert acknowledged >= 50 * ROUNDS, f"only {acknowledged} uploads acknowledged"
    finally:
        service.kill()
