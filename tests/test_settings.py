"""Settings and tools that say what is wrong: a bad value stops the start with one
sentence (exit status 2), a typo'd variable is named with the closest known one,
--help shows defaults as typed, and `imagestore watch` waits for its broker."""

import argparse
import ipaddress
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from mqtt import Broker, free_port
from process import SERVICE, clean_env, run_to_end

from settings import (
    Settings,
    parse_seconds,
    parse_settings,
    parse_size,
    parse_watch_settings,
    parse_whole,
    shown,
    unknown_variables,
)

BAD_VALUES = [
    ("IMAGESTORE_PORT", "abc", "is not a TCP port"),
    ("IMAGESTORE_PORT", "70000", "is not a TCP port"),
    ("IMAGESTORE_PORT", "²", "is not a TCP port"),
    ("IMAGESTORE_PORT", "٣٣", "is not a TCP port"),
    ("IMAGESTORE_PORT", "3_333", "is not a TCP port"),
    ("IMAGESTORE_PORT", "9" * 5000, "is not a TCP port"),
    ("IMAGESTORE_WORKERS", "0", "is not a whole number of at least 1"),
    ("IMAGESTORE_WORKERS", "-2", "is not a whole number of at least 1"),
    ("IMAGESTORE_MAX_UPLOAD_BYTES", "-5", "is not a size"),
    ("IMAGESTORE_MAX_UPLOAD_BYTES", "10XB", "is not a size"),
    ("IMAGESTORE_MAX_UPLOAD_BYTES", "lots", "is not a size"),
    ("IMAGESTORE_MAX_UPLOAD_BYTES", "1.5GiB", "is not a size"),
    ("IMAGESTORE_SEND_TIMEOUT_SECONDS", "nan", "is not a number of seconds"),
    ("IMAGESTORE_SEND_TIMEOUT_SECONDS", "inf", "is not a number of seconds"),
    ("IMAGESTORE_SHUTDOWN_GRACE_SECONDS", "-1", "is not a number of seconds"),
    ("IMAGESTORE_SHUTDOWN_GRACE_SECONDS", "1e9", "is not a number of seconds"),
    ("IMAGESTORE_MQTT", "maybe", "is not on or off"),
    ("IMAGESTORE_PUBLIC_READ", "2", "is not on or off"),
    ("IMAGESTORE_LOG_LEVEL", "loud", "is not a log level"),
    ("IMAGESTORE_MQTT_PROTOCOL", "4", "is not an MQTT version"),
    ("IMAGESTORE_CORS_ORIGINS", "ftp://x", "is not an origin"),
    ("IMAGESTORE_TRUSTED_PROXIES", "10.0.0.1,nonsense", "is not an address or a network"),
    ("IMAGESTORE_MAX_UPLOADS_PER_CLIENT", "0", "is not a whole number of at least 1"),
    ("IMAGESTORE_LIST_CACHE_BYTES", "64 MiBs", "is not a size"),
    ("IMAGESTORE_API_KEYS", "@/nonexistent/keys", "cannot read the key file"),
    ("IMAGESTORE_API_KEYS", " , ", "holds no key"),
    ("IMAGESTORE_MAX_UPLOAD_BYTES", "0", "is not a size from 1 to 1024TiB"),
    ("IMAGESTORE_MAX_HEADER_BYTES", "512", "is not a size from 1KiB to 1024TiB"),
    ("IMAGESTORE_BODY_MIN_BYTES_PER_SECOND", "0", "is not a size from 1 to 1024TiB"),
    ("IMAGESTORE_LIST_CACHE_BYTES", "9999TiB", "is not a size from 0 to 1024TiB"),
    ("IMAGESTORE_LIST_CACHE_BYTES", "1\u212aiB", "is not a size"),  # Kelvin sign, not k
    ("IMAGESTORE_SEND_TIMEOUT_SECONDS", "0", "is not a number of seconds above 0"),
    ("IMAGESTORE_BODY_TIMEOUT_SECONDS", "0.0", "is not a number of seconds above 0"),
    ("IMAGESTORE_IDLE_TIMEOUT_SECONDS", "-1", "is not a number of seconds above 0"),
    ("IMAGESTORE_BLOBS", "ftp://x/y", "the known kinds are file://, s3://"),
    ("IMAGESTORE_BLOBS", "s3:///prefix", "names no bucket: s3://bucket/prefix"),
    ("IMAGESTORE_BLOBS", "s3://b/p?sweep_min_age=-1", "sweep_min_age must be a number of seconds"),
    ("IMAGESTORE_BLOBS", "s3://b/p?sweep_min_age=nan", "sweep_min_age must be a number of seconds"),
    ("IMAGESTORE_BLOBS", "s3://b/p?colour=red", "unknown parameter 'colour'"),
]


@pytest.mark.parametrize(
    "env, value, sentence", BAD_VALUES, ids=[f"{e}={v[:8]}" for e, v, _ in BAD_VALUES]
)
def test_a_bad_value_stops_the_start_with_one_sentence(tmp_path, env, value, sentence):
    result = run_to_end("--data", str(tmp_path / "db"), env={env: value}, cwd=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"imagestore: {env}="), lines
    assert sentence in lines[0], lines
    assert lines[1] == "imagestore --help lists the settings"
    for python in ("Traceback", "invalid literal", "ValueError", "could not convert"):
        assert python not in result.stderr
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    "args, sentence",
    [
        (("--port", "abc"), "--port 'abc' is not a TCP port: give a whole number from 0 to 65535"),
        (("--workers", "٣"), "--workers '٣' is not a whole number of at least 1"),
        (("--max-upload-bytes", "-1"), "--max-upload-bytes '-1' is not a size: give bytes"),
        (("--send-timeout-seconds", "inf"), "--send-timeout-seconds 'inf' is not a number"),
        (("--mqtt-tls", "on"), "--mqtt-tls takes no value (not 'on'): give --mqtt-tls or"),
        (("--mqtt=off",), "--mqtt takes no value (not 'off'): give --mqtt or --no-mqtt"),
        (("--no-public-read", "no"), "--no-public-read takes no value (not 'no')"),
        (("--bogus",), "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_flag_stops_the_start_with_one_sentence(tmp_path, args, sentence):
    result = run_to_end(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"imagestore: {sentence}"), result.stderr
    assert lines[1] == "imagestore --help lists the settings"
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr


def test_both_topics_empty_is_refused_while_mqtt_is_on(tmp_path):
    env = {"IMAGESTORE_MQTT_TOPIC": "", "IMAGESTORE_MQTT_EVENTS_TOPIC": ""}
    result = run_to_end(env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "set IMAGESTORE_MQTT=off (--no-mqtt) instead" in result.stderr
    assert parse_settings([], {**env, "IMAGESTORE_MQTT": "off"}).mqtt.enabled is False
    assert parse_settings([], {"IMAGESTORE_MQTT_TOPIC": ""}).mqtt.events_topic  # one is enough
    result = run_to_end("watch", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "there is nothing to watch" in result.stderr


def test_converters_take_only_plain_ascii_values():
    assert parse_whole("42") == 42 and parse_whole(" 7 ") == 7
    assert parse_size("64MiB") == 64 * 1024**2 and parse_size("1 GiB") == 1024**3
    assert parse_size("10MB") == 10**7 and parse_size("512") == 512 and parse_size("2k") == 2000
    assert parse_seconds("0.5") == 0.5 and parse_seconds("30") == 30.0
    for bad in ("", " ", "+1", "1e3", "0x10", "１２", "4²", "1" * 19):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_whole(bad)
    for bad in ("", "-1", "nan", "inf", "1e3", "１", "1.2.3", "."):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seconds(bad)


def test_switches_take_no_value_as_flags_and_on_off_as_variables():
    assert parse_settings(["--no-mqtt"], {}).mqtt.enabled is False
    assert parse_settings(["--mqtt-tls"], {}).mqtt.tls is True
    assert (
        parse_settings(["--no-public-read"], {"IMAGESTORE_PUBLIC_READ": "on"}).public_read is False
    )
    assert parse_settings([], {"IMAGESTORE_MQTT_TLS": "yes"}).mqtt.tls is True
    assert parse_settings(["--no-mqtt-tls"], {"IMAGESTORE_MQTT_TLS": "yes"}).mqtt.tls is False
    assert parse_settings([], {"PRODMODE": ""}).prod_mode is True
    assert parse_settings(["--prod-mode"], {}).prod_mode is True
    assert parse_settings([], {}).prod_mode is False


def test_new_settings_parse():
    settings = parse_settings(
        [],
        {
            "IMAGESTORE_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7 ,::1",
            "IMAGESTORE_MAX_UPLOADS_PER_CLIENT": "3",
            "IMAGESTORE_SEND_TIMEOUT_SECONDS": "2.5",
            "IMAGESTORE_LIST_CACHE_BYTES": "1MiB",
            "IMAGESTORE_MQTT_EVENTS_TOPIC": "",
        },
    )
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings.max_uploads_per_client == 3
    assert settings.send_timeout_seconds == 2.5
    assert settings.list_cache_bytes == 1024**2
    assert settings.mqtt.events_topic == "" and settings.mqtt.topic == "imagestore/notifier"
    defaults = Settings()
    assert defaults.mqtt.events_topic == "imagestore/events"
    assert defaults.send_timeout_seconds == 60 and defaults.max_uploads_per_client == 8


def test_an_unknown_variable_is_named_with_the_closest_setting():
    warnings = unknown_variables(
        {
            "IMAGESTORE_PROT": "1",
            "IMAGESTORE_MAX_UPLAOD_BYTES": "1",
            "IMAGESTORE_PORT": "1",
            "OTHER": "x",
        }
    )
    assert warnings == [
        "unknown setting IMAGESTORE_MAX_UPLAOD_BYTES (did you mean IMAGESTORE_MAX_UPLOAD_BYTES?): ignored",
        "unknown setting IMAGESTORE_PROT (did you mean IMAGESTORE_PORT?): ignored",
    ]
    assert unknown_variables({"IMAGESTORE_ZZZZZZZZZZZZZZZZZZZZ": "1"}) == [
        "unknown setting IMAGESTORE_ZZZZZZZZZZZZZZZZZZZZ: ignored"
    ]
    assert unknown_variables({"IMAGESTORE_URL": "http://x", "IMAGESTORE_KEY": "k"}) == []
    # Every name shares the prefix: it must not make any IMAGESTORE_X look close to one.
    assert unknown_variables({"IMAGESTORE_FOO": "1"}) == ["unknown setting IMAGESTORE_FOO: ignored"]
    assert unknown_variables({"imagestore_workers": "1", "IMAGESTORE_LOGLEVEL": "x"}) == [
        "unknown setting IMAGESTORE_LOGLEVEL (did you mean IMAGESTORE_LOG_LEVEL?): ignored",
        "unknown setting imagestore_workers (did you mean IMAGESTORE_WORKERS?): ignored",
    ]


def test_the_service_warns_of_an_unknown_variable_once_at_start(run, tmp_path):
    port = free_port()
    proc = run(
        "--port",
        str(port),
        "--data",
        str(tmp_path / "db"),
        "--workers",
        "2",
        env={"IMAGESTORE_PROT": "1"},
    )
    proc.wait_ready(port)
    warnings = [line for line in proc.log().splitlines() if "IMAGESTORE_PROT" in line]
    assert len(warnings) == 1, proc.log()
    assert "WARNING" in warnings[0] and "did you mean IMAGESTORE_PORT?" in warnings[0]


def test_help_shows_defaults_as_typed(tmp_path):
    result = run_to_end("--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0
    text = result.stdout
    for typed in (
        "[IMAGESTORE_CORS_ORIGINS; default: *]",
        "[IMAGESTORE_MAX_UPLOAD_BYTES; default: 1GiB]",
        "[IMAGESTORE_MIN_FREE_BYTES; default: 64MiB]",
        "[IMAGESTORE_SEND_TIMEOUT_SECONDS; default: 60]",
        "[IMAGESTORE_MQTT; default: on]",
        "[IMAGESTORE_MQTT_TLS; default: off]",
        "[IMAGESTORE_API_KEYS; default: (none)]",
        "--no-mqtt",
        "imagestore watch",
    ):
        assert typed in text, typed
    for python in ("('*',)", "()", "True", "False", "60.0", "1073741824]"):
        assert python not in text, python


def test_watch_help_documents_watch_alone(tmp_path):
    result = run_to_end("watch", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert result.stdout.startswith("usage: imagestore watch")
    for flag in ("--mqtt-host", "--mqtt-port", "--mqtt-events-topic", "--mqtt-tls"):
        assert flag in result.stdout
    for flag in ("--max-upload-bytes", "--workers", "--data", "--api-keys", "--log-level"):
        assert flag not in result.stdout
    settings = parse_watch_settings(["--mqtt-port", "1999"], {"IMAGESTORE_MQTT_EVENTS_TOPIC": "e"})
    assert settings.mqtt.port == 1999 and settings.mqtt.events_topic == "e"
    # the service's own settings are neither read nor checked by watch
    assert parse_watch_settings([], {"IMAGESTORE_PORT": "abc"}).port == Settings().port
    result = run_to_end("watch", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "imagestore watch: unrecognized arguments: --workers 2",
        "imagestore watch --help lists the settings",
    ]
    help_text = run_to_end("--help", cwd=tmp_path, env={"COLUMNS": "300"}).stdout
    assert "'imagestore watch' prints the change events" in help_text


# --- imagestore watch with a broker that comes and goes -----------------------------


def start_watch(port: int, tmp_path) -> tuple[subprocess.Popen, object]:
    out = open(tmp_path / "watch.out", "w+b")
    watcher = subprocess.Popen(
        [sys.executable, SERVICE, "watch"],
        stdout=out,
        stderr=subprocess.PIPE,
        env=clean_env(IMAGESTORE_MQTT_PORT=str(port)),
    )
    return watcher, out


def interrupt(watcher: subprocess.Popen) -> float:
    began = time.monotonic()
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(5) == 0
    return time.monotonic() - began


def publish_until_watched(port: int, tmp_path, payload: bytes) -> None:
    """Publish ``payload`` until watch printed it (its subscription may lag its line)."""
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        deadline = time.monotonic() + 10
        while payload not in (tmp_path / "watch.out").read_bytes():
            assert time.monotonic() < deadline, "watch printed nothing"
            publisher.publish("imagestore/events", payload, qos=1).wait_for_publish(5)
            time.sleep(0.2)
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def test_watch_waits_for_its_broker_and_reconnects_saying_each_once(tmp_path):
    broker = Broker(tmp_path / "broker")
    watcher, out = start_watch(broker.port, tmp_path)
    where = f"127.0.0.1:{broker.port}"
    try:
        assert watcher.stderr.readline().decode() == (
            f"cannot reach the broker at {where} (Connection refused): retrying every few seconds\n"
        )
        time.sleep(4)  # more than one attempt; the next line read proves they were silent
        assert watcher.poll() is None, "watch gave up instead of waiting"
        broker.start()
        assert watcher.stderr.readline().decode() == f"watching imagestore/events on {where}\n"
        publish_until_watched(broker.port, tmp_path, b'{"id":1,"album":"pets"}')

        broker.stop()
        assert watcher.stderr.readline().decode().startswith(f"lost the broker at {where} (")
        time.sleep(4)  # failed reconnections, silent
        broker.start()
        assert watcher.stderr.readline().decode() == f"watching imagestore/events on {where}\n"
        publish_until_watched(broker.port, tmp_path, b'{"id":2,"album":"cats"}')
        assert interrupt(watcher) < 1.0  # while connected
        assert watcher.stderr.read() == b"", "more than one line per state"
    finally:
        if watcher.poll() is None:
            watcher.kill()
        out.close()
        broker.stop()


def test_ctrl_c_ends_watch_at_once_while_it_waits_for_the_broker(tmp_path):
    watcher, out = start_watch(free_port(), tmp_path)
    try:
        assert "cannot reach the broker" in watcher.stderr.readline().decode()
        time.sleep(1.5)  # inside the wait between two attempts
        assert interrupt(watcher) < 1.0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        out.close()


def test_ctrl_c_ends_watch_at_once_while_it_reconnects(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    watcher, out = start_watch(broker.port, tmp_path)
    try:
        assert "watching imagestore/events" in watcher.stderr.readline().decode()
        broker.stop()
        assert "lost the broker" in watcher.stderr.readline().decode()
        time.sleep(1.5)  # inside paho's reconnect delay, on its thread
        assert interrupt(watcher) < 1.0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        out.close()
        broker.stop()


def test_shown_defaults():
    assert shown(("*",), str) == "*"
    assert shown((), str) == "(none)"
    assert shown(1024**3, parse_size) == "1GiB"
    assert shown(1000, parse_size) == "1000" and shown(0, parse_size) == "0"
    assert shown(16 * 1024, parse_size) == "16KiB" and shown(3 * 1024**4, parse_size) == "3TiB"
    assert shown(60.0, parse_seconds) == "60" and shown(0.5, parse_seconds) == "0.5"
    assert shown(True, str) == "on" and shown("", str) == "(none)"
