"""Configuration: environment variables, mirrored by command-line flags."""

import argparse
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

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


def parse_switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not on or off: {text!r}")


def parse_api_keys(text: str) -> tuple[str, ...]:
    """Keys from "k1,k2", or from a file named "@/path" (one per line, # comments)."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as key_file:
                lines = [line.split("#", 1)[0] for line in key_file]
        except OSError as err:
            raise argparse.ArgumentTypeError(f"cannot read the key file: {err.strerror}") from None
    else:
        lines = text.split(",")
    keys = tuple(key.strip() for key in lines if key.strip())
    if text.strip() and not keys:
        raise argparse.ArgumentTypeError("no key found")
    return keys


def parse_origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise argparse.ArgumentTypeError(
                f"not an origin: {origin!r} (like https://app.example)"
            )
    return origins


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise argparse.ArgumentTypeError(f"not a log level: {text!r}")
    return level


def _protocol(text: str) -> str:
    if text not in ("3.1.1", "5"):
        raise argparse.ArgumentTypeError(f"not an MQTT version: {text!r} (3.1.1 or 5)")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be a finite number, not negative")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a TCP port is between 0 and 65535")
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
    mqtt: bool = True
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_topic: str = "imagestore/notifier"
    mqtt_username: str = ""
    mqtt_password: str = field(default="", repr=False)
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""
    mqtt_client_id: str = ""
    mqtt_protocol: str = "3.1.1"
    outbox_limit: int = 1_000_000
    memory_release_seconds: float = 60.0
    prod_mode: bool = False
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    public_read: bool = True
    cors_origins: tuple[str, ...] = ("*",)
    idle_timeout_seconds: float = 60.0
    body_timeout_seconds: float = 30.0
    body_min_bytes_per_second: int = 16 * 1024
    max_header_bytes: int = 32 * 1024
    max_concurrent_uploads: int = 32 * (os.cpu_count() or 1)
    min_free_bytes: int = 64 * 1024**2
    workers: int = os.cpu_count() or 1

    @property
    def broker_host(self) -> str:
        """The broker's address: as set, else $HOSTIP (as the Go original), else loopback."""
        return self.mqtt_host or self.host_ip or "127.0.0.1"

    @property
    def advertised_url(self) -> str:
        """Where clients reach the service, for the start-up log."""
        host = self.host_ip or self.address or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


# (flag, environment variable, type, help); defaults come from Settings.
_OPTIONS = (
    ("--port", "IMAGESTORE_PORT", _port, "TCP port to serve on"),
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
    ("--log-level", "IMAGESTORE_LOG_LEVEL", _log_level, "DEBUG, INFO, WARNING or ERROR"),
    (
        "--mqtt",
        "IMAGESTORE_MQTT",
        parse_switch,
        "publish change events to MQTT (off: no events are recorded at all)",
    ),
    (
        "--mqtt-host",
        "IMAGESTORE_MQTT_HOST",
        str,
        "MQTT broker host (empty: $HOSTIP, else 127.0.0.1)",
    ),
    ("--mqtt-port", "IMAGESTORE_MQTT_PORT", _port, "MQTT broker port"),
    ("--mqtt-topic", "IMAGESTORE_MQTT_TOPIC", str, "topic the events are published on"),
    ("--mqtt-username", "IMAGESTORE_MQTT_USERNAME", str, "MQTT user name"),
    (
        "--mqtt-password",
        "IMAGESTORE_MQTT_PASSWORD",
        str,
        "MQTT password (prefer the environment variable: flags show in ps)",
    ),
    ("--mqtt-tls", "IMAGESTORE_MQTT_TLS", parse_switch, "connect to the broker over TLS"),
    (
        "--mqtt-ca-file",
        "IMAGESTORE_MQTT_CA_FILE",
        str,
        "CA certificates for the broker's TLS (empty: the system's)",
    ),
    ("--mqtt-client-id", "IMAGESTORE_MQTT_CLIENT_ID", str, "MQTT client id (empty: a random one)"),
    ("--mqtt-protocol", "IMAGESTORE_MQTT_PROTOCOL", _protocol, "MQTT version: 3.1.1 or 5"),
    (
        "--outbox-limit",
        "IMAGESTORE_OUTBOX_LIMIT",
        _positive_int,
        "events kept while the broker is away; beyond it the oldest are dropped",
    ),
    (
        "--workers",
        "IMAGESTORE_WORKERS",
        _positive_int,
        "processes serving the port (each with its own catalog connection; one of them "
        "publishes the MQTT events)",
    ),
    (
        "--api-keys",
        "IMAGESTORE_API_KEYS",
        parse_api_keys,
        "keys allowed to change things (comma-separated, or @/path/to/file with one per "
        "line); empty: no access control",
    ),
    (
        "--public-read",
        "IMAGESTORE_PUBLIC_READ",
        parse_switch,
        "with API keys set: whether reads (GET, HEAD) need no key",
    ),
    (
        "--cors-origins",
        "IMAGESTORE_CORS_ORIGINS",
        parse_origins,
        "origins browsers may call the API from (comma-separated; * for any)",
    ),
    (
        "--idle-timeout-seconds",
        "IMAGESTORE_IDLE_TIMEOUT_SECONDS",
        _positive_float,
        "a connection idle this long (or this slow to send its headers) is closed",
    ),
    (
        "--body-timeout-seconds",
        "IMAGESTORE_BODY_TIMEOUT_SECONDS",
        _positive_float,
        "a request body must arrive within this time, extended by one second per "
        "--body-min-bytes-per-second received",
    ),
    (
        "--body-min-bytes-per-second",
        "IMAGESTORE_BODY_MIN_BYTES_PER_SECOND",
        parse_size,
        "the slowest upload rate kept going past the body timeout",
    ),
    ("--max-header-bytes", "IMAGESTORE_MAX_HEADER_BYTES", parse_size, "largest request head"),
    (
        "--max-concurrent-uploads",
        "IMAGESTORE_MAX_CONCURRENT_UPLOADS",
        _positive_int,
        "uploads at once; the next gets 503 with Retry-After before its body is read",
    ),
    (
        "--min-free-bytes",
        "IMAGESTORE_MIN_FREE_BYTES",
        parse_size,
        "refuse uploads (507) when the data folder's disk has less free space than this",
    ),
    (
        "--memory-release-seconds",
        "IMAGESTORE_MEMORY_RELEASE_SECONDS",
        _positive_float,
        "how often freed memory is given back to the OS (gc + malloc_trim); 0: never",
    ),
)


def parse_settings(argv: list[str] | None, environ: Mapping[str, str]) -> Settings:
    """Flags win over environment variables, which win over the defaults."""
    parser = argparse.ArgumentParser(
        prog="imagestore",
        usage="%(prog)s [watch] [options]",
        description="Image Storage Service: albums and images over a REST API. "
        "With 'watch', print the change events published on the MQTT topic instead.",
        epilog="Every flag can also be set by the environment variable shown in brackets.",
    )
    parser.add_argument("--version", action="version", version=f"imagestore {VERSION}")
    defaults = Settings()
    for flag, env, kind, help_text in _OPTIONS:
        name = flag[2:].replace("-", "_")
        default = getattr(defaults, name)
        if env in environ:
            try:
                default = kind(environ[env])
            except (ValueError, argparse.ArgumentTypeError) as err:
                parser.error(f"{env}={environ[env]!r}: {err}")
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=default,
            help=f"{help_text} [{env}; default: {getattr(defaults, name)!r}]",
        )
    parser.add_argument(
        "--prod-mode",
        action="store_true",
        default="PRODMODE" in environ,
        help="do not serve the Swagger page and the OpenAPI document "
        "[PRODMODE, any value; default: off]",
    )
    args = parser.parse_args(argv)
    return Settings(**{name: getattr(args, name) for name in Settings.__dataclass_fields__})
