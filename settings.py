"""Configuration: environment variables, mirrored by command-line flags.

Each setting has one default (in Settings), one converter that refuses a bad value
with a sentence saying what it accepts, and one line of help. A bad value stops the
service at start (exit status 2) with that sentence, never a Python error.
"""

import argparse
import dataclasses
import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from store.backends import BLOB_SCHEMES, CATALOG_SCHEMES, Backends, UnknownBackend, check_url

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
# Plain ASCII digits only ("²" and "٣" are digits to str.isdigit), and few enough of
# them that no value is absurd.
_WHOLE = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
# ASCII: under re.IGNORECASE alone, the Kelvin sign "\u212a" would pass for a k.
_SIZE = re.compile(r"([0-9]{1,18}) ?([kmgt]i?)?b?", re.IGNORECASE | re.ASCII)
# Beyond any disk or memory, and well inside a signed 64-bit integer (SQLite, C).
_MAX_SIZE = 1024**5
_SWITCH_WORDS = {"1": True, "on": True, "true": True, "yes": True}
_SWITCH_WORDS.update({"0": False, "off": False, "false": False, "no": False})


def _refuse(text: str, what: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"{text!r} is not {what}")


def parse_whole(text: str, low: int = 0, high: int | None = None, what: str = "") -> int:
    value = text.strip()
    limits = f"from {low} to {high}" if high is not None else f"of at least {low}"
    what = what or f"a whole number {limits}"
    if not _WHOLE.fullmatch(value):
        _refuse(text, what)
    number = int(value)
    if number < low or (high is not None and number > high):
        _refuse(text, what)
    return number


def parse_size(text: str, low: int = 0) -> int:
    """Bytes from "1073741824", "512MiB", "1 GiB", "10MB" and the like."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        _refuse(
            text,
            "a size: give bytes, or a number and a unit (k, M, G, T for powers of 1000; "
            "Ki, Mi, Gi, Ti for powers of 1024; B optional) such as 64MiB",
        )
    size = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if size < low or size > _MAX_SIZE:
        _refuse(text, f"a size from {shown(low, parse_size)} to 1024TiB")
    return size


def parse_seconds(text: str, above_zero: bool = False) -> float:
    what = "a number of seconds above 0" if above_zero else "a number of seconds"
    if not _DECIMAL.fullmatch(text.strip()) or (above_zero and float(text) == 0):
        _refuse(text, f"{what}: give a number such as 30 or 0.5")
    return float(text)


def parse_switch(text: str) -> bool:
    value = _SWITCH_WORDS.get(text.strip().lower())
    if value is None:
        _refuse(text, "on or off: give on, off, true, false, yes, no, 1 or 0")
    return value


def parse_api_keys(text: str) -> tuple[str, ...]:
    """Keys from "k1,k2", or from a file named "@/path" (one per line, # comments)."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as key_file:
                lines = [line.split("#", 1)[0] for line in key_file]
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not UTF-8 text"
            message = (
                f"cannot read the key file {text[1:]}: {reason}: give keys separated by "
                "commas, or @ and a readable file with one key per line"
            )
            raise argparse.ArgumentTypeError(message) from None
    else:
        lines = text.split(",")
    keys = tuple(key.strip() for key in lines if key.strip())
    if text.strip() and not keys:
        raise argparse.ArgumentTypeError(
            "holds no key: give keys separated by commas, or @ and a file with one per line"
        )
    return keys


def parse_widths(text: str) -> tuple[int, ...]:
    """Rendition sizes from "64,128,256": sorted, each from 1 to 8192."""
    what = "a list of sizes in pixels, each from 1 to 8192, such as 64,128,256"
    sizes = set()
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            sizes.add(parse_whole(entry, 1, 8192, what))
    if not sizes:
        _refuse(text, what)
    return tuple(sorted(sizes))


def parse_optional_widths(text: str) -> tuple[int, ...]:
    return parse_widths(text) if text.strip() else ()


def parse_origins(text: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            _refuse(origin, "an origin: give * or origins like https://app.example")
    return origins


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                _refuse(entry, "an address or a network: give e.g. 10.0.0.5 or 10.0.0.0/8")
    return tuple(networks)


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _refuse(text, "a log level: give DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(text: str) -> str:
    form = text.strip().lower()
    if form not in ("text", "json"):
        _refuse(text, "a log format: give text or json")
    return form


def _max_age(text: str) -> int:
    return parse_whole(text, 0, 10 * 365 * 24 * 3600, "a number of seconds from 0 to 315360000")


def _protocol(text: str) -> str:
    if text.strip() not in ("3.1.1", "5"):
        _refuse(text, "an MQTT version: give 3.1.1 or 5")
    return text.strip()


def _port(text: str) -> int:
    return parse_whole(text, 0, 65535, "a TCP port: give a whole number from 0 to 65535")


def _at_least_one(text: str) -> int:
    return parse_whole(text, 1)


def _whole_number(text: str) -> int:
    return parse_whole(text, 0)


def _timeout(text: str) -> float:
    # 0 would not mean "no timeout" but cut every upload or response at once.
    return parse_seconds(text, above_zero=True)


def _some_bytes(text: str) -> int:
    # An upload limit of 0 refuses every image; a pace of 0 bytes/s divides by zero.
    return parse_size(text, 1)


def _head_bytes(text: str) -> int:
    # Below this, not even a request line with a few headers gets through.
    return parse_size(text, 1024)


def _text(text: str) -> str:
    return text


def _catalog_url(text: str) -> str:
    try:
        return check_url(text.strip(), CATALOG_SCHEMES, "catalog") if text.strip() else ""
    except UnknownBackend as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _blobs_url(text: str) -> str:
    try:
        return check_url(text.strip(), BLOB_SCHEMES, "blob store") if text.strip() else ""
    except UnknownBackend as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclass(frozen=True)
class BrokerSettings:
    """The MQTT notifier's settings (IMAGESTORE_MQTT and IMAGESTORE_MQTT_*)."""

    enabled: bool = True
    host: str = ""
    port: int = 1883
    # The Go service's plain sentences; "" publishes none.
    topic: str = "imagestore/notifier"
    # The JSON events, with their ids; "" publishes none.
    events_topic: str = "imagestore/events"
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_file: str = ""
    client_id: str = ""
    protocol: str = "3.1.1"
    # Messages handed to paho before their PUBACKs (mosquitto queues 1000 per client).
    window: int = 64
    reconnect_max_seconds: int = 30

    @property
    def address(self) -> str:
        return self.host or "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    port: int = 3333
    address: str = ""
    data: str = "./image-db"
    catalog: str = ""
    blobs: str = ""
    max_upload_bytes: int = 1024**3
    host_ip: str = ""
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    mqtt: "BrokerSettings" = field(default_factory=lambda: BrokerSettings())
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
    send_timeout_seconds: float = 60.0
    max_uploads_per_client: int = 8
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    list_cache_bytes: int = 64 * 1024**2
    log_format: str = "text"
    cache_max_age: int = 0
    metrics_key: str = field(default="", repr=False)
    metrics_dir: str = ""
    rendition_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    url_signing_key: tuple[str, ...] = field(default=(), repr=False)
    max_pixels: int = 100_000_000
    rendition_workers: int = os.cpu_count() or 1
    rendition_queue: int = 4 * (os.cpu_count() or 1)
    rendition_seconds: float = 30.0
    rendition_cache_bytes: int = 1024**3
    renditions_on_upload: tuple[int, ...] = ()

    @property
    def broker(self) -> "BrokerSettings":
        """The MQTT settings, with the broker's address as set, else $HOSTIP (as the Go
        original), else loopback."""
        return dataclasses.replace(self.mqtt, host=self.mqtt.host or self.host_ip)

    @property
    def backends(self) -> Backends:
        """The catalog and blob store URLs: as set, else in the data folder."""
        return Backends.of(self.data, self.catalog, self.blobs)

    @property
    def advertised_url(self) -> str:
        """Where clients reach the service, for the start-up log."""
        host = self.host_ip or self.address or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


# (flag, environment variable, converter, help); the defaults come from Settings.
_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--port", "IMAGESTORE_PORT", _port, "TCP port to serve on"),
    ("--address", "IMAGESTORE_ADDRESS", _text, "address to bind (empty: every interface)"),
    (
        "--data",
        "IMAGESTORE_DATA",
        _text,
        "data folder: catalog and image files (created if missing)",
    ),
    (
        "--catalog",
        "IMAGESTORE_CATALOG",
        _catalog_url,
        "the catalog's URL: sqlite:///path (default: <data>/catalog.sqlite3)",
    ),
    (
        "--blobs",
        "IMAGESTORE_BLOBS",
        _blobs_url,
        "the blob store's URL: file:///path (default: <data>/blobs)",
    ),
    (
        "--max-upload-bytes",
        "IMAGESTORE_MAX_UPLOAD_BYTES",
        _some_bytes,
        "largest image accepted, in bytes or with a unit (512MiB, 1GiB)",
    ),
    (
        "--host-ip",
        "HOSTIP",
        _text,
        "the address clients use: in the start-up log and the OpenAPI server URL; also "
        "the broker host when --mqtt-host is empty",
    ),
    (
        "--shutdown-grace-seconds",
        "IMAGESTORE_SHUTDOWN_GRACE_SECONDS",
        parse_seconds,
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
        _text,
        "MQTT broker host (empty: $HOSTIP, else 127.0.0.1)",
    ),
    ("--mqtt-port", "IMAGESTORE_MQTT_PORT", _port, "MQTT broker port"),
    (
        "--mqtt-topic",
        "IMAGESTORE_MQTT_TOPIC",
        _text,
        "topic of the plain sentences, exactly the Go service's payload (empty: not published)",
    ),
    (
        "--mqtt-events-topic",
        "IMAGESTORE_MQTT_EVENTS_TOPIC",
        _text,
        "topic of the JSON events, with their ids (empty: not published)",
    ),
    ("--mqtt-username", "IMAGESTORE_MQTT_USERNAME", _text, "MQTT user name"),
    (
        "--mqtt-password",
        "IMAGESTORE_MQTT_PASSWORD",
        _text,
        "MQTT password (prefer the environment variable: flags show in ps)",
    ),
    ("--mqtt-tls", "IMAGESTORE_MQTT_TLS", parse_switch, "connect to the broker over TLS"),
    (
        "--mqtt-ca-file",
        "IMAGESTORE_MQTT_CA_FILE",
        _text,
        "CA certificates for the broker's TLS (empty: the system's)",
    ),
    (
        "--mqtt-client-id",
        "IMAGESTORE_MQTT_CLIENT_ID",
        _text,
        "MQTT client id (empty: a random one)",
    ),
    ("--mqtt-protocol", "IMAGESTORE_MQTT_PROTOCOL", _protocol, "MQTT version: 3.1.1 or 5"),
    (
        "--outbox-limit",
        "IMAGESTORE_OUTBOX_LIMIT",
        _at_least_one,
        "events kept while the broker is away; beyond it the oldest are dropped",
    ),
    (
        "--workers",
        "IMAGESTORE_WORKERS",
        _at_least_one,
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
        _timeout,
        "a connection idle this long (or this slow to send its headers) is closed",
    ),
    (
        "--body-timeout-seconds",
        "IMAGESTORE_BODY_TIMEOUT_SECONDS",
        _timeout,
        "a request body must arrive within this time, extended by one second per "
        "--body-min-bytes-per-second received",
    ),
    (
        "--body-min-bytes-per-second",
        "IMAGESTORE_BODY_MIN_BYTES_PER_SECOND",
        _some_bytes,
        "the slowest upload rate kept going past the body timeout",
    ),
    ("--max-header-bytes", "IMAGESTORE_MAX_HEADER_BYTES", _head_bytes, "largest request head"),
    (
        "--max-concurrent-uploads",
        "IMAGESTORE_MAX_CONCURRENT_UPLOADS",
        _at_least_one,
        "uploads at once; the next gets 503 with Retry-After before its body is read",
    ),
    (
        "--min-free-bytes",
        "IMAGESTORE_MIN_FREE_BYTES",
        parse_size,
        "refuse uploads (507) when the data folder's disk has less free space than this",
    ),
    (
        "--max-uploads-per-client",
        "IMAGESTORE_MAX_UPLOADS_PER_CLIENT",
        _at_least_one,
        "uploads at once from one client address; the next gets 429 with Retry-After",
    ),
    (
        "--trusted-proxies",
        "IMAGESTORE_TRUSTED_PROXIES",
        parse_networks,
        "reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For "
        "names the client",
    ),
    (
        "--send-timeout-seconds",
        "IMAGESTORE_SEND_TIMEOUT_SECONDS",
        _timeout,
        "a response that makes no sending progress for this long (the client takes "
        "no byte of it) is cut",
    ),
    (
        "--log-format",
        "IMAGESTORE_LOG_FORMAT",
        _log_format,
        "text, or json: one JSON object per line (requests with method, route, status, "
        "bytes, duration, client and request id)",
    ),
    (
        "--cache-max-age",
        "IMAGESTORE_CACHE_MAX_AGE",
        _max_age,
        "seconds clients and proxies may keep an image without asking again (0: no-cache; "
        "a replaced or renamed name may be served stale for up to this long)",
    ),
    (
        "--metrics-key",
        "IMAGESTORE_METRICS_KEY",
        _text,
        "bearer token /metrics asks for (empty: public, like /healthz; prefer the variable)",
    ),
    (
        "--metrics-dir",
        "IMAGESTORE_METRICS_DIR",
        _text,
        "where the workers' metrics folder is made (empty: the system's temporary folder)",
    ),
    (
        "--list-cache-bytes",
        "IMAGESTORE_LIST_CACHE_BYTES",
        parse_size,
        "memory each worker may spend on cached list answers (0: no cache)",
    ),
    (
        "--rendition-widths",
        "IMAGESTORE_RENDITION_WIDTHS",
        parse_widths,
        "rendition sizes served to unsigned URLs (comma-separated pixels; a size between "
        "two is served the next one up)",
    ),
    (
        "--url-signing-key",
        "IMAGESTORE_URL_SIGNING_KEY",
        parse_api_keys,
        "keys of signed rendition URLs, which may ask any size (comma-separated or "
        "@/path/to/file; the first signs, any verifies: rotation); empty: none",
    ),
    (
        "--max-pixels",
        "IMAGESTORE_MAX_PIXELS",
        _at_least_one,
        "images with more pixels than this get no rendition (422), told from the header",
    ),
    (
        "--rendition-workers",
        "IMAGESTORE_RENDITION_WORKERS",
        _at_least_one,
        "threads of each worker process that decode images (renditions, upload checks)",
    ),
    (
        "--rendition-queue",
        "IMAGESTORE_RENDITION_QUEUE",
        _whole_number,
        "renditions waiting for a thread at most; the next gets 503 with Retry-After",
    ),
    (
        "--rendition-seconds",
        "IMAGESTORE_RENDITION_SECONDS",
        _timeout,
        "time limit of one rendition",
    ),
    (
        "--rendition-cache-bytes",
        "IMAGESTORE_RENDITION_CACHE_BYTES",
        parse_size,
        "blob store space kept for made renditions, least recently used evicted (0: none)",
    ),
    (
        "--renditions-on-upload",
        "IMAGESTORE_RENDITIONS_ON_UPLOAD",
        parse_optional_widths,
        "widths rendered (and cached) in the background after each upload, e.g. 256,1024",
    ),
    (
        "--memory-release-seconds",
        "IMAGESTORE_MEMORY_RELEASE_SECONDS",
        parse_seconds,
        "how often freed memory is given back to the OS (gc + malloc_trim); 0: never",
    ),
)


# Switches take no value as flags (--mqtt-tls, --no-mqtt-tls); as variables, on/off.
_SWITCHES = {flag for flag, _, kind, _ in _OPTIONS if kind is parse_switch} | {"--prod-mode"}
_SIZES = (parse_size, _some_bytes, _head_bytes)
# What `imagestore watch` reads: the broker's settings. Not the client id: with the
# service's own, the broker would throw one of the two off.
_WATCH = {"host_ip"} | {
    flag[2:].replace("-", "_")
    for flag, *_ in _OPTIONS
    if flag.startswith("--mqtt-") and flag != "--mqtt-client-id"
}
_PREFIX = "IMAGESTORE_"
# Variables read by other commands of the same executable.
OTHER_VARIABLES = ("IMAGESTORE_URL", "IMAGESTORE_KEY")
KNOWN_VARIABLES = tuple(env for _, env, _, _ in _OPTIONS) + ("PRODMODE", *OTHER_VARIABLES)


def shown(value: object, kind: Callable[[str], Any]) -> str:
    """A default as a user would type it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    if kind in _SIZES and isinstance(value, int) and value:
        for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % factor == 0:
                return f"{value // factor}{unit}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else "(none)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One sentence and a hint, no usage block (exit status 2)."""
        # argparse says "argument --port: 'abc' is not ...": name the flag as typed.
        message = re.sub(r"^argument (--[\w-]+)(?:/--[\w-]+)?: ", r"\1 ", message)
        self.exit(2, f"{self.prog}: {message}\n{self.prog} --help lists the settings\n")


def parse_settings(argv: list[str] | None, environ: Mapping[str, str]) -> Settings:
    """Flags win over environment variables, which win over the defaults."""
    parser = _Parser(
        prog="imagestore",
        usage="%(prog)s [options]\n       %(prog)s watch [options]\n"
        "       %(prog)s sign URL\n       %(prog)s dimensions [options]",
        description="Image Storage Service: albums and images over a REST API. "
        "'imagestore watch' prints the change events published on MQTT instead "
        "(imagestore watch --help); 'imagestore sign URL' signs a rendition URL; "
        "'imagestore dimensions' records the sizes of images stored before they were.",
        epilog="Every flag can also be set by the environment variable shown in brackets.",
    )
    parser.add_argument("--version", action="version", version=f"imagestore {VERSION}")
    settings = _parse(parser, argv, environ, lambda name: True)
    if settings.mqtt.enabled and not (settings.mqtt.topic or settings.mqtt.events_topic):
        parser.error(
            "IMAGESTORE_MQTT_TOPIC and IMAGESTORE_MQTT_EVENTS_TOPIC are both empty, so "
            "nothing would be published: set IMAGESTORE_MQTT=off (--no-mqtt) instead"
        )
    return settings


def parse_watch_settings(argv: list[str] | None, environ: Mapping[str, str]) -> Settings:
    """The broker's settings alone: a bad value of any other does not stop `watch`."""
    parser = _Parser(
        prog="imagestore watch",
        description="Print on stdout each change event the service publishes on MQTT, one "
        "line each, until Ctrl-C: the JSON events of --mqtt-events-topic, or the plain "
        "sentences of --mqtt-topic when that is empty. On stderr: 'watching TOPIC on "
        "HOST:PORT' once subscribed, and once each when the broker cannot be reached "
        "(it is retried every few seconds) or is lost (it is reconnected).",
        epilog="Every flag can also be set by the environment variable shown in brackets.",
    )
    settings = _parse(parser, argv, environ, lambda name: name in _WATCH)
    if not (settings.mqtt.topic or settings.mqtt.events_topic):
        parser.error(
            "IMAGESTORE_MQTT_TOPIC and IMAGESTORE_MQTT_EVENTS_TOPIC are both empty, so "
            "there is nothing to watch: give either"
        )
    return settings


def _parse(
    parser: _Parser,
    argv: list[str] | None,
    environ: Mapping[str, str],
    wanted: Callable[[str], bool],
) -> Settings:
    defaults = Settings()
    values: dict[str, Any] = {}
    for flag, env, kind, help_text in _OPTIONS:
        name = flag[2:].replace("-", "_")
        if not wanted(name):
            continue
        values[name] = _default(defaults, name)
        if env in environ:
            try:
                values[name] = kind(environ[env])
            except argparse.ArgumentTypeError as err:
                value, said = repr(environ[env]), str(err)
                # "NAME='value' is not ...": the sentence names the value already.
                parser.error(
                    f"{env}={said}" if said.startswith(value) else f"{env}={value}: {said}"
                )
        help_text = f"{help_text} [{env}; default: {shown(_default(defaults, name), kind)}]"
        if flag in _SWITCHES:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, type=kind, metavar=_metavar(kind), help=help_text)
    if wanted("prod_mode"):
        parser.add_argument(
            "--prod-mode",
            action=argparse.BooleanOptionalAction,
            help="do not serve the Swagger page and the OpenAPI document "
            "[PRODMODE, any value; default: off]",
        )
        values["prod_mode"] = "PRODMODE" in environ  # as the Go original: set or not
    parser.set_defaults(**values)
    argv = sys.argv[1:] if argv is None else argv
    _refuse_switch_values(parser, argv)
    args = parser.parse_args(argv)
    return _nested({name: getattr(args, name) for name in values})


# The flags of the nested MQTT settings: --mqtt is mqtt.enabled, --mqtt-port mqtt.port...
def _nested_name(name: str) -> tuple[str, str] | None:
    if name == "mqtt":
        return "mqtt", "enabled"
    return ("mqtt", name[len("mqtt_") :]) if name.startswith("mqtt_") else None


def _default(defaults: Settings, name: str) -> Any:
    nested = _nested_name(name)
    return getattr(getattr(defaults, nested[0]), nested[1]) if nested else getattr(defaults, name)


def _nested(values: dict[str, Any]) -> Settings:
    top: dict[str, Any] = {}
    broker: dict[str, Any] = {}
    for name, value in values.items():
        nested = _nested_name(name)
        if nested:
            broker[nested[1]] = value
        else:
            top[name] = value
    return Settings(**top, mqtt=BrokerSettings(**broker))


def _refuse_switch_values(parser: _Parser, argv: list[str]) -> None:
    """`--mqtt off` (as the variables take it) would otherwise be "unrecognized
    arguments: off", which does not say that the flag takes no value."""
    for index, arg in enumerate(argv):
        if arg == "--":
            return
        flag, equals, value = arg.partition("=")
        plain = flag.replace("--no-", "--", 1)
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if plain in _SWITCHES and (equals or following.lower() in _SWITCH_WORDS):
            given = value if equals else following
            parser.error(f"{flag} takes no value (not {given!r}): give {plain} or --no-{plain[2:]}")


def _metavar(kind: Callable[[str], Any]) -> str:
    if kind in _SIZES:
        return "SIZE"
    names: dict[Callable[[str], Any], str] = {parse_seconds: "SECONDS", _timeout: "SECONDS"}
    names |= {_port: "PORT", _at_least_one: "N"}
    names |= {_log_level: "LEVEL", _protocol: "VERSION", parse_api_keys: "KEYS"}
    names |= {parse_origins: "ORIGINS", parse_networks: "NETWORKS", _whole_number: "N"}
    names |= {parse_widths: "SIZES", parse_optional_widths: "SIZES"}
    return names.get(kind, "TEXT")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each IMAGESTORE_* variable that no setting reads (a typo, most
    likely), naming the closest known one."""
    # Compared without the common prefix: with it, any IMAGESTORE_X looks close to all.
    known = {env[len(_PREFIX) :]: env for env in KNOWN_VARIABLES if env.startswith(_PREFIX)}
    warnings = []
    for name in sorted(environ):
        if name.upper().startswith(_PREFIX) and name not in KNOWN_VARIABLES:
            close = difflib.get_close_matches(name.upper()[len(_PREFIX) :], known, 1, 0.6)
            hint = f" (did you mean {known[close[0]]}?)" if close else ""
            warnings.append(f"unknown setting {name}{hint}: ignored")
    return warnings
