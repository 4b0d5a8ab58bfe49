"""Several imagestore instances behind nginx with deploy/nginx.conf: for
tests/test_cluster.py and bench/cluster.py."""

import os
import re
import signal
import subprocess
from pathlib import Path

from mqtt import wait_for_port
from process import ROOT, Proc, clean_env, free_port

EXECUTABLE = os.path.join(ROOT, "dist", "imagestore")
NGINX_CONF = Path(ROOT, "deploy", "nginx.conf")
LEADER_LINE = "this instance publishes the event outbox"


class Instance:
    """One dist/imagestore, on a port and data folder of its own."""

    def __init__(
        self, number: int, folder: Path, env: dict[str, str], command: list[str] | None = None
    ) -> None:
        self.number = number
        self.port = free_port()
        self.log_path = folder / f"instance-{number}.log"
        (folder / f"data-{number}").mkdir()
        with open(self.log_path, "wb") as log:
            popen = subprocess.Popen(
                [*(command or [EXECUTABLE]), "--port", str(self.port)]
                + ["--data", str(folder / f"data-{number}")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(TMPDIR=str(folder), **env),
            )
        self.proc = Proc(popen, self.log_path)

    def leads(self) -> bool:
        return LEADER_LINE in self.proc.log()

    def kill(self) -> None:
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(10)

    def alive(self) -> bool:
        return self.proc.popen.poll() is None


def nginx_in_front(ports: list[int], folder: Path) -> tuple[subprocess.Popen, int]:
    """deploy/nginx.conf as shipped, with this test's upstreams, port and private paths."""
    port = free_port()
    conf = NGINX_CONF.read_text()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in ports)
    conf, upstreams = re.subn(r"(?m)^\s*server imagestore-\d+:3333[^\n]*\n", "", conf)
    assert upstreams >= 2, "deploy/nginx.conf no longer names its upstream servers"
    conf = conf.replace("upstream imagestore {", "upstream imagestore {\n" + servers, 1)
    conf, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", conf)
    assert listens == 1
    user = "user root;\n" if os.geteuid() == 0 else ""
    private = f"{user}daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/nginx-error.log;\n"
    temp = "".join(
        f"    {kind}_temp_path {folder}/nginx-{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = private + conf.replace("http {", "http {\n" + temp + "    access_log off;\n", 1)
    path = folder / "nginx.conf"
    path.write_text(conf)
    popen = subprocess.Popen(
        ["nginx", "-c", str(path), "-p", str(folder), "-e", str(folder / "nginx-error.log")],
        stdin=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return popen, port
