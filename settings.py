"""Configuration: environment variables, mirrored by command-line flags."""

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass

VERSION = "0.1.0"

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def parse_size(text: str) -> int:
    """Bytes from "1073741824", "512MiB", "1 GiB", "10MB" and the like."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]i?)?b?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1073741824 or 1GiB)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    port: int = 3333
    address: str = ""
    data: str = "./image-db"
    max_upload_bytes: int = 1024**3
    host_ip: str = ""
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"

    @property
    def advertised_url(self) -> str:
        """Where clients reach the service, for the start-up log."""
        host = self.host_ip or self.address or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


# (flag, environment variable, type, help); defaults come from Settings.
_OPTIONS = (
    ("--port", "IMAGESTORE_PORT", int, "TCP port to serve on"),
    ("--address", "IMAGESTORE_ADDRESS", str, "address to bind (empty: every interface)"),
    ("--data", "IMAGESTORE_DATA", str, "data folder: catalog and image files (created if missing)"),
    (
        "--max-upload-bytes",
        "IMAGESTORE_MAX_UPLOAD_BYTES",
        parse_size,
        "largest image accepted, in bytes or with a unit (512MiB, 1GiB)",
    ),
    ("--host-ip", "HOSTIP", str, "address advertised in the start-up log"),
    (
        "--shutdown-grace-seconds",
        "IMAGESTORE_SHUTDOWN_GRACE_SECONDS",
        _positive_float,
        "on SIGTERM/SIGINT, how long requests in flight may take to finish",
    ),
    ("--log-level", "IMAGESTORE_LOG_LEVEL", str, "DEBUG, INFO, WARNING or ERROR"),
)


def parse_settings(argv: list[str] | None, environ: Mapping[str, str]) -> Settings:
    """Flags win over environment variables, which win over the defaults."""
    parser = argparse.ArgumentParser(
        prog="imagestore",
        description="Image Storage Service: albums and images over a REST API.",
        epilog="Every flag can also be set by the environment variable shown in brackets.",
    )
    parser.add_argument("--version", action="version", version=f"imagestore {VERSION}")
    defaults = Settings()
    for flag, env, kind, help_text in _OPTIONS:
        field = flag[2:].replace("-", "_")
        default = getattr(defaults, field)
        if env in environ:
            try:
                default = kind(environ[env])
            except (ValueError, argparse.ArgumentTypeError) as err:
                parser.error(f"{env}={environ[env]!r}: {err}")
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=default,
            help=f"{help_text} [{env}; default: {getattr(defaults, field)!r}]",
        )
    args = parser.parse_args(argv)
    return Settings(**{field: getattr(args, field) for field in Settings.__dataclass_fields__})
