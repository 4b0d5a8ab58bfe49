"""deploy/: the docker-compose file names what the service, nginx.conf and SeaweedFS
expect (no Docker engine here: tests/test_cluster.py runs nginx.conf itself, with the
instances and engines the fixtures start)."""

import json
import re
from pathlib import Path

import yaml
from process import ROOT

from settings import KNOWN_VARIABLES
from store.backends import BLOB_SCHEMES, CATALOG_SCHEMES, check_url

DEPLOY = Path(ROOT, "deploy")


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_two_instances_on_the_engines_it_starts():
    services = compose()["services"]
    assert {"postgres", "seaweedfs", "bucket", "mosquitto", "nginx"} <= set(services)
    instances = sorted(name for name in services if name.startswith("imagestore-"))
    assert instances == ["imagestore-1", "imagestore-2"]
    for name in instances:
        env = services[name]["environment"]
        for variable in env:
            if variable.startswith("IMAGESTORE_"):
                assert variable in KNOWN_VARIABLES, variable
        check_url(env["IMAGESTORE_CATALOG"], CATALOG_SCHEMES, "catalog")
        check_url(env["IMAGESTORE_BLOBS"], BLOB_SCHEMES, "blob store")
        assert env["IMAGESTORE_CATALOG"].startswith("postgresql://")
        assert env["IMAGESTORE_BLOBS"].startswith("s3://")
        # The catalog's credentials and database are the ones postgres is started with.
        postgres = services["postgres"]["environment"]
        user, password, database = re.fullmatch(
            r"postgresql://([^:]+):([^@]+)@postgres/(\w+)", env["IMAGESTORE_CATALOG"]
        ).groups()
        assert (user, password, database) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
        assert env["AWS_ENDPOINT_URL"] == services["bucket"]["environment"]["AWS_ENDPOINT_URL"]


def test_compose_credentials_are_an_identity_of_the_seaweedfs_config():
    services = compose()["services"]
    identities = json.loads((DEPLOY / "seaweedfs-s3.json").read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    for name in ("imagestore-1", "imagestore-2", "bucket"):
        env = services[name]["environment"]
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys, name
    bucket = compose()["services"]["imagestore-1"]["environment"]["IMAGESTORE_BLOBS"]
    assert f"--bucket {bucket[5:].split('/')[0]}" in " ".join(services["bucket"]["command"])
    assert "/etc/seaweedfs/s3.json" in " ".join(services["seaweedfs"]["command"])


def test_nginx_conf_upstreams_are_the_compose_instances():
    conf = (DEPLOY / "nginx.conf").read_text()
    services = compose()["services"]
    upstreams = re.findall(r"server (imagestore-\d+):3333", conf)
    assert sorted(upstreams) == sorted(n for n in services if n.startswith("imagestore-"))
    assert "8080:8080" in services["nginx"]["ports"]
    assert re.search(r"listen 8080;", conf)
    # Streamed in both directions, never spooled to nginx's disk.
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;"):
        assert directive in conf
