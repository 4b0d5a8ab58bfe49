"""`imagestore push`, `pull` and `ls` against a live service (a real subprocess):
parallel, resumable after a kill, conflicts per --on-conflict, 503s and connection
failures retried, 4xx reported per file, keys never printed, progress in both modes."""

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import blob_files
from images import GIF, JPEG, NOT_IMAGES, png
from process import SERVICE, clean_env, free_port, path_of, request, serve

from cli.local import partial_path


def cli(url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180.0):
    """Run a client command from source to its end: CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, SERVICE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(IMAGESTORE_URL=url, **(env or {})),
        timeout=timeout,
    )


def start_cli(url: str, *args: str, log, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, SERVICE, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(IMAGESTORE_URL=url, **(env or {})),
        )


def service(run, tmp_path, **settings: str) -> tuple[int, str]:
    data = str(tmp_path / "image-db")
    env = {"IMAGESTORE_MQTT": "off", **settings}
    _, port = serve(run, lambda port: (("--port", str(port), "--data", data), env))
    return port, f"http://127.0.0.1:{port}"


def names_in(port: int, album: str) -> list[str]:
    status, _, body = request(port, "GET", path_of(album, "images"))
    assert status == 200, body
    return json.loads(body)["imageList"]


def stored(port: int, album: str) -> dict[str, bytes]:
    found = {}
    for name in names_in(port, album):
        status, _, body = request(port, "GET", path_of(album, "images", name))
        assert status == 200
        found[name] = body
    return found


def summary(result) -> dict[str, int]:
    """The counts of the summary line: {"sent": 3, "already there": 2, ...}."""
    line = result.stdout.strip().splitlines()[-1]
    counts = {what: int(n) for n, what in re.findall(r"(\d+) ([a-z][a-z ]*?)(?=[,;]|$)", line)}
    counts["retries"] = int(re.search(r"(\d+) retries", line).group(1))
    return counts


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def folder_tree(root) -> dict[str, bytes]:
    """200 images in a tree (4 large, 10 copies under other names, 10 copies of a
    file of the same name in another subfolder), 6 files that are not images; the
    album's expected contents {name: bytes}."""
    expected: dict[str, bytes] = {}
    for n in range(176):
        folder = ("", "2026", "2026/summer", "misc")[n % 4]
        data = png(width=n % 40 + 1, height=n % 7 + 1, padding=1000 + 137 * n)
        write(root / folder / f"img{n:03}.png", data)
        expected[f"img{n:03}.png"] = data
    for n in range(4):
        data = png(width=n + 1, padding=6_000_000 + n)
        write(root / "2026" / f"large{n}.png", data)
        expected[f"large{n}.png"] = data
    for n in range(10):  # the same bytes under another name: stored as a name each
        data = expected[f"img{n:03}.png"]
        write(root / "misc" / f"copy{n}.png", data)
        expected[f"copy{n}.png"] = data
    for n in range(10):  # the same name, the same bytes, in another folder: stored once
        folder = ("", "2026", "2026/summer", "misc")[n % 4]
        write(
            root / "again" / folder.replace("/", "-") / f"img{n:03}.png", expected[f"img{n:03}.png"]
        )
    for kind, data in NOT_IMAGES.items():
        write(root / "misc" / f"not-an-image.{kind}", data)
    write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    return expected


def test_push_a_tree_killed_half_way_then_resumed_stores_everything_once(run, tmp_path):
    port, url = service(run, tmp_path)
    root = tmp_path / "holidays"
    expected = folder_tree(root)
    args = ("push", str(root), "--recursive", "--jobs", "8", "--album", "trip")
    pushing = start_cli(url, *args, log=tmp_path / "first.out")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pushing.poll() is None:
        status, _, _ = request(port, "GET", path_of("trip", "images"))
        if status == 200 and len(names_in(port, "trip")) >= 40:
            break
        time.sleep(0.01)
    pushing.send_signal(signal.SIGKILL)
    pushing.wait(10)
    before = len(names_in(port, "trip"))
    assert 0 < before < len(expected), "the kill landed in the middle of the push"

    result = cli(url, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = summary(result)
    # An upload whose bytes were all sent may still be committed after the kill.
    assert counts["sent"] + counts["already there"] == 200
    assert counts["already there"] >= before + 10  # + the same-name copies
    assert counts["not images"] == 6 and counts["failed"] == 0
    for kind in NOT_IMAGES:
        assert f"skipped, not an image: misc/not-an-image.{kind}" in result.stderr
    assert stored(port, "trip") == expected
    distinct = {hashlib.sha256(data).digest() for data in expected.values()}
    assert len(blob_files(tmp_path / "image-db")) == len(distinct), "each content stored once"

    again = cli(url, *args)
    assert again.returncode == 0
    assert summary(again)["sent"] == 0 and summary(again)["already there"] == 200


def test_a_name_taken_by_other_bytes_is_a_conflict_handled_per_on_conflict(run, tmp_path):
    port, url = service(run, tmp_path)
    folder = tmp_path / "c"
    write(folder / "x.png", png(padding=2))
    write(folder / "y.png", png(padding=3))
    request(port, "POST", path_of(), b'{"albumName": "c"}')
    assert request(port, "PUT", path_of("c", "images", "x.png"), png(padding=1))[0] == 200

    result = cli(url, "push", str(folder), "--on-conflict", "skip")
    assert result.returncode == 0, result.stderr
    assert "conflict, left alone: x.png: c/x.png holds other bytes" in result.stderr
    assert stored(port, "c") == {"x.png": png(padding=1), "y.png": png(padding=3)}

    result = cli(url, "push", str(folder))  # the default: fail
    assert result.returncode == 1
    assert "failed: x.png: conflict: c/x.png holds other bytes" in result.stderr
    assert summary(result)["already there"] == 1

    result = cli(url, "push", str(folder), "--on-conflict", "rename")
    assert result.returncode == 0, result.stderr
    assert "sent x.png as x (1).png" in result.stderr
    assert stored(port, "c") == {
        "x.png": png(padding=1),
        "x (1).png": png(padding=2),
        "y.png": png(padding=3),
    }
    result = cli(url, "push", str(folder), "--on-conflict", "rename")
    assert result.returncode == 0
    assert "already there: x.png as x (1).png" in result.stderr
    assert summary(result)["sent"] == 0


def test_503s_from_a_low_upload_limit_are_retried_to_success(run, tmp_path):
    port, url = service(run, tmp_path, IMAGESTORE_MAX_CONCURRENT_UPLOADS="1")
    folder = tmp_path / "busy"
    images = {f"b{n:02}.png": png(width=n + 1, padding=300_000 + n) for n in range(40)}
    for name, data in images.items():
        write(folder / name, data)
    result = cli(url, "push", str(folder), "--jobs", "8", "--retries", "30", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = summary(result)
    assert counts["sent"] == 40 and counts["failed"] == 0
    assert counts["retries"] > 0
    assert "503 (1 uploads are already running: retry shortly); retrying in 1.0 s" in result.stderr
    assert stored(port, "busy") == images


def test_connection_failures_are_retried_until_the_service_answers(run, tmp_path):
    port = free_port()
    folder = tmp_path / "early"
    write(folder / "a.png", png(padding=10))
    log = tmp_path / "push.out"
    pushing = start_cli(f"http://127.0.0.1:{port}", "push", str(folder), log=log)
    deadline = time.monotonic() + 20
    while "retrying" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "list albums: Connection refused; retrying in" in log.read_text()
    proc = run("--port", str(port), "--data", str(tmp_path / "db"), env={"IMAGESTORE_MQTT": "off"})
    assert proc.wait_ready(port)
    assert pushing.wait(60) == 0, log.read_text()
    assert stored(port, "early") == {"a.png": png(padding=10)}


def test_a_service_that_stays_away_ends_the_run_with_status_1(tmp_path):
    folder = tmp_path / "nowhere"
    write(folder / "a.png", png())
    result = cli(f"http://127.0.0.1:{free_port()}", "push", str(folder), "--retries", "1")
    assert result.returncode == 1
    assert "imagestore push: http://127.0.0.1:" in result.stderr
    assert "Connection refused" in result.stderr
    assert "0 sent, 0 already there, 0 not images, 0 failed, 1 not done" in result.stdout


def test_4xx_are_reported_per_file_and_the_run_goes_on(run, tmp_path):
    port, url = service(run, tmp_path, IMAGESTORE_MAX_UPLOAD_BYTES="100KiB")
    folder = tmp_path / "mixed"
    write(folder / "big.png", png(padding=200_000))
    write(folder / "bad\x01name.png", png(padding=5))
    write(folder / "a.png", JPEG)
    write(folder / "b.gif", GIF)
    result = cli(url, "push", str(folder))
    assert result.returncode == 1
    assert "failed: big.png: the image is larger than the limit of 102400 bytes" in result.stderr
    assert "failed: bad\\u0001name.png: image name must not contain U+0001" in result.stderr
    counts = summary(result)
    assert (counts["sent"], counts["failed"]) == (2, 2)
    assert stored(port, "mixed") == {"a.png": JPEG, "b.gif": GIF}


def test_keys_are_sent_and_never_printed(run, tmp_path):
    secret = "k-5f0c1e9d7a3b"
    port, url = service(run, tmp_path, IMAGESTORE_API_KEYS=secret)
    folder = tmp_path / "private"
    write(folder / "a.png", png(padding=7))
    outputs = []
    result = cli(url, "push", str(folder), "-v", env={"IMAGESTORE_KEY": secret})
    assert result.returncode == 0, result.stderr
    outputs.append(result)
    result = cli(url, "ls", "private", "--key", secret)
    assert result.returncode == 0 and result.stdout.endswith(" a.png\n"), result.stderr
    outputs.append(result)
    result = cli(url, "pull", "private", str(tmp_path / "out"), env={"IMAGESTORE_KEY": secret})
    assert result.returncode == 0 and (tmp_path / "out" / "a.png").read_bytes() == png(padding=7)
    outputs.append(result)
    outputs.append(cli(url, "push", "--help", env={"IMAGESTORE_KEY": secret}))
    wrong = "k-wrong-0d15ea5e"
    write(folder / "b.png", png(padding=8))  # reads are public: only an upload needs a key
    result = cli(url, "push", str(folder), "--key", wrong)
    assert result.returncode == 1
    assert "failed: b.png: an API key is needed" in result.stderr
    outputs.append(result)
    for output in outputs:
        assert secret not in output.stdout + output.stderr
        assert wrong not in output.stdout + output.stderr


def test_pull_into_an_empty_folder_then_into_a_half_full_one(run, tmp_path):
    port, url = service(run, tmp_path)
    request(port, "POST", path_of(), b'{"albumName": "pets"}')
    images = {f"p{n:02}.png": png(width=n + 1, padding=2000 * n) for n in range(30)}
    images["huge.png"] = png(padding=3_000_000)
    for name, data in images.items():
        assert request(port, "PUT", path_of("pets", "images", name), data)[0] == 200
    out = tmp_path / "backup" / "pets"
    result = cli(url, "pull", "pets", str(out), "--jobs", "8")
    assert result.returncode == 0, result.stderr
    assert summary(result)["received"] == 31
    assert {p.name: p.read_bytes() for p in out.iterdir()} == images

    for n in range(0, 30, 2):
        (out / f"p{n:02}.png").unlink()
    (out / "huge.png").unlink()
    (out / "p01.png").write_bytes(b"my own edit")  # other bytes: a conflict
    leftover = partial_path(str(out), "huge.png")  # as a kill would leave it
    with open(leftover, "wb") as half:
        half.write(images["huge.png"][:1000])
    result = cli(url, "pull", "pets", str(out))
    assert result.returncode == 1
    assert "failed: p01.png: conflict:" in result.stderr
    counts = summary(result)
    assert (counts["received"], counts["already there"], counts["failed"]) == (16, 14, 1)
    assert not os.path.exists(leftover)
    assert (out / "huge.png").read_bytes() == images["huge.png"]
    assert (out / "p01.png").read_bytes() == b"my own edit"

    result = cli(url, "pull", "pets", str(out), "--on-conflict", "rename")
    assert result.returncode == 0, result.stderr
    assert (out / "p01 (1).png").read_bytes() == images["p01.png"]
    result = cli(url, "pull", "pets", str(out), "--on-conflict", "skip")
    assert result.returncode == 0
    assert "conflict, left alone: p01.png" in result.stderr
    assert summary(result)["already there"] == 30

    result = cli(url, "pull", "nobody", str(tmp_path / "x"))
    assert result.returncode == 1 and "album nobody does not exist" in result.stderr


def test_ls_lists_albums_and_an_albums_images_with_size_type_and_date(run, tmp_path):
    port, url = service(run, tmp_path)
    for album in ("b", "a"):
        request(port, "POST", path_of(), f'{{"albumName": "{album}"}}'.encode())
    request(port, "PUT", path_of("a", "images", "cat.png"), png(padding=100))
    request(port, "PUT", path_of("a", "images", "dog.jpg"), JPEG)
    result = cli(url, "ls")
    assert (result.returncode, result.stdout) == (0, "a\nb\n")
    result = cli(url, "ls", "a")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        rf" +{len(png(padding=100))}  image/png +\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  cat.png",
        lines[0],
    ), lines
    assert re.fullmatch(rf" +{len(JPEG)}  image/jpeg .*  dog.jpg", lines[1]), lines
    result = cli(url, "ls", "nobody")
    assert result.returncode == 1 and "album nobody does not exist" in result.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["push"], "the following arguments are required: DIR"),
        (["push", "/nonexistent/folder"], "is not a folder"),
        (["push", ".", "--jobs", "0"], "--jobs is a number from 1 to 64"),
        (["push", ".", "--on-conflict", "overwrite"], "invalid choice: 'overwrite'"),
        (["push", ".", "--url", "ftp://host"], "is not an http:// or https:// URL"),
        (["pull", "album"], "the following arguments are required: DIR"),
        (["pull", "album", "/dev/null"], "is not a folder"),
        (["ls", "a", "b"], "unrecognized arguments: b"),
    ],
)
def test_usage_errors_exit_with_status_2(args, says):
    result = cli("http://127.0.0.1:9", *args)
    assert result.returncode == 2
    assert says in result.stderr


def test_progress_is_plain_lines_off_a_terminal_and_a_bar_on_one(run, tmp_path):
    port, url = service(run, tmp_path)
    folder = tmp_path / "shown"
    for n in range(5):
        write(folder / f"s{n}.png", png(width=n + 1, padding=200_000))
    plain = cli(url, "push", str(folder))
    assert plain.returncode == 0
    assert "\r" not in plain.stderr
    for n in range(5):
        assert f"sent s{n}.png ({len(png(width=n + 1, padding=200_000))} bytes)" in plain.stderr
    assert "push: 0/5 files, 0 of " in plain.stderr

    request(port, "DELETE", path_of("shown"))
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    pushing = subprocess.Popen(
        [sys.executable, SERVICE, "push", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=clean_env(IMAGESTORE_URL=url),
    )
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        try:
            piece = os.read(main, 65536) if ready else b""
        except OSError:  # the other side closed (EIO on Linux)
            piece = b""
        if not piece:
            break
        shown += piece
    os.close(main)
    assert pushing.wait(30) == 0
    bar = shown.decode()
    assert "\r" in bar and "5/5 files" in bar and "B/s" in bar, bar
    assert "sent s0.png" not in bar, "no line per file above the bar"
    assert "push: 5 sent" in pushing.stdout.read().decode()


PEAK_RSS = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def test_memory_stays_flat_for_a_large_image_both_ways(run, tmp_path):
    port, url = service(run, tmp_path)
    folder = tmp_path / "large"
    size = 160 * 1024 * 1024
    write(folder / "big.png", png(padding=size))
    peaks = {}
    for command in (["push", str(folder)], ["pull", "large", str(tmp_path / "back")]):
        # The peak RSS of the command alone: started by a small launcher (a child of
        # this test process would count the test's own memory from before its exec).
        launched = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, sys.executable, SERVICE, *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=clean_env(IMAGESTORE_URL=url),
            timeout=300,
        )
        assert launched.returncode == 0, launched.stderr
        code, peak = launched.stdout.split()[-2:]
        assert code == "0", (command, launched.stdout)
        peaks[command[0]] = int(peak)
    assert (tmp_path / "back" / "big.png").stat().st_size == (folder / "big.png").stat().st_size
    for command, peak in peaks.items():
        assert peak < 100 * 1024 * 1024, f"{command} peaked at {peak} bytes of RSS"
    shutil.rmtree(tmp_path / "back")
