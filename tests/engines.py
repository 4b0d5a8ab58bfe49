"""Private engines for the tests, each in a temp folder on free ports: nothing here
uses a server the machine may already run."""

import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PostgreSQL -------------------------------------------------------------------


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program from Debian's packages (/usr/lib/postgresql/N/bin),
    the newest if several; PATH as a fallback."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package")
    return path


def _version(path: str) -> int:
    try:
        return int(path.split("/")[4])
    except (IndexError, ValueError):
        return 0


class Postgres:
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free loopback port, trust
    authentication, its socket in its own folder; stop() and start() keep the data."""

    def __init__(self) -> None:
        # Its own folder under /tmp, not under pytest's (private to root, and
        # PostgreSQL, which will not run as root, runs as "postgres" there).
        self.folder = tempfile.mkdtemp(prefix="imagestore-pg-")
        self.data = os.path.join(self.folder, "pgdata")
        self.socket_dir = os.path.join(self.folder, "socket")
        self.log = os.path.join(self.folder, "postgres.log")
        self.port = free_port()
        self.user = getpass.getuser()
        os.makedirs(self.socket_dir, exist_ok=True)
        self._as_owner = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the cluster belongs to "postgres".
            shutil.chown(self.folder, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
        subprocess.run(
            [
                *self._as_owner,
                postgres_bin("initdb"),
                "-D",
                self.data,
                "-U",
                self.user,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                # Test speed, not durability: the tests kill processes, not the machine.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> "Postgres":
        subprocess.run(
            [
                *self._as_owner,
                postgres_bin("pg_ctl"),
                "-D",
                self.data,
                "-l",
                self.log,
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*self._as_owner, postgres_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"],
            capture_output=True,
        )

    def remove(self) -> None:
        """Stop it and remove its folder."""
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def kill(self) -> None:
        """The postmaster killed outright (immediate stop: no checkpoint)."""
        self.stop("immediate")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                shutil.which("psql") or postgres_bin("psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL did not listen on {self.port}")
