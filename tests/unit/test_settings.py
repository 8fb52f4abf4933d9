"""fastrelay.settings: sources, precedence, aliases, units and error messages."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fastrelay.config import DEFAULT_APP, App, Config, WebhookTarget
from fastrelay.errors import ConfigError
from fastrelay.settings import (
    _SOKETI_PATHS,
    VARIABLES,
    build_parser,
    load_config,
    unknown_variables,
)

KEY32 = base64.b64encode(bytes(range(32))).decode()


def load(argv: list[str] | None = None, **environ: str) -> Config:
    return load_config(argv or [], environ)


def fails(argv: list[str] | None = None, **environ: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv or [], environ)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


# --- defaults -------------------------------------------------------------------------------


def test_no_input_gives_config_defaults() -> None:
    assert load_config(None, {}) == Config()
    assert load_config([], {}).apps == (DEFAULT_APP,)


def test_defaults_do_not_depend_on_unrelated_environment() -> None:
    assert load(PATH="/usr/bin", HOME="/root", REDIS_URL="redis://x:1/0") == Config()


def test_pure_and_environ_untouched() -> None:
    environ = {"RELAY_PORT": "7000", "SOKETI_DEBUG": "true"}
    before = dict(environ)
    assert load_config(["--host", "::"], environ) == load_config(["--host", "::"], environ)
    assert environ == before


# --- precedence -----------------------------------------------------------------------------


def test_each_level_beats_the_next_for_a_server_setting(tmp_path: Path) -> None:
    config_file = write(tmp_path, "c.json", {"port": 1005})
    layers: dict[str, Any] = {
        "flag": ["--port", "1001"],
        "RELAY_PORT": "1002",
        "SOKETI_PORT": "1003",
        "REVERB_SERVER_PORT": "1004",
        "RELAY_CONFIG": config_file,
    }
    expected = [1001, 1002, 1003, 1004, 1005, 6001]
    for drop, port in enumerate(expected):
        names = list(layers)[drop:]
        argv = layers["flag"] if "flag" in names else []
        environ = {name: layers[name] for name in names if name != "flag"}
        assert load_config(argv, environ).port == port, names


def test_each_level_beats_the_next_for_an_app_setting() -> None:
    layers = {
        "flag": ["--app-id", "a1"],
        "RELAY_APP_ID": "a2",
        "SOKETI_DEFAULT_APP_ID": "a3",
        "REVERB_APP_ID": "a4",
    }
    for drop, app_id in enumerate(["a1", "a2", "a3", "a4", "app-id"]):
        names = list(layers)[drop:]
        argv = layers["flag"] if "flag" in names else []
        environ = {name: str(layers[name]) for name in names if name != "flag"}
        assert load_config(argv, environ).apps[0].id == app_id, names


def test_each_level_beats_the_next_for_a_limit(tmp_path: Path) -> None:
    config_file = write(tmp_path, "c.json", {"max_event_name_length": 55})
    environ = {
        "RELAY_MAX_EVENT_NAME_LENGTH": "11",
        "SOKETI_EVENT_MAX_NAME_LENGTH": "22",
        "RELAY_CONFIG": config_file,
    }
    assert load_config([], environ).apps[0].max_event_name_length == 11
    del environ["RELAY_MAX_EVENT_NAME_LENGTH"]
    assert load_config([], environ).apps[0].max_event_name_length == 22
    del environ["SOKETI_EVENT_MAX_NAME_LENGTH"]
    assert load_config([], environ).apps[0].max_event_name_length == 55


def test_own_file_key_beats_soketi_key_in_the_same_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", {"port": 7001, "metrics_port": 7002, "metrics.port": 7003})
    config = load(RELAY_CONFIG=path)
    assert (config.port, config.metrics_port) == (7001, 7002)


def test_config_flag_beats_relay_config(tmp_path: Path) -> None:
    first = write(tmp_path, "a.json", {"port": 1111})
    second = write(tmp_path, "b.json", {"port": 2222})
    assert load(["--config", second], RELAY_CONFIG=first).port == 2222


def test_empty_variables_count_as_unset() -> None:
    config = load(RELAY_PORT="", SOKETI_PORT="7005", REVERB_APP_MAX_CONNECTIONS="")
    assert config.port == 7005
    assert config.apps[0].max_connections == -1


def test_empty_string_is_a_value_for_prefixes() -> None:
    config = load(RELAY_METRICS_PREFIX="", SOKETI_METRICS_PROMETHEUS_PREFIX="soketi_")
    assert config.metrics_prefix == ""


# --- alias families -------------------------------------------------------------------------


def test_soketi_environment_only() -> None:
    config = load(
        SOKETI_HOST="127.0.0.1",
        SOKETI_PORT="6002",
        SOKETI_PATH_PREFIX="/ws",
        SOKETI_DEBUG="true",
        SOKETI_DEFAULT_APP_ID="sid",
        SOKETI_DEFAULT_APP_KEY="skey",
        SOKETI_DEFAULT_APP_SECRET="ssecret",
        SOKETI_DEFAULT_APP_ENABLED="false",
        SOKETI_DEFAULT_APP_MAX_CONNS="10",
        SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES="false",
        SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC="100",
        SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC="5",
        SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC="50",
        SOKETI_DEFAULT_APP_USER_AUTHENTICATION="true",
        SOKETI_DEFAULT_APP_WEBHOOKS='[{"url":"http://h/wh","event_types":["channel_occupied"]}]',
        SOKETI_METRICS_ENABLED="1",
        SOKETI_METRICS_HOST="127.0.0.2",
        SOKETI_METRICS_SERVER_PORT="9602",
        SOKETI_METRICS_PROMETHEUS_PREFIX="soketi_",
        SOKETI_PRESENCE_MAX_MEMBERS="50",
        SOKETI_PRESENCE_MAX_MEMBER_SIZE="4",
        SOKETI_EVENT_MAX_CHANNELS_AT_ONCE="20",
        SOKETI_EVENT_MAX_NAME_LENGTH="150",
        SOKETI_EVENT_MAX_SIZE_IN_KB="50",
        SOKETI_EVENT_MAX_BATCH_SIZE="5",
        SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH="180",
        SOKETI_CHANNEL_CACHE_TTL="3600",
        SOKETI_USER_AUTHENTICATION_TIMEOUT="15000",
        SOKETI_WEBHOOKS_BATCHING="true",
        SOKETI_WEBHOOKS_BATCHING_DURATION="75",
        SOKETI_SHUTDOWN_GRACE_PERIOD="2500",
        SOKETI_SSL_CERT="/c.pem",
        SOKETI_SSL_KEY="/k.pem",
        SOKETI_SSL_PASS="pw",
        SOKETI_ADAPTER_DRIVER="redis",
        SOKETI_ADAPTER_REDIS_PREFIX="sk",
    )
    assert (config.host, config.port, config.path_prefix) == ("127.0.0.1", 6002, "/ws")
    assert config.debug is True and config.log_level == "debug"
    assert config.metrics_enabled and config.metrics_host == "127.0.0.2"
    assert (config.metrics_port, config.metrics_prefix) == (9602, "soketi_")
    assert config.cache_ttl == 3600
    assert config.user_authentication_timeout == 15.0
    assert config.shutdown_grace_period == 2.5
    assert config.webhook_batching and config.webhook_batching_duration_ms == 75
    assert (config.ssl_cert, config.ssl_key, config.ssl_passphrase) == ("/c.pem", "/k.pem", "pw")
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.redis_prefix == "sk"
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == ("sid", "skey", "ssecret")
    assert app.enabled is False and app.enable_client_messages is False
    assert app.max_connections == 10
    assert app.max_backend_events_per_sec == 100
    assert app.max_client_events_per_sec == 5
    assert app.max_read_req_per_sec == 50
    assert app.enable_user_authentication is True
    assert app.webhooks == (WebhookTarget(url="http://h/wh", event_types=("channel_occupied",)),)
    assert (app.max_presence_members, app.max_presence_member_size_kb) == (50, 4)
    assert app.max_event_channels_at_once == 20
    assert app.max_event_name_length == 150
    assert app.max_event_payload_kb == 50
    assert app.max_event_batch_size == 5
    assert app.max_channel_name_length == 180


def test_reverb_environment_only() -> None:
    config = load(
        REVERB_SERVER_HOST="127.0.0.1",
        REVERB_SERVER_PORT="8080",
        REVERB_SERVER_PATH="reverb/",
        REVERB_MAX_REQUEST_SIZE="10000",
        REVERB_APP_ID="123456",
        REVERB_APP_KEY="rkey",
        REVERB_APP_SECRET="rsecret",
        REVERB_APP_PING_INTERVAL="45",
        REVERB_APP_ACTIVITY_TIMEOUT="20",
        REVERB_APP_MAX_CONNECTIONS="1000",
        REVERB_APP_MAX_MESSAGE_SIZE="10000",
        REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM="none",
        REVERB_APP_RATE_LIMITING_ENABLED="true",
        REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS="100",
        REVERB_APP_RATE_LIMIT_DECAY_SECONDS="60",
        REVERB_APP_RATE_LIMIT_TERMINATE="true",
        REVERB_SCALING_ENABLED="true",
        REVERB_SCALING_CHANNEL="reverb",
        REDIS_HOST="redis.internal",
        REDIS_PORT="6380",
        REDIS_PASSWORD="p@ss",
        REDIS_DB="2",
        REVERB_HOST="ws.example.com",
        REVERB_PORT="443",
        REVERB_SCHEME="https",
    )
    assert (config.host, config.port, config.path_prefix) == ("127.0.0.1", 8080, "/reverb")
    assert config.max_request_size == 10000
    assert (config.ping_interval, config.activity_timeout) == (45.0, 20)
    assert config.max_message_size == 10000
    assert config.redis_url == "redis://:p%40ss@redis.internal:6380/2"
    assert config.redis_prefix == "reverb"
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == ("123456", "rkey", "rsecret")
    assert app.max_connections == 1000
    assert app.enable_client_messages is False
    assert app.max_client_events_per_sec == 2  # ceil(100 / 60)
    assert app.rate_limit_terminate is True


@pytest.mark.parametrize(
    ("value", "expected"), [("none", False), ("members", True), ("all", True), ("ALL", True)]
)
def test_reverb_accept_client_events_from(value: str, expected: bool) -> None:
    config = load(REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM=value)
    assert config.apps[0].enable_client_messages is expected


@pytest.mark.parametrize(
    ("attempts", "decay", "expected"),
    [("60", "60", 1), ("1", "60", 1), ("100", "60", 2), ("30", "1", 30), (None, None, 1)],
)
def test_reverb_rate_limit_rounds_up(
    attempts: str | None, decay: str | None, expected: int
) -> None:
    environ = {"REVERB_APP_RATE_LIMITING_ENABLED": "true"}
    if attempts:
        environ["REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS"] = attempts
    if decay:
        environ["REVERB_APP_RATE_LIMIT_DECAY_SECONDS"] = decay
    assert load_config([], environ).apps[0].max_client_events_per_sec == expected


def test_reverb_rate_limit_disabled_leaves_unlimited() -> None:
    config = load(REVERB_APP_RATE_LIMITING_ENABLED="false", REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS="5")
    assert config.apps[0].max_client_events_per_sec == -1


def test_relay_environment_covers_every_server_field() -> None:
    config = load(
        RELAY_HOST="127.0.0.1",
        RELAY_PORT="0",
        RELAY_WORKERS="4",
        RELAY_REUSE_PORT="true",
        RELAY_PATH_PREFIX="/p/",
        RELAY_ACTIVITY_TIMEOUT="120",
        RELAY_PING_INTERVAL="1.5",
        RELAY_PONG_TIMEOUT="2.5",
        RELAY_MAX_MESSAGE_SIZE="1000",
        RELAY_MAX_REQUEST_SIZE="2000",
        RELAY_CACHE_TTL="10",
        RELAY_USER_AUTHENTICATION_TIMEOUT="5",
        RELAY_REQUIRE_PROTOCOL="yes",
        RELAY_API_TIMESTAMP_TOLERANCE="0",
        RELAY_ENCRYPTION_MASTER_KEY_BASE64=KEY32,
        RELAY_SHUTDOWN_GRACE_PERIOD="0",
        RELAY_WRITE_BUFFER_HIGH_WATER="65536",
        RELAY_WEBHOOK_BATCHING="TRUE",
        RELAY_WEBHOOK_BATCHING_DURATION="10",
        RELAY_HISTORY_ENABLED="1",
        RELAY_HISTORY_MAX_EVENTS="5",
        RELAY_HISTORY_MAX_AGE="60",
        RELAY_HISTORY_MAX_CHANNELS="7",
        RELAY_HISTORY_CLIENT_EVENTS="true",
        RELAY_EVENT_LOG_ENABLED="no",
        RELAY_EVENT_LOG_SIZE="9",
        RELAY_METRICS_ENABLED="true",
        RELAY_METRICS_HOST="::1",
        RELAY_METRICS_PORT="0",
        RELAY_METRICS_PREFIX="x_",
        RELAY_REDIS_URL="rediss://u:p@r:6390/1",
        RELAY_REDIS_PREFIX="pre",
        RELAY_REDIS_NODE_TIMEOUT="2.5",
        RELAY_SSL_CERT="c",
        RELAY_SSL_KEY="k",
        RELAY_SSL_PASSPHRASE="pp",
        RELAY_DEBUG="false",
        RELAY_LOG_LEVEL="WARN",
        RELAY_LOG_FORMAT="json",
    )
    assert config == Config(
        host="127.0.0.1",
        port=0,
        workers=4,
        reuse_port=True,
        path_prefix="/p",
        activity_timeout=120,
        ping_interval=1.5,
        pong_timeout=2.5,
        max_message_size=1000,
        max_request_size=2000,
        cache_ttl=10,
        user_authentication_timeout=5,
        require_protocol=True,
        api_timestamp_tolerance=0,
        encryption_master_key=bytes(range(32)),
        shutdown_grace_period=0,
        write_buffer_high_water=65536,
        webhook_batching=True,
        webhook_batching_duration_ms=10,
        history_enabled=True,
        history_max_events=5,
        history_max_age=60,
        history_max_channels=7,
        history_client_events=True,
        event_log_enabled=False,
        event_log_size=9,
        metrics_enabled=True,
        metrics_host="::1",
        metrics_port=0,
        metrics_prefix="x_",
        redis_url="rediss://u:p@r:6390/1",
        redis_prefix="pre",
        redis_node_timeout=2.5,
        ssl_cert="c",
        ssl_key="k",
        ssl_passphrase="pp",
        debug=False,
        log_level="warning",
        log_format="json",
    )


def test_relay_single_app_variables() -> None:
    config = load(
        RELAY_APP_ID="1",
        RELAY_APP_KEY="k",
        RELAY_APP_SECRET="s",
        RELAY_APP_ENABLED="true",
        RELAY_APP_MAX_CONNECTIONS="3",
        RELAY_APP_ENABLE_CLIENT_MESSAGES="false",
        RELAY_APP_MAX_CLIENT_EVENTS_PER_SEC="10",
        RELAY_APP_RATE_LIMIT_TERMINATE="true",
        RELAY_APP_MAX_BACKEND_EVENTS_PER_SEC="11",
        RELAY_APP_MAX_READ_REQ_PER_SEC="12",
        RELAY_APP_USER_AUTHENTICATION="true",
        RELAY_APP_ALLOWED_ORIGINS="https://a.test, https://b.test",
        RELAY_APP_SUBSCRIPTION_COUNT="true",
        RELAY_APP_WATCHLIST_EVENTS="false",
    )
    assert config.apps == (
        App(
            id="1",
            key="k",
            secret="s",
            max_connections=3,
            enable_client_messages=False,
            max_client_events_per_sec=10,
            rate_limit_terminate=True,
            max_backend_events_per_sec=11,
            max_read_req_per_sec=12,
            enable_user_authentication=True,
            allowed_origins=("https://a.test", "https://b.test"),
            subscription_count_enabled=True,
            watchlist_events_enabled=False,
        ),
    )
    assert config.apps[0].secret_bytes == b"s"


def test_allowed_origins_as_json_array() -> None:
    config = load(RELAY_APP_ALLOWED_ORIGINS='["https://a.test", "*.b.test"]')
    assert config.apps[0].allowed_origins == ("https://a.test", "*.b.test")


def test_flags() -> None:
    argv = [
        "--host=::",
        "--port",
        "0",
        "--path-prefix",
        "ws",
        "--activity-timeout",
        "60",
        "--ping-interval",
        "5",
        "--pong-timeout",
        "6",
        "--max-message-size",
        "1024",
        "--max-request-size",
        "2048",
        "--require-protocol",
        "--shutdown-grace-period",
        "1",
        "--history",
        "--metrics",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--redis-url",
        "redis://localhost:6379/0",
        "--redis-prefix",
        "fr",
        "--redis-node-timeout",
        "0.5",
        "--workers=3",
        "--reuse-port",
        "--ssl-cert",
        "c",
        "--ssl-key",
        "k",
        "--debug",
        "--log-level",
        "error",
        "--log-format",
        "json",
        "--app-id",
        "9",
        "--app-key",
        "kk",
        "--app-secret",
        "ss",
        "--app-max-connections",
        "4",
        "--no-app-client-messages",
    ]
    config = load(argv, RELAY_DEBUG="false", RELAY_HISTORY_ENABLED="false")
    assert (config.host, config.port, config.path_prefix) == ("::", 0, "/ws")
    assert (config.activity_timeout, config.ping_interval, config.pong_timeout) == (60, 5, 6)
    assert (config.max_message_size, config.max_request_size) == (1024, 2048)
    assert config.require_protocol and config.history_enabled and config.metrics_enabled
    assert config.shutdown_grace_period == 1
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 0)
    assert (config.redis_url, config.redis_prefix) == ("redis://localhost:6379/0", "fr")
    assert (config.redis_node_timeout, config.workers, config.reuse_port) == (0.5, 3, True)
    assert (config.ssl_cert, config.ssl_key) == ("c", "k")
    assert config.debug and config.log_level == "error" and config.log_format == "json"
    (app,) = config.apps
    assert (app.id, app.key, app.secret, app.max_connections) == ("9", "kk", "ss", 4)
    assert app.enable_client_messages is False


def test_negated_boolean_flag_beats_environment() -> None:
    assert load(["--no-debug"], RELAY_DEBUG="true").debug is False


def test_debug_implies_debug_log_level_unless_set() -> None:
    assert load(RELAY_DEBUG="true").log_level == "debug"
    assert load(["--debug"], RELAY_LOG_LEVEL="warning").log_level == "warning"
    assert load().log_level == "info"


@pytest.mark.parametrize(
    ("raw", "expected"), [("", ""), ("/", ""), ("ws", "/ws"), ("/ws/", "/ws"), ("/a/b", "/a/b")]
)
def test_path_prefix_normalised(raw: str, expected: str) -> None:
    assert load(RELAY_PATH_PREFIX=raw).path_prefix == expected


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "Yes"])
def test_true_spellings(value: str) -> None:
    assert load(RELAY_DEBUG=value).debug is True


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "NO"])
def test_false_spellings(value: str) -> None:
    assert load(RELAY_EVENT_LOG_ENABLED=value).event_log_enabled is False


# --- RELAY_APPS -----------------------------------------------------------------------------


def test_relay_apps_soketi_camel_case() -> None:
    apps = [
        {
            "id": 1,
            "key": "key-1",
            "secret": "secret-1",
            "maxConnections": 100,
            "enableClientMessages": False,
            "enabled": True,
            "maxBackendEventsPerSecond": "10",
            "maxClientEventsPerSecond": 20,
            "maxReadRequestsPerSecond": 30,
            "webhooks": [
                {
                    "url": "https://h.test/hook",
                    "event_types": ["member_added", "member_removed"],
                    "headers": {"X-Custom": "1"},
                    "filter": {"channel_name_starts_with": "presence-"},
                }
            ],
            "maxPresenceMembersPerChannel": 10,
            "maxPresenceMemberSizeInKb": 1.5,
            "maxChannelNameLength": 100,
            "maxEventChannelsAtOnce": 50,
            "maxEventNameLength": 90,
            "maxEventPayloadInKb": 64,
            "maxEventBatchSize": 3,
            "enableUserAuthentication": True,
        },
        {"AppId": "2", "AppKey": "key-2", "AppSecret": "secret-2", "MaxConnections": 7},
        {
            "id": "3",
            "key": "key-3",
            "secret": "secret-3",
            "max_connections": 8,
            "max_presence_members_per_channel": 11,
            "max_presence_member_size_in_kb": 3,
            "max_event_payload_in_kb": 12,
            "enable_client_messages": True,
        },
    ]
    config = load(RELAY_APPS=json.dumps(apps), RELAY_APP_ID="ignored", SOKETI_DEFAULT_APP_KEY="x")
    first, second, third = config.apps
    assert first == App(
        id="1",
        key="key-1",
        secret="secret-1",
        max_connections=100,
        enable_client_messages=False,
        max_backend_events_per_sec=10,
        max_client_events_per_sec=20,
        max_read_req_per_sec=30,
        webhooks=(
            WebhookTarget(
                url="https://h.test/hook",
                event_types=("member_added", "member_removed"),
                headers=(("X-Custom", "1"),),
                channel_name_starts_with="presence-",
            ),
        ),
        max_presence_members=10,
        max_presence_member_size_kb=1.5,
        max_channel_name_length=100,
        max_event_channels_at_once=50,
        max_event_name_length=90,
        max_event_payload_kb=64,
        max_event_batch_size=3,
        enable_user_authentication=True,
    )
    assert (second.id, second.key, second.secret, second.max_connections) == (
        "2",
        "key-2",
        "secret-2",
        7,
    )
    assert (third.max_connections, third.max_presence_members) == (8, 11)
    assert (third.max_presence_member_size_kb, third.max_event_payload_kb) == (3, 12)


def test_relay_apps_reverb_keys() -> None:
    apps = [
        {
            "app_id": "100",
            "key": "rk",
            "secret": "rs",
            "allowed_origins": ["https://app.test"],
            "ping_interval": 40,
            "activity_timeout": 25,
            "max_message_size": 20000,
            "max_connections": None,
            "accept_client_events_from": "members",
            "rate_limiting": {
                "enabled": True,
                "max_attempts": 10,
                "decay_seconds": 4,
                "terminate_on_limit": True,
            },
            "options": {"host": "ws.test", "port": 443, "scheme": "https", "useTLS": True},
        },
        {
            "app_id": "101",
            "key": "rk2",
            "secret": "rs2",
            "accept_client_events_from": "none",
            "rate_limiting": {"enabled": False, "max_attempts": 60, "decay_seconds": 60},
            "ping_interval": 40,
        },
    ]
    config = load(RELAY_APPS=json.dumps(apps))
    first, second = config.apps
    assert (first.id, first.key, first.secret) == ("100", "rk", "rs")
    assert first.allowed_origins == ("https://app.test",)
    assert first.max_connections == -1
    assert first.enable_client_messages is True
    assert first.max_client_events_per_sec == 3  # ceil(10 / 4)
    assert first.rate_limit_terminate is True
    assert second.enable_client_messages is False
    assert second.max_client_events_per_sec == -1
    assert (config.ping_interval, config.activity_timeout, config.max_message_size) == (
        40,
        25,
        20000,
    )


def test_reverb_app_server_knobs_lose_to_explicit_settings() -> None:
    apps = [{"app_id": "1", "key": "k", "secret": "s", "ping_interval": 40}]
    assert load(RELAY_APPS=json.dumps(apps), RELAY_PING_INTERVAL="9").ping_interval == 9


def test_reverb_app_server_knobs_must_agree() -> None:
    apps = [
        {"app_id": "1", "key": "k1", "secret": "s", "activity_timeout": 30},
        {"app_id": "2", "key": "k2", "secret": "s", "activity_timeout": 60},
    ]
    message = fails(RELAY_APPS=json.dumps(apps))
    assert "RELAY_APPS[1].activity_timeout=60" in message
    assert "RELAY_APPS[0].activity_timeout=30" in message


def test_global_limits_are_app_defaults_unless_app_sets_its_own() -> None:
    apps = [
        {"id": "1", "key": "k1", "secret": "s", "maxEventNameLength": 50},
        {"id": "2", "key": "k2", "secret": "s"},
    ]
    config = load(
        RELAY_APPS=json.dumps(apps),
        RELAY_MAX_EVENT_NAME_LENGTH="70",
        RELAY_MAX_CHANNELS_PER_EVENT="7",
        RELAY_MAX_BATCH_SIZE="8",
        RELAY_MAX_CHANNEL_NAME_LENGTH="80",
        RELAY_PRESENCE_MAX_MEMBERS="9",
        RELAY_PRESENCE_MAX_MEMBER_SIZE_KB="0.5",
        RELAY_MAX_EVENT_DATA_KB="10",
    )
    first, second = config.apps
    assert (first.max_event_name_length, second.max_event_name_length) == (50, 70)
    for app in config.apps:
        assert app.max_event_channels_at_once == 7
        assert app.max_event_batch_size == 8
        assert app.max_channel_name_length == 80
        assert app.max_presence_members == 9
        assert app.max_presence_member_size_kb == 0.5
        assert app.max_event_payload_kb == 10


def test_relay_apps_ignores_single_app_variables_but_flags_patch_the_first_app() -> None:
    apps = [{"id": "1", "key": "k1", "secret": "s1"}, {"id": "2", "key": "k2", "secret": "s2"}]
    config = load(
        ["--app-secret", "flag-secret"],
        RELAY_APPS=json.dumps(apps),
        RELAY_APP_ID="env",
        REVERB_APP_KEY="env",
        SOKETI_DEFAULT_APP_MAX_CONNS="3",
    )
    assert [(app.id, app.key, app.secret) for app in config.apps] == [
        ("1", "k1", "flag-secret"),
        ("2", "k2", "s2"),
    ]
    assert config.apps[0].max_connections == -1


def test_null_and_empty_app_values_mean_unset() -> None:
    apps = [{"id": "1", "key": "k", "secret": "s", "maxConnections": None, "webhooks": ""}]
    (app,) = load(RELAY_APPS=json.dumps(apps)).apps
    assert app.max_connections == -1 and app.webhooks == ()


# --- config files ---------------------------------------------------------------------------


def test_soketi_dotted_json_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "soketi.json",
        {
            "debug": True,
            "port": 6010,
            "host": "127.0.0.1",
            "pathPrefix": "/soketi",
            "appManager.array.apps": [
                {"id": "app-1", "key": "key-1", "secret": "s1", "enableClientMessages": True},
                {"id": "app-2", "key": "key-2", "secret": "s2", "maxConnections": 5},
            ],
            "eventLimits.maxNameLength": 120,
            "eventLimits.maxPayloadInKb": 20,
            "presence.maxMembersPerChannel": 42,
            "channelLimits.cacheTtl": 60,
            "metrics.enabled": True,
            "metrics.port": 9700,
            "metrics.prometheus.prefix": "sk_",
            "shutdownGracePeriod": 1500,
            "userAuthenticationTimeout": 2000,
            "webhooks.batching.enabled": True,
            "webhooks.batching.duration": 100,
            "httpApi.requestLimitInMb": 2,
            "adapter.driver": "redis",
            "database.redis.host": "10.0.0.5",
            "database.redis.port": 6390,
            "database.redis.password": "pw",
            "database.redis.db": 3,
            "cluster.port": 11002,
            "mode": "full",
        },
    )
    config = load(["--config", path])
    assert config.debug and (config.port, config.host) == (6010, "127.0.0.1")
    assert config.path_prefix == "/soketi"
    assert [app.id for app in config.apps] == ["app-1", "app-2"]
    assert config.apps[1].max_connections == 5
    for app in config.apps:
        assert (app.max_event_name_length, app.max_event_payload_kb) == (120, 20)
        assert app.max_presence_members == 42
    assert config.cache_ttl == 60
    assert (config.metrics_enabled, config.metrics_port, config.metrics_prefix) == (
        True,
        9700,
        "sk_",
    )
    assert (config.shutdown_grace_period, config.user_authentication_timeout) == (1.5, 2.0)
    assert config.webhook_batching and config.webhook_batching_duration_ms == 100
    assert config.max_request_size == 2 * 1024 * 1024
    assert config.redis_url == "redis://:pw@10.0.0.5:6390/3"


def test_soketi_nested_json_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nested.json",
        {
            "port": 6011,
            "eventLimits": {"maxBatchSize": 4},
            "appManager": {"array": {"apps": [{"id": "n", "key": "nk", "secret": "ns"}]}},
        },
    )
    config = load(RELAY_CONFIG=path)
    assert config.port == 6011
    assert [(app.id, app.max_event_batch_size) for app in config.apps] == [("n", 4)]


def test_soketi_flat_app_keys_in_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flat.json",
        {"appManager.array.apps.0.id": "flat", "appManager.array.apps.0.maxConnections": 3},
    )
    (app,) = load(RELAY_CONFIG=path).apps
    assert (app.id, app.key, app.max_connections) == ("flat", "app-key", 3)


def test_fastrelay_json_config_file_and_environment_patches_first_app(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "fastrelay.json",
        {
            "port": 7000,
            "history_enabled": True,
            "max_event_data_kb": 8,
            "encryption_master_key_base64": KEY32,
            "apps": [
                {"id": "1", "key": "k1", "secret": "s1"},
                {"id": "2", "key": "k2", "secret": "s2"},
            ],
        },
    )
    config = load(RELAY_CONFIG=path, RELAY_APP_SECRET="from-env", SOKETI_PORT="7001")
    assert config.port == 7001 and config.history_enabled
    assert config.encryption_master_key == bytes(range(32))
    assert [(app.id, app.secret, app.max_event_payload_kb) for app in config.apps] == [
        ("1", "from-env", 8),
        ("2", "s2", 8),
    ]


def test_workers_settings_in_a_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "fastrelay.json",
        {"workers": 4, "reuse_port": True, "redis_node_timeout": 7, "port": 7000},
    )
    config = load(RELAY_CONFIG=path)
    assert (config.workers, config.reuse_port, config.redis_node_timeout) == (4, True, 7.0)
    # What a --workers supervisor tells each worker through the environment beats the file.
    worker = load(RELAY_CONFIG=path, RELAY_WORKERS="1", RELAY_REUSE_PORT="true", RELAY_PORT="0")
    assert (worker.workers, worker.reuse_port, worker.port) == (1, True, 0)
    # ...but not a flag, which is why the supervisor takes these flags out of the workers' argv.
    assert load(["--workers", "4"], RELAY_WORKERS="1").workers == 4


def test_relay_apps_beats_file_apps(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", {"apps": [{"id": "file", "key": "f", "secret": "s"}]})
    apps = json.dumps([{"id": "env", "key": "e", "secret": "s"}])
    assert [app.id for app in load(RELAY_CONFIG=path, RELAY_APPS=apps).apps] == ["env"]


def test_toml_config_file(tmp_path: Path) -> None:
    pytest.importorskip("tomllib")
    path = write(
        tmp_path,
        "fastrelay.toml",
        """
port = 7100
log_format = "json"
ping_interval = 12.5
max_event_payload_kb = 50

[metrics]
enabled = true

[[apps]]
id = "1"
key = "key-1"
secret = "secret-1"
maxConnections = 9

[[apps.webhooks]]
url = "https://h.test/w"
event_types = ["client_event"]
filter = { channel_name_ends_with = "-orders" }
""",
    )
    config = load(["--config", path])
    assert (config.port, config.log_format, config.ping_interval) == (7100, "json", 12.5)
    assert config.metrics_enabled
    (app,) = config.apps
    assert (app.id, app.max_connections, app.max_event_payload_kb) == ("1", 9, 50)
    assert app.webhooks == (
        WebhookTarget(
            url="https://h.test/w",
            event_types=("client_event",),
            channel_name_ends_with="-orders",
        ),
    )


def test_toml_without_tomllib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "c.toml", "port = 1\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    message = fails(RELAY_CONFIG=path)
    assert message.startswith(f"RELAY_CONFIG='{path}'")
    assert "TOML" in message and "JSON" in message


# --- units, redis, master key, webhooks -----------------------------------------------------


def test_soketi_milliseconds_become_seconds() -> None:
    config = load(SOKETI_USER_AUTHENTICATION_TIMEOUT="30000", SOKETI_SHUTDOWN_GRACE_PERIOD="3000")
    assert (config.user_authentication_timeout, config.shutdown_grace_period) == (30.0, 3.0)
    config = load(RELAY_USER_AUTHENTICATION_TIMEOUT="30", RELAY_SHUTDOWN_GRACE_PERIOD="3")
    assert (config.user_authentication_timeout, config.shutdown_grace_period) == (30.0, 3.0)


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({"SOKETI_ADAPTER_DRIVER": "redis"}, "redis://127.0.0.1:6379/0"),
        (
            {
                "SOKETI_ADAPTER_DRIVER": "redis",
                "SOKETI_DB_REDIS_HOST": "db",
                "SOKETI_DB_REDIS_PORT": "6380",
                "SOKETI_DB_REDIS_USERNAME": "user",
                "SOKETI_DB_REDIS_PASSWORD": "p:w/d",
                "SOKETI_DB_REDIS_DB": "4",
            },
            "redis://user:p%3Aw%2Fd@db:6380/4",
        ),
        (
            {"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_HOST": "::1"},
            "redis://[::1]:6379/0",
        ),
        ({"SOKETI_ADAPTER_DRIVER": "local", "SOKETI_DB_REDIS_HOST": "db"}, None),
        ({"SOKETI_DB_REDIS_HOST": "db"}, None),
        (
            {"REVERB_SCALING_ENABLED": "true", "REDIS_URL": "redis://cache:6379/1"},
            "redis://cache:6379/1",
        ),
        (
            {"REVERB_SCALING_ENABLED": "true", "REDIS_HOST": "r", "REDIS_USERNAME": "u"},
            "redis://u@r:6379/0",
        ),
        ({"REVERB_SCALING_ENABLED": "false", "REDIS_URL": "redis://cache:6379/1"}, None),
        (
            {
                "RELAY_REDIS_URL": "redis://relay:1/0",
                "SOKETI_ADAPTER_DRIVER": "redis",
                "REVERB_SCALING_ENABLED": "true",
            },
            "redis://relay:1/0",
        ),
        (
            {
                "SOKETI_ADAPTER_DRIVER": "redis",
                "SOKETI_DB_REDIS_HOST": "soketi",
                "REVERB_SCALING_ENABLED": "true",
                "REDIS_HOST": "reverb",
            },
            "redis://soketi:6379/0",
        ),
        ({"RELAY_REDIS_URL": "unix:///run/redis.sock"}, "unix:///run/redis.sock"),
    ],
)
def test_redis_url(environ: dict[str, str], url: str | None) -> None:
    assert load_config([], environ).redis_url == url


def test_master_key_must_be_32_bytes() -> None:
    assert load(RELAY_ENCRYPTION_MASTER_KEY_BASE64=KEY32).encryption_master_key == bytes(range(32))
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode()
    assert load(RELAY_ENCRYPTION_MASTER_KEY_BASE64=urlsafe).encryption_master_key == b"\xfb" * 32
    short = base64.b64encode(b"x" * 16).decode()
    message = fails(RELAY_ENCRYPTION_MASTER_KEY_BASE64=short)
    assert message.startswith("RELAY_ENCRYPTION_MASTER_KEY_BASE64=<hidden, 24 characters>")
    assert "32 bytes" in message and "16 bytes" in message and short not in message
    message = fails(RELAY_ENCRYPTION_MASTER_KEY_BASE64="not base64!")
    assert "RELAY_ENCRYPTION_MASTER_KEY_BASE64" in message and "32 bytes" in message


def test_webhooks_full_shape_and_aliases() -> None:
    hooks = [
        {
            "url": "https://example.test/pusher/webhook",
            "event_types": sorted(
                [
                    "channel_occupied",
                    "channel_vacated",
                    "member_added",
                    "member_removed",
                    "client_event",
                    "cache_miss",
                    "subscription_count",
                ]
            ),
            "headers": {"X-Custom": "1", "X-Number": 2},
            "filter": {
                "channel_name_starts_with": "private-",
                "channel_name_ends_with": "-orders",
            },
        },
        {"url": "http://second.test", "event_types": []},
    ]
    expected = (
        WebhookTarget(
            url="https://example.test/pusher/webhook",
            event_types=tuple(hooks[0]["event_types"]),  # type: ignore[arg-type]
            headers=(("X-Custom", "1"), ("X-Number", "2")),
            channel_name_starts_with="private-",
            channel_name_ends_with="-orders",
        ),
        WebhookTarget(url="http://second.test"),
    )
    for name in ("RELAY_APP_WEBHOOKS", "RELAY_WEBHOOKS", "SOKETI_DEFAULT_APP_WEBHOOKS"):
        assert load_config([], {name: json.dumps(hooks)}).apps[0].webhooks == expected


@pytest.mark.parametrize(
    ("hooks", "key", "expected"),
    [
        ("{", "RELAY_APP_WEBHOOKS=", "invalid JSON"),
        ('{"url": "x"}', "RELAY_APP_WEBHOOKS=", "JSON array"),
        ('[{"event_types": []}]', "RELAY_APP_WEBHOOKS[0].url=None", "http"),
        ('[{"url": "ftp://x", "event_types": []}]', "RELAY_APP_WEBHOOKS[0].url='ftp://x'", "http"),
        (
            '[{"url": "http://x", "event_types": ["channel_occupy"]}]',
            "RELAY_APP_WEBHOOKS[0].event_types='channel_occupy'",
            "channel_occupied",
        ),
        (
            '[{"lambda_function": "f", "event_types": []}]',
            "RELAY_APP_WEBHOOKS[0].lambda_function='f'",
            "Lambda",
        ),
        (
            '[{"url": "http://x", "event_types": [], "filter": {"starts_with": "a"}}]',
            "RELAY_APP_WEBHOOKS[0].filter.starts_with='a'",
            "channel_name_starts_with",
        ),
        (
            '[{"url": "http://x", "event_types": [], "headers": ["X-A"]}]',
            "RELAY_APP_WEBHOOKS[0].headers=['X-A']",
            "header",
        ),
    ],
)
def test_bad_webhooks(hooks: str, key: str, expected: str) -> None:
    message = fails(RELAY_APP_WEBHOOKS=hooks)
    assert message.startswith(key) and expected in message


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "environ", "start", "expected"),
    [
        ([], {"RELAY_PORT": "abc"}, "RELAY_PORT='abc': expected", "integer from 0 to 65535"),
        ([], {"RELAY_PORT": "65536"}, "RELAY_PORT='65536'", "0 to 65535"),
        ([], {"SOKETI_PORT": "-1"}, "SOKETI_PORT='-1'", "0 to 65535"),
        ([], {"REVERB_SERVER_PORT": "80.5"}, "REVERB_SERVER_PORT='80.5'", "integer"),
        (["--port", "abc"], {}, "--port='abc'", "0 to 65535"),
        (["--metrics-port=99999"], {}, "--metrics-port='99999'", "0 to 65535"),
        ([], {"RELAY_DEBUG": "maybe"}, "RELAY_DEBUG='maybe'", "boolean"),
        ([], {"SOKETI_DEBUG": "2"}, "SOKETI_DEBUG='2'", "true/false"),
        ([], {"RELAY_PING_INTERVAL": "0"}, "RELAY_PING_INTERVAL='0'", "> 0"),
        ([], {"RELAY_PONG_TIMEOUT": "soon"}, "RELAY_PONG_TIMEOUT='soon'", "seconds"),
        ([], {"RELAY_PING_INTERVAL": "nan"}, "RELAY_PING_INTERVAL='nan'", "number"),
        ([], {"RELAY_ACTIVITY_TIMEOUT": "1.5"}, "RELAY_ACTIVITY_TIMEOUT='1.5'", "integer"),
        (
            [],
            {"SOKETI_SHUTDOWN_GRACE_PERIOD": "3s"},
            "SOKETI_SHUTDOWN_GRACE_PERIOD='3s'",
            "milliseconds",
        ),
        ([], {"RELAY_LOG_LEVEL": "loud"}, "RELAY_LOG_LEVEL='loud'", "debug, info, warning, error"),
        (["--log-format", "xml"], {}, "--log-format='xml'", "text, json"),
        ([], {"RELAY_APP_MAX_CONNECTIONS": "-2"}, "RELAY_APP_MAX_CONNECTIONS='-2'", "-1"),
        ([], {"RELAY_MAX_EVENT_DATA_KB": "0"}, "RELAY_MAX_EVENT_DATA_KB='0'", "KiB > 0"),
        ([], {"RELAY_MAX_BATCH_SIZE": "0"}, "RELAY_MAX_BATCH_SIZE='0'", ">= 1"),
        ([], {"RELAY_APP_ID": "a b"}, "RELAY_APP_ID='a b'", "without spaces"),
        ([], {"REVERB_APP_KEY": "a/b"}, "REVERB_APP_KEY='a/b'", "'/'"),
        (
            [],
            {"REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM": "some"},
            "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM='some'",
            "none, members, all",
        ),
        (
            [],
            {"REVERB_APP_RATE_LIMITING_ENABLED": "1", "REVERB_APP_RATE_LIMIT_DECAY_SECONDS": "0"},
            "REVERB_APP_RATE_LIMIT_DECAY_SECONDS='0'",
            ">= 1",
        ),
        ([], {"RELAY_REDIS_URL": "http://r:1"}, "RELAY_REDIS_URL='http://r:1'", "redis://"),
        (
            [],
            {"RELAY_REDIS_URL": "redis://u:secret@r:notaport/0"},
            "RELAY_REDIS_URL='redis://u:***@r:notaport/0'",
            "redis://",
        ),
        ([], {"SOKETI_ADAPTER_DRIVER": "nats"}, "SOKETI_ADAPTER_DRIVER='nats'", "local or redis"),
        (
            [],
            {"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_PORT": "x"},
            "SOKETI_DB_REDIS_PORT='x'",
            "1 to 65535",
        ),
        (
            [],
            {"REVERB_SCALING_ENABLED": "true", "REDIS_DB": "-1"},
            "REDIS_DB='-1'",
            "integer >= 0",
        ),
        ([], {"RELAY_PATH_PREFIX": "/a b"}, "RELAY_PATH_PREFIX='/a b'", "URL path"),
        ([], {"RELAY_WORKERS": "0"}, "RELAY_WORKERS='0'", "integer >= 1"),
        (["--workers", "two"], {}, "--workers='two'", "integer >= 1"),
        ([], {"RELAY_REUSE_PORT": "maybe"}, "RELAY_REUSE_PORT='maybe'", "boolean"),
        (["--reuse-port=yes"], {}, "argument --reuse-port", "ignored explicit argument"),
        (
            [],
            {"RELAY_REDIS_NODE_TIMEOUT": "0.1"},
            "RELAY_REDIS_NODE_TIMEOUT='0.1'",
            "seconds >= 0.5",
        ),
        (["--redis-node-timeout", "soon"], {}, "--redis-node-timeout='soon'", "seconds"),
        ([], {"RELAY_METRICS_PREFIX": "bad-prefix"}, "RELAY_METRICS_PREFIX='bad-prefix'", "name"),
        ([], {"RELAY_APP_ALLOWED_ORIGINS": "[]"}, "RELAY_APP_ALLOWED_ORIGINS='[]'", "non-empty"),
        ([], {"RELAY_SSL_CERT": "c.pem"}, "RELAY_SSL_CERT='c.pem'", "RELAY_SSL_KEY"),
        (["--ssl-key", "k.pem"], {}, "--ssl-key='k.pem'", "RELAY_SSL_CERT"),
        (
            [],
            {"RELAY_METRICS_ENABLED": "true", "RELAY_METRICS_PORT": "6001"},
            "RELAY_METRICS_PORT='6001'",
            "different ports",
        ),
        ([], {"RELAY_APPS": "[{"}, "RELAY_APPS='[{'", "invalid JSON"),
        ([], {"RELAY_APPS": "[]"}, "RELAY_APPS='[]'", "non-empty JSON array"),
        ([], {"RELAY_APPS": '{"id": "1"}'}, "RELAY_APPS=", "JSON array"),
        ([], {"RELAY_APPS": '["x"]'}, "RELAY_APPS[0]='x'", "app object"),
        (
            [],
            {"RELAY_APPS": '[{"id": "1", "key": "k"}]'},
            "RELAY_APPS[0]: missing the app secret",
            "'secret' or 'AppSecret'",
        ),
        (
            [],
            {"RELAY_APPS": '[{"id": "1", "key": "k", "secret": "s", "maxConections": 1}]'},
            "RELAY_APPS[0].maxConections=1",
            "did you mean 'maxConnections'",
        ),
        (
            [],
            {"RELAY_APPS": '[{"id": "1", "key": "k", "secret": "s", "maxConnections": "lots"}]'},
            "RELAY_APPS[0].maxConnections='lots'",
            "-1 = unlimited",
        ),
        (
            [],
            {"RELAY_APPS": '[{"id": "1", "app_id": "2", "key": "k", "secret": "s"}]'},
            "RELAY_APPS[0].app_id='2'",
            "only one of RELAY_APPS[0].id and RELAY_APPS[0].app_id",
        ),
        (
            [],
            {"RELAY_APPS": '[{"id": "1", "key": "k", "secret": "s", "enabled": "on"}]'},
            "RELAY_APPS[0].enabled='on'",
            "boolean",
        ),
        (
            [],
            {"RELAY_APPS": '[{"app_id": "1", "key": "k", "secret": "s", "rate_limiting": 5}]'},
            "RELAY_APPS[0].rate_limiting=5",
            "max_attempts",
        ),
        (
            [],
            {
                "RELAY_APPS": '[{"app_id": "1", "key": "k", "secret": "s",'
                ' "rate_limiting": {"enabled": true, "max_attempts": 0}}]'
            },
            "RELAY_APPS[0].rate_limiting.max_attempts=0",
            ">= 1",
        ),
        (["--bogus"], {}, "unrecognized arguments: --bogus", ""),
        (["--port"], {}, "argument --port: expected one argument", ""),
        (["--po", "1"], {}, "unrecognized arguments: --po", ""),
        ([], {"RELAY_CONFIG": "/nonexistent/fastrelay.json"}, "RELAY_CONFIG=", "not found"),
        (["--config", "/nonexistent.toml"], {}, "--config='/nonexistent.toml'", "not found"),
    ],
)
def test_bad_values_name_key_and_value(
    argv: list[str], environ: dict[str, str], start: str, expected: str
) -> None:
    message = fails(argv, **environ)
    assert message.startswith(start), message
    assert expected in message, message


def test_secret_values_are_not_echoed() -> None:
    message = fails(RELAY_APPS='[{"id": "1", "key": "k", "secret": 1.5}]')
    assert message.startswith("RELAY_APPS[0].secret=<hidden")


@pytest.mark.parametrize(
    ("apps", "start"),
    [
        (
            [{"id": "1", "key": "a", "secret": "s"}, {"id": "1", "key": "b", "secret": "s"}],
            "RELAY_APPS[1].id='1': expected a unique app id (app 0 has it too)",
        ),
        (
            [{"id": "1", "key": "a", "secret": "s"}, {"id": "2", "key": "a", "secret": "s"}],
            "RELAY_APPS[1].key='a': expected a unique app key",
        ),
        (
            [{"id": 7, "key": "a", "secret": "s"}, {"id": "7", "key": "b", "secret": "s"}],
            "RELAY_APPS[1].id='7'",
        ),
    ],
)
def test_duplicate_apps(apps: list[dict[str, object]], start: str) -> None:
    assert fails(RELAY_APPS=json.dumps(apps)).startswith(start)


def test_duplicate_made_by_a_flag_names_the_flag() -> None:
    apps = [{"id": "1", "key": "a", "secret": "s"}, {"id": "2", "key": "b", "secret": "s"}]
    message = fails(["--app-key", "b"], RELAY_APPS=json.dumps(apps))
    assert message.startswith("RELAY_APPS[1].key='b': expected a unique app key (app 0 has")


@pytest.mark.parametrize(
    ("content", "start", "expected"),
    [
        ({"port": "abc"}, "{path}: port='abc'", "0 to 65535"),
        ({"eventLimits.maxNameLength": 0}, "{path}: eventLimits.maxNameLength=0", ">= 1"),
        ({"prot": 1}, "{path}: prot=1", "did you mean 'port'"),
        ({"apps": {"id": 1}}, "{path}: apps.id=1", "known setting"),
        ({"apps": []}, "{path}: apps=[]", "non-empty list"),
        ({"apps": [{"id": "1", "key": "k"}]}, "{path}: apps[0]: missing the app secret", ""),
        ({"shutdownGracePeriod": "x"}, "{path}: shutdownGracePeriod='x'", "milliseconds"),
        ([1, 2], "RELAY_CONFIG='{path}'", "object"),
        ("{not json", "RELAY_CONFIG='{path}'", "valid JSON"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: Any, start: str, expected: str) -> None:
    path = write(tmp_path, "bad.json", content)
    message = fails(RELAY_CONFIG=path)
    assert message.startswith(start.format(path=path)), message
    assert expected in message, message


def test_bad_toml_file(tmp_path: Path) -> None:
    pytest.importorskip("tomllib")
    path = write(tmp_path, "bad.toml", "port = \n")
    message = fails(["--config", path])
    assert message.startswith(f"--config='{path}'") and "TOML" in message


def test_soketi_options_fastrelay_lacks_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "soketi.json",
        {"cluster.port": 1, "queue": {"driver": "sync"}, "cors": {"origin": ["*"]}},
    )
    assert load(RELAY_CONFIG=path) == Config()


# --- unknown variables ----------------------------------------------------------------------


def test_unknown_variables() -> None:
    environ = {
        "RELAY_PORT": "1",
        "RELAY_PROT": "1",
        "SOKETI_MODE": "full",
        "SOKETI_DB_REDIS_HOST": "x",
        "REVERB_APP_ID": "1",
        "REVERB_HOST": "ws.test",
        "REVERB_PORT": "443",
        "REVERB_SCHEME": "https",
        "REVERB_SERVER_PROT": "1",
        "REDIS_URL": "redis://x:1/0",
        "HOME": "/root",
        "RELAY_WEBHOOKS": "[]",
    }
    assert unknown_variables(environ) == ["RELAY_PROT", "REVERB_SERVER_PROT", "SOKETI_MODE"]
    assert unknown_variables({}) == []


# --- the table ------------------------------------------------------------------------------


def test_every_config_field_has_a_variable() -> None:
    fields = {field.name for field in dataclasses.fields(Config)} - {"apps"}
    covered = {var.field for var in VARIABLES if var.scope == "server"}
    assert fields == covered


def test_every_app_field_is_reachable() -> None:
    fields = {field.name for field in dataclasses.fields(App) if field.init}
    covered = {var.field for var in VARIABLES if var.scope in ("app", "limit")}
    assert fields == covered


def test_table_is_consistent() -> None:
    names = [name for var in VARIABLES for name in (var.name, *var.also)]
    assert len(names) == len(set(names))
    assert all(name.startswith("RELAY_") for name in names)
    for var in VARIABLES:
        assert all(name.startswith("SOKETI_") for name in var.soketi)
        assert all(name.startswith("REVERB_") for name in var.reverb)
        if var.scope in ("server", "limit"):
            assert all(name in _SOKETI_PATHS for name in var.soketi), var.name
    keys = [key for var in VARIABLES if var.scope != "meta" for key in var.own_file_keys]
    assert len(keys) == len(set(keys))


def test_parser_flags_come_from_the_table() -> None:
    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for var in VARIABLES:
        if var.flag:
            assert var.flag in flags


def _mapping_is_read_only(mapping: Mapping[str, str]) -> bool:
    try:
        mapping["x"] = "y"  # type: ignore[index]
    except TypeError:
        return True
    return False


def test_module_tables_are_read_only() -> None:
    assert _mapping_is_read_only(_SOKETI_PATHS)
    assert isinstance(VARIABLES, tuple)
