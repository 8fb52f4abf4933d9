"""Load the configuration from the command line, the environment and a config file.

Precedence, highest first::

    command-line flags > RELAY_* > SOKETI_* > REVERB_* > config file (JSON or TOML) > defaults

One table, :data:`VARIABLES`, drives everything: the loader reads it, ``--help`` prints it and
:func:`unknown_variables` checks names against it. Defaults come from :mod:`fastrelay.config`.

Apps come from, in this order: ``RELAY_APPS`` (a JSON array); the config file's ``apps`` list (or
soketi's ``appManager.array.apps``); otherwise one app built from the single-app variables
(``RELAY_APP_*``, ``SOKETI_DEFAULT_APP_*``, ``REVERB_APP_*``). With ``RELAY_APPS`` the single-app
variables are ignored; with apps from the file they patch the first app, as soketi's
``SOKETI_DEFAULT_APP_*`` do. Single-app command-line flags always patch the first app.

Everything here is a pure function of (argv, environ, config file contents): no global mutable
state, nothing printed, except that ``--help`` and ``--version`` print and raise ``SystemExit``
like any argparse program.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import difflib
import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

from ._version import __version__
from .config import DEFAULT_APP, App, Config, WebhookTarget
from .errors import ConfigError

__all__ = [
    "VARIABLES",
    "WEBHOOK_EVENT_TYPES",
    "Var",
    "build_parser",
    "help_epilog",
    "load_config",
    "unknown_variables",
]

Parser = Callable[[str, object], Any]
"""Turns ``(key as the user wrote it, raw value)`` into a typed value or raises ConfigError."""

PREFIXES = ("RELAY_", "SOKETI_", "REVERB_")
WEBHOOK_EVENT_TYPES = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)

# ---------------------------------------------------------------------------------------------
# Values and messages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """A value as found in one source, with the key the user wrote (for error messages)."""

    key: str
    value: object


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _fail(key: str, value: object, expected: str, *, secret: bool = False) -> ConfigError:
    """``KEY='value': expected …`` on one line; a secret value is replaced by its length."""
    shown = f"<hidden, {len(str(value))} characters>" if secret else _show(value)
    return ConfigError(_one_line(f"{key}={shown}: expected {expected}"))


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _int(lo: int, hi: int | None = None, unit: str = "") -> Parser:
    what = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
    if unit:
        what += f" ({unit})"

    def parse(key: str, value: object) -> int:
        number = _as_int(value)
        if number is None or number < lo or (hi is not None and number > hi):
            raise _fail(key, value, what)
        return number

    return parse


def _float(lo: float = 0.0, *, strict: bool = False, unit: str = "seconds") -> Parser:
    what = f"a number of {unit} {'>' if strict else '>='} {lo:g}"

    def parse(key: str, value: object) -> float:
        number = _as_float(value)
        if number is None or number < lo or (strict and number == lo):
            raise _fail(key, value, what)
        return number

    return parse


def _milliseconds(*, strict: bool) -> Parser:
    """soketi's durations: milliseconds in, seconds out."""
    inner = _float(0.0, strict=strict, unit="milliseconds")

    def parse(key: str, value: object) -> float:
        return float(inner(key, value)) / 1000.0

    return parse


def _megabytes(key: str, value: object) -> int:
    """soketi's ``httpApi.requestLimitInMb``: megabytes in, bytes out."""
    return int(_float(0.0, strict=True, unit="megabytes")(key, value) * 1024 * 1024)


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _fail(key, value, "a boolean (true/false, 1/0, yes/no)")


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, value, "a non-empty string")
    return value.strip()


def _path(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        raise _fail(key, value, "a file path")
    return value.strip() or None


def _passphrase(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        raise _fail(key, value, "a string", secret=True)
    return value or None


def _choice(choices: Mapping[str, Any], what: str) -> Parser:
    def parse(key: str, value: object) -> Any:
        if isinstance(value, str) and value.strip().lower() in choices:
            return choices[value.strip().lower()]
        raise _fail(key, value, what)

    return parse


_log_level = _choice(
    {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning", "error": "error"},
    "one of debug, info, warning, error",
)
_log_format = _choice({"text": "text", "json": "json"}, "one of text, json")
_accept_client_events_from = _choice(
    {"none": False, "members": True, "all": True}, "one of none, members, all"
)


def _ident(key: str, value: object) -> str:
    """An app id or key: it travels in URL paths, so no spaces, slashes, '?' or '#'."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if (
        not isinstance(value, str)
        or not value
        or any(char.isspace() or char in "/?#" for char in value)
    ):
        raise _fail(key, value, "a non-empty string without spaces, '/', '?' or '#'")
    return value


def _secret(key: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a non-empty string", secret=True)
    return value


def _path_prefix(key: str, value: object) -> str:
    """``ws``, ``/ws`` and ``/ws/`` all become ``/ws``; ``/`` and ``""`` become ``""``."""
    if not isinstance(value, str) or any(char.isspace() or char in "?#" for char in value):
        raise _fail(key, value, "a URL path such as /ws (no spaces, '?' or '#')")
    trimmed = value.strip("/")
    return "/" + trimmed if trimmed else ""


def _metrics_prefix(key: str, value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?", value):
        raise _fail(key, value, "a Prometheus metric name prefix such as fastrelay_")
    return value


def _redis_prefix(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(key, value, "a string")
    return value


def _mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _redis_url(key: str, value: object) -> str:
    expected = "a URL such as redis://host:6379/0 (schemes redis, rediss, unix)"
    if not isinstance(value, str):
        raise _fail(key, value, expected)
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        ok = ok or (parts.scheme == "unix" and bool(parts.path))
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(_one_line(f"{key}={_show(_mask_url(url))}: expected {expected}"))
    return url


def _master_key(key: str, value: object) -> bytes:
    expected = "the base64 encoding of exactly 32 bytes (e.g. from: openssl rand -base64 32)"
    if not isinstance(value, str):
        raise _fail(key, value, expected, secret=True)
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            decoded = base64.urlsafe_b64decode(text.encode("ascii"))
        else:
            decoded = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _fail(key, value, expected, secret=True) from None
    if len(decoded) != 32:
        raise _fail(key, value, f"{expected}; it decodes to {len(decoded)} bytes", secret=True)
    return decoded


def _json(key: str, value: object, what: str) -> object:
    """Environment values holding JSON arrive as strings; file values are already parsed."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise _fail(key, value, f"{what} (invalid JSON: {exc})") from None


def _origins(key: str, value: object) -> tuple[str, ...]:
    expected = "a non-empty list of origins: a JSON array or a comma-separated list, e.g. *"
    if isinstance(value, str) and not value.lstrip().startswith("["):
        items: object = [item.strip() for item in value.split(",") if item.strip()]
    else:
        items = _json(key, value, expected)
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(item, str) and item.strip() for item in items)
    ):
        raise _fail(key, value, expected)
    return tuple(item.strip() for item in items)


def _webhooks(key: str, value: object) -> tuple[WebhookTarget, ...]:
    """soketi's webhook list: ``[{"url","event_types","headers","filter":{…}}]``."""
    expected = 'a JSON array of webhooks [{"url": …, "event_types": […]}]'
    items = _json(key, value, expected)
    if not isinstance(items, list):
        raise _fail(key, value, expected)
    return tuple(_webhook(f"{key}[{index}]", item) for index, item in enumerate(items))


def _webhook(key: str, item: object) -> WebhookTarget:
    if not isinstance(item, Mapping):
        raise _fail(key, item, 'a webhook object {"url": …, "event_types": […]}')
    for name in item:
        if name not in ("url", "event_types", "headers", "filter"):
            raise _fail(
                f"{key}.{name}",
                item[name],
                "one of the webhook keys url, event_types, headers, filter"
                " (AWS Lambda webhooks are not supported)",
            )
    url = item.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise _fail(f"{key}.url", url, "an http:// or https:// URL")
    types = item.get("event_types")
    known = ", ".join(sorted(WEBHOOK_EVENT_TYPES))
    if not isinstance(types, list) or not all(isinstance(name, str) for name in types):
        raise _fail(f"{key}.event_types", types, f"a list of event types from: {known}")
    for name in types:
        if name not in WEBHOOK_EVENT_TYPES:
            raise _fail(f"{key}.event_types", name, f"one of: {known}")
    headers = item.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(name, str) and isinstance(text, (str, int, float))
        for name, text in headers.items()
    ):
        raise _fail(f"{key}.headers", headers, "an object of header names to string values")
    starts: object = None
    ends: object = None
    if item.get("filter") is not None:
        rules = item["filter"]
        if not isinstance(rules, Mapping):
            raise _fail(f"{key}.filter", rules, "an object with channel_name_starts_with/ends_with")
        for name, rule in rules.items():
            if name not in ("channel_name_starts_with", "channel_name_ends_with"):
                raise _fail(
                    f"{key}.filter.{name}",
                    rule,
                    "one of the filter keys channel_name_starts_with, channel_name_ends_with",
                )
            if rule is not None and not isinstance(rule, str):
                raise _fail(f"{key}.filter.{name}", rule, "a string")
        starts = rules.get("channel_name_starts_with") or None
        ends = rules.get("channel_name_ends_with") or None
    return WebhookTarget(
        url=url,
        event_types=tuple(types),
        headers=tuple((name, str(text)) for name, text in headers.items()),
        channel_name_starts_with=starts if isinstance(starts, str) else None,
        channel_name_ends_with=ends if isinstance(ends, str) else None,
    )


_UNLIMITED = _int(-1, unit="-1 = unlimited")
_POSITIVE = _int(1)
_KB = _float(0.0, strict=True, unit="KiB")

# ---------------------------------------------------------------------------------------------
# Composite aliases: several soketi / Reverb variables make one fastrelay value
# ---------------------------------------------------------------------------------------------

Lookup = Callable[[str], _Raw | None]
Resolver = Callable[[Lookup], tuple[_Raw, Any] | None]


def _redis_from_parts(lookup: Lookup, prefix: str) -> str:
    """``redis://user:pass@host:port/db`` from HOST, PORT, USERNAME, PASSWORD and DB variables."""
    host = lookup(prefix + "HOST")
    port = lookup(prefix + "PORT")
    user = lookup(prefix + "USERNAME")
    password = lookup(prefix + "PASSWORD")
    db = lookup(prefix + "DB")
    host_text = _text(host.key, host.value) if host else "127.0.0.1"
    port_number = _int(1, 65535)(port.key, port.value) if port else 6379
    db_number = _int(0)(db.key, db.value) if db else 0
    if ":" in host_text and not host_text.startswith("["):
        host_text = f"[{host_text}]"
    auth = ""
    if user or password:
        user_text = quote(str(user.value), safe="") if user else ""
        pass_text = ":" + quote(str(password.value), safe="") if password else ""
        auth = f"{user_text}{pass_text}@"
    return f"redis://{auth}{host_text}:{port_number}/{db_number}"


def _soketi_redis(lookup: Lookup) -> tuple[_Raw, Any] | None:
    driver = lookup("SOKETI_ADAPTER_DRIVER")
    if driver is None:
        return None
    expected = "local or redis (fastrelay scales across nodes with Redis only)"
    kind = _choice({"local": "local", "redis": "redis"}, expected)(driver.key, driver.value)
    if kind != "redis":
        return None
    return driver, _redis_from_parts(lookup, "SOKETI_DB_REDIS_")


def _reverb_redis(lookup: Lookup) -> tuple[_Raw, Any] | None:
    enabled = lookup("REVERB_SCALING_ENABLED")
    if enabled is None or not _bool(enabled.key, enabled.value):
        return None
    url = lookup("REDIS_URL")
    if url is not None:
        return url, _redis_url(url.key, url.value)
    return enabled, _redis_from_parts(lookup, "REDIS_")


def _per_second(attempts: int, decay_seconds: int) -> int:
    return max(1, math.ceil(attempts / decay_seconds))


def _reverb_rate_limit(lookup: Lookup) -> tuple[_Raw, Any] | None:
    enabled = lookup("REVERB_APP_RATE_LIMITING_ENABLED")
    if enabled is None or not _bool(enabled.key, enabled.value):
        return None
    attempts = lookup("REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS")
    decay = lookup("REVERB_APP_RATE_LIMIT_DECAY_SECONDS")
    attempts_number = _POSITIVE(attempts.key, attempts.value) if attempts else 60
    decay_number = _POSITIVE(decay.key, decay.value) if decay else 60
    return enabled, _per_second(attempts_number, decay_number)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Var:
    """One setting: its RELAY_* variable, where it lands, its aliases and its flag.

    ``scope`` is ``server`` (a :class:`Config` field), ``limit`` (the default of an
    :class:`App` field for every app), ``app`` (a field of the single app) or ``meta``
    (RELAY_CONFIG, RELAY_APPS).
    """

    name: str
    scope: str
    field: str
    parse: Parser
    help: str
    soketi: tuple[str, ...] = ()
    reverb: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    flag: str | None = None
    metavar: str | None = None
    unit: str = ""
    soketi_unit: str = ""
    soketi_parse: Parser | None = None
    reverb_parse: Parser | None = None
    soketi_resolve: Resolver | None = None
    reverb_resolve: Resolver | None = None
    soketi_file: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()
    allow_empty: bool = False
    aliases_doc: str | None = None

    @property
    def default(self) -> object:
        if self.scope == "server":
            return getattr(_DEFAULT_CONFIG, self.field)
        if self.scope in ("limit", "app"):
            return getattr(DEFAULT_APP, self.field)
        return None

    @property
    def default_text(self) -> str:
        value = self.default
        if value is None or isinstance(value, bytes):
            return "unset"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value) or "[]"
        text = '""' if value == "" else str(value)
        return f"{text} {self.unit}" if self.unit else text

    @property
    def aliases_text(self) -> str:
        if self.aliases_doc is not None:
            return self.aliases_doc
        soketi = [
            name + (f" ({self.soketi_unit})" if self.soketi_unit else "") for name in self.soketi
        ]
        return ", ".join([*soketi, *self.reverb])

    @property
    def own_file_keys(self) -> tuple[str, ...]:
        """Keys naming this setting in a config file, besides soketi's dotted ones."""
        derived = self.name.removeprefix("RELAY_").lower()
        return tuple(dict.fromkeys((self.field, derived, *self.file_keys)))

    @property
    def is_boolean(self) -> bool:
        return self.parse is _bool


_DEFAULT_CONFIG = Config()


def _server(name: str, field: str, parse: Parser, help: str, **kw: Any) -> Var:
    return Var(name=name, scope="server", field=field, parse=parse, help=help, **kw)


def _limit(name: str, field: str, parse: Parser, help: str, **kw: Any) -> Var:
    return Var(name=name, scope="limit", field=field, parse=parse, help=help, **kw)


def _app(name: str, field: str, parse: Parser, help: str, **kw: Any) -> Var:
    return Var(name=name, scope="app", field=field, parse=parse, help=help, **kw)


_PORT = _int(0, 65535)

VARIABLES: tuple[Var, ...] = (
    # Files and apps
    Var(
        "RELAY_CONFIG",
        "meta",
        "config",
        _text,
        "JSON or TOML config file (.toml = TOML); soketi's dotted keys accepted",
        flag="--config",
        metavar="FILE",
        aliases_doc="soketi start --config=FILE",
    ),
    Var(
        "RELAY_APPS",
        "meta",
        "apps",
        _text,
        "JSON array of apps (fastrelay, soketi or Reverb keys); replaces the RELAY_APP_* variables",
        aliases_doc="soketi appManager.array.apps / Reverb apps (config file)",
    ),
    # Server
    _server("RELAY_HOST", "host", _text, "address to listen on", soketi=("SOKETI_HOST",),
            reverb=("REVERB_SERVER_HOST",), flag="--host", metavar="HOST"),
    _server("RELAY_PORT", "port", _PORT, "port for WebSocket and HTTP API (0 = any free port)",
            soketi=("SOKETI_PORT",), reverb=("REVERB_SERVER_PORT",), flag="--port", metavar="N"),
    _server("RELAY_WORKERS", "workers", _POSITIVE,
            "number of server processes sharing the port (SO_REUSEPORT); more than 1 needs "
            "RELAY_REDIS_URL", flag="--workers", metavar="N"),
    _server("RELAY_REUSE_PORT", "reuse_port", _bool,
            "listen with SO_REUSEPORT so several processes share the port", flag="--reuse-port"),
    _server("RELAY_PATH_PREFIX", "path_prefix", _path_prefix, "URL path prefix of every route",
            soketi=("SOKETI_PATH_PREFIX",), reverb=("REVERB_SERVER_PATH",), flag="--path-prefix",
            metavar="PATH", allow_empty=True),
    _server("RELAY_ACTIVITY_TIMEOUT", "activity_timeout", _int(1, unit="seconds"),
            "activity_timeout advertised to clients", reverb=("REVERB_APP_ACTIVITY_TIMEOUT",),
            flag="--activity-timeout", metavar="S", unit="s"),
    _server("RELAY_PING_INTERVAL", "ping_interval", _float(0.0, strict=True),
            "server pusher:ping after this much inbound silence",
            reverb=("REVERB_APP_PING_INTERVAL",), flag="--ping-interval", metavar="S", unit="s"),
    _server("RELAY_PONG_TIMEOUT", "pong_timeout", _float(0.0, strict=True),
            "close 4201 when a server ping is not answered within this", flag="--pong-timeout",
            metavar="S", unit="s"),
    _server("RELAY_MAX_MESSAGE_SIZE", "max_message_size", _int(1, unit="bytes"),
            "largest inbound WebSocket message (close 1009 above)",
            reverb=("REVERB_APP_MAX_MESSAGE_SIZE",), flag="--max-message-size", metavar="BYTES",
            unit="B"),
    _server("RELAY_MAX_REQUEST_SIZE", "max_request_size", _int(1, unit="bytes"),
            "largest HTTP API request body", reverb=("REVERB_MAX_REQUEST_SIZE",),
            soketi_file=("httpApi.requestLimitInMb",), soketi_parse=_megabytes,
            flag="--max-request-size", metavar="BYTES", unit="B",
            aliases_doc="soketi httpApi.requestLimitInMb (config file, MB), "
                        "REVERB_MAX_REQUEST_SIZE"),
    _server("RELAY_CACHE_TTL", "cache_ttl", _float(0.0, strict=True),
            "how long a cache channel keeps its last event", soketi=("SOKETI_CHANNEL_CACHE_TTL",),
            unit="s"),
    _server("RELAY_USER_AUTHENTICATION_TIMEOUT", "user_authentication_timeout",
            _float(0.0, strict=True), "sign-in deadline for apps with user authentication",
            soketi=("SOKETI_USER_AUTHENTICATION_TIMEOUT",), soketi_unit="ms",
            soketi_parse=_milliseconds(strict=True), unit="s"),
    _server("RELAY_REQUIRE_PROTOCOL", "require_protocol", _bool,
            "refuse connections without ?protocol= (error 4008)",
            flag="--require-protocol"),
    _server("RELAY_API_TIMESTAMP_TOLERANCE", "api_timestamp_tolerance",
            _int(0, unit="seconds, 0 = off"), "HTTP API auth_timestamp window", unit="s"),
    _server("RELAY_ENCRYPTION_MASTER_KEY_BASE64", "encryption_master_key", _master_key,
            "base64 of 32 bytes: derives private-encrypted- channel keys"),
    _server("RELAY_SHUTDOWN_GRACE_PERIOD", "shutdown_grace_period", _float(0.0),
            "on SIGTERM, wait this long for webhooks to flush",
            soketi=("SOKETI_SHUTDOWN_GRACE_PERIOD",), soketi_unit="ms",
            soketi_parse=_milliseconds(strict=False), flag="--shutdown-grace-period", metavar="S",
            unit="s"),
    _server("RELAY_WRITE_BUFFER_HIGH_WATER", "write_buffer_high_water", _int(1, unit="bytes"),
            "per-connection send buffer high-water mark", unit="B"),
    _server("RELAY_WEBHOOK_BATCHING", "webhook_batching", _bool,
            "collect webhooks per app and URL into one request",
            soketi=("SOKETI_WEBHOOKS_BATCHING",)),
    _server("RELAY_WEBHOOK_BATCHING_DURATION", "webhook_batching_duration_ms",
            _int(1, unit="milliseconds"), "how long webhook batching collects",
            soketi=("SOKETI_WEBHOOKS_BATCHING_DURATION",),
            unit="ms"),
    _server("RELAY_WEBHOOK_GRACE_PERIOD", "webhook_grace_period", _float(0.0),
            "hold channel_vacated/member_removed webhooks this long; a quick return cancels both",
            unit="s"),
    _server("RELAY_HISTORY_ENABLED", "history_enabled", _bool, "record channel event history",
            flag="--history"),
    _server("RELAY_HISTORY_MAX_EVENTS", "history_max_events", _POSITIVE,
            "events kept per channel"),
    _server("RELAY_HISTORY_MAX_AGE", "history_max_age", _float(0.0, strict=True),
            "age after which history events expire", unit="s"),
    _server("RELAY_HISTORY_MAX_CHANNELS", "history_max_channels", _POSITIVE,
            "channels with history per app"),
    _server("RELAY_HISTORY_CLIENT_EVENTS", "history_client_events", _bool,
            "record client events in history too"),
    _server("RELAY_EVENT_LOG_ENABLED", "event_log_enabled", _bool, "keep the server event log"),
    _server("RELAY_EVENT_LOG_SIZE", "event_log_size", _POSITIVE, "entries in the event log"),
    _server("RELAY_METRICS_ENABLED", "metrics_enabled", _bool, "run the metrics server",
            soketi=("SOKETI_METRICS_ENABLED",), flag="--metrics"),
    _server("RELAY_METRICS_HOST", "metrics_host", _text, "metrics server address",
            soketi=("SOKETI_METRICS_HOST",), flag="--metrics-host", metavar="HOST"),
    _server("RELAY_METRICS_PORT", "metrics_port", _PORT, "metrics server port (0: any free)",
            soketi=("SOKETI_METRICS_SERVER_PORT",), flag="--metrics-port", metavar="N"),
    _server("RELAY_METRICS_PREFIX", "metrics_prefix", _metrics_prefix,
            "prefix of every Prometheus metric name",
            soketi=("SOKETI_METRICS_PROMETHEUS_PREFIX",), allow_empty=True),
    _server("RELAY_REDIS_URL", "redis_url", _redis_url,
            "Redis for multi-node pub/sub; unset = single node",
            soketi=("SOKETI_ADAPTER_DRIVER", "SOKETI_DB_REDIS_HOST", "SOKETI_DB_REDIS_PORT",
                    "SOKETI_DB_REDIS_USERNAME", "SOKETI_DB_REDIS_PASSWORD", "SOKETI_DB_REDIS_DB"),
            reverb=("REVERB_SCALING_ENABLED",),
            soketi_resolve=_soketi_redis, reverb_resolve=_reverb_redis,
            flag="--redis-url", metavar="URL",
            aliases_doc="SOKETI_ADAPTER_DRIVER=redis + SOKETI_DB_REDIS_HOST, SOKETI_DB_REDIS_PORT, "
                        "SOKETI_DB_REDIS_USERNAME, SOKETI_DB_REDIS_PASSWORD, SOKETI_DB_REDIS_DB; "
                        "REVERB_SCALING_ENABLED=true + REDIS_URL, or REDIS_HOST, REDIS_PORT, "
                        "REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB"),
    _server("RELAY_REDIS_PREFIX", "redis_prefix", _redis_prefix, "prefix of Redis channel names",
            soketi=("SOKETI_ADAPTER_REDIS_PREFIX", "SOKETI_DB_REDIS_KEY_PREFIX"),
            reverb=("REVERB_SCALING_CHANNEL",), flag="--redis-prefix", metavar="PREFIX",
            allow_empty=True),
    _server("RELAY_REDIS_NODE_TIMEOUT", "redis_node_timeout", _float(0.5),
            "a node silent in Redis this long is dead: its presence members are removed",
            flag="--redis-node-timeout", metavar="SECONDS", unit="s"),
    _server("RELAY_SSL_CERT", "ssl_cert", _path, "TLS certificate (PEM); needs RELAY_SSL_KEY",
            soketi=("SOKETI_SSL_CERT",), flag="--ssl-cert", metavar="FILE"),
    _server("RELAY_SSL_KEY", "ssl_key", _path, "TLS private key (PEM)",
            soketi=("SOKETI_SSL_KEY",), flag="--ssl-key", metavar="FILE"),
    _server("RELAY_SSL_PASSPHRASE", "ssl_passphrase", _passphrase, "passphrase of the TLS key",
            soketi=("SOKETI_SSL_PASS",)),
    _server("RELAY_DEBUG", "debug", _bool, "verbose logging (implies --log-level debug)",
            soketi=("SOKETI_DEBUG",), flag="--debug",
            aliases_doc="SOKETI_DEBUG, reverb:start --debug"),
    _server("RELAY_LOG_LEVEL", "log_level", _log_level, "debug, info, warning or error",
            flag="--log-level", metavar="LEVEL"),
    _server("RELAY_LOG_FORMAT", "log_format", _log_format, "text, or json (one object per line)",
            flag="--log-format", metavar="FORMAT"),
    _server("RELAY_MAX_NODE_CONNECTIONS", "max_node_connections", _UNLIMITED,
            "WebSocket connections on this node, all apps together (4100 above)",
            also=("RELAY_MAX_CONNECTIONS",)),
    _server("RELAY_HTTP_REQUEST_TIMEOUT", "http_request_timeout", _float(0.0, strict=True),
            "an HTTP request must arrive whole within this, from its first byte (408 after)",
            unit="s"),
    # Limits: the defaults of every app's own limit
    _limit("RELAY_MAX_EVENT_DATA_KB", "max_event_payload_kb", _KB,
           "largest event data (HTTP API and client events)",
           soketi=("SOKETI_EVENT_MAX_SIZE_IN_KB",), unit="KiB"),
    _limit("RELAY_MAX_EVENT_NAME_LENGTH", "max_event_name_length", _POSITIVE,
           "longest event name", soketi=("SOKETI_EVENT_MAX_NAME_LENGTH",)),
    _limit("RELAY_MAX_CHANNELS_PER_EVENT", "max_event_channels_at_once", _POSITIVE,
           "channels per published event", soketi=("SOKETI_EVENT_MAX_CHANNELS_AT_ONCE",)),
    _limit("RELAY_MAX_BATCH_SIZE", "max_event_batch_size", _POSITIVE,
           "events per batch request", soketi=("SOKETI_EVENT_MAX_BATCH_SIZE",)),
    _limit("RELAY_MAX_CHANNEL_NAME_LENGTH", "max_channel_name_length", _POSITIVE,
           "longest channel name", soketi=("SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH",)),
    _limit("RELAY_PRESENCE_MAX_MEMBERS", "max_presence_members", _POSITIVE,
           "members per presence channel", soketi=("SOKETI_PRESENCE_MAX_MEMBERS",)),
    _limit("RELAY_PRESENCE_MAX_MEMBER_SIZE_KB", "max_presence_member_size_kb", _KB,
           "largest presence user_info", soketi=("SOKETI_PRESENCE_MAX_MEMBER_SIZE",), unit="KiB"),
    # The single app
    _app("RELAY_APP_ID", "id", _ident, "app id", soketi=("SOKETI_DEFAULT_APP_ID",),
         reverb=("REVERB_APP_ID",), flag="--app-id", metavar="ID"),
    _app("RELAY_APP_KEY", "key", _ident, "app key", soketi=("SOKETI_DEFAULT_APP_KEY",),
         reverb=("REVERB_APP_KEY",), flag="--app-key", metavar="KEY"),
    _app("RELAY_APP_SECRET", "secret", _secret, "app secret",
         soketi=("SOKETI_DEFAULT_APP_SECRET",), reverb=("REVERB_APP_SECRET",),
         flag="--app-secret", metavar="SECRET"),
    _app("RELAY_APP_ENABLED", "enabled", _bool, "app switch (error 4003 when off)",
         soketi=("SOKETI_DEFAULT_APP_ENABLED",)),
    _app("RELAY_APP_MAX_CONNECTIONS", "max_connections", _UNLIMITED,
         "connection quota (-1 = unlimited)", soketi=("SOKETI_DEFAULT_APP_MAX_CONNS",),
         reverb=("REVERB_APP_MAX_CONNECTIONS",), flag="--app-max-connections", metavar="N"),
    _app("RELAY_APP_ENABLE_CLIENT_MESSAGES", "enable_client_messages", _bool,
         "allow client events", soketi=("SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES",),
         reverb=("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM",), reverb_parse=_accept_client_events_from,
         flag="--app-client-messages",
         aliases_doc="SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES, "
                     "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM (none = false, members/all = true)"),
    _app("RELAY_APP_MAX_CLIENT_EVENTS_PER_SEC", "max_client_events_per_sec", _UNLIMITED,
         "client events per second per connection (-1 = unlimited)",
         soketi=("SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC",),
         reverb=("REVERB_APP_RATE_LIMITING_ENABLED", "REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS",
                 "REVERB_APP_RATE_LIMIT_DECAY_SECONDS"),
         reverb_resolve=_reverb_rate_limit,
         aliases_doc="SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC; "
                     "REVERB_APP_RATE_LIMITING_ENABLED=true + "
                     "ceil(REVERB_APP_RATE_LIMIT_MAX_ATTEMPTS / "
                     "REVERB_APP_RATE_LIMIT_DECAY_SECONDS)"),
    _app("RELAY_APP_RATE_LIMIT_TERMINATE", "rate_limit_terminate", _bool,
         "close (4301) a connection over its client event rate",
         reverb=("REVERB_APP_RATE_LIMIT_TERMINATE",)),
    _app("RELAY_APP_MAX_BACKEND_EVENTS_PER_SEC", "max_backend_events_per_sec", _UNLIMITED,
         "HTTP API events per second (-1 = unlimited)",
         soketi=("SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC",)),
    _app("RELAY_APP_MAX_READ_REQ_PER_SEC", "max_read_req_per_sec", _UNLIMITED,
         "HTTP API reads per second (-1 = unlimited)",
         soketi=("SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC",)),
    _app("RELAY_APP_USER_AUTHENTICATION", "enable_user_authentication", _bool,
         "connections must sign in or subscribe privately in time",
         soketi=("SOKETI_DEFAULT_APP_USER_AUTHENTICATION",)),
    _app("RELAY_APP_WEBHOOKS", "webhooks", _webhooks, "webhooks, soketi's JSON shape",
         also=("RELAY_WEBHOOKS",), soketi=("SOKETI_DEFAULT_APP_WEBHOOKS",)),
    _app("RELAY_APP_ALLOWED_ORIGINS", "allowed_origins", _origins,
         "allowed Origin headers (comma-separated or JSON array)",
         aliases_doc="Reverb allowed_origins (app key)"),
    _app("RELAY_APP_SUBSCRIPTION_COUNT", "subscription_count_enabled", _bool,
         "send pusher_internal:subscription_count"),
    _app("RELAY_APP_WATCHLIST_EVENTS", "watchlist_events_enabled", _bool,
         "send watchlist online/offline events"),
)  # fmt: skip

# soketi's option paths (src/cli/cli.ts) for the SOKETI_* variables read above, so a soketi JSON
# config file's dotted keys ("port", "eventLimits.maxNameLength", …) map onto the same settings.
_SOKETI_PATHS: Mapping[str, str] = MappingProxyType(
    {
        "SOKETI_ADAPTER_DRIVER": "adapter.driver",
        "SOKETI_ADAPTER_REDIS_PREFIX": "adapter.redis.prefix",
        "SOKETI_CHANNEL_CACHE_TTL": "channelLimits.cacheTtl",
        "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH": "channelLimits.maxNameLength",
        "SOKETI_DB_REDIS_DB": "database.redis.db",
        "SOKETI_DB_REDIS_HOST": "database.redis.host",
        "SOKETI_DB_REDIS_KEY_PREFIX": "database.redis.keyPrefix",
        "SOKETI_DB_REDIS_PASSWORD": "database.redis.password",
        "SOKETI_DB_REDIS_PORT": "database.redis.port",
        "SOKETI_DB_REDIS_USERNAME": "database.redis.username",
        "SOKETI_DEBUG": "debug",
        "SOKETI_EVENT_MAX_BATCH_SIZE": "eventLimits.maxBatchSize",
        "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE": "eventLimits.maxChannelsAtOnce",
        "SOKETI_EVENT_MAX_NAME_LENGTH": "eventLimits.maxNameLength",
        "SOKETI_EVENT_MAX_SIZE_IN_KB": "eventLimits.maxPayloadInKb",
        "SOKETI_HOST": "host",
        "SOKETI_METRICS_ENABLED": "metrics.enabled",
        "SOKETI_METRICS_HOST": "metrics.host",
        "SOKETI_METRICS_PROMETHEUS_PREFIX": "metrics.prometheus.prefix",
        "SOKETI_METRICS_SERVER_PORT": "metrics.port",
        "SOKETI_PATH_PREFIX": "pathPrefix",
        "SOKETI_PORT": "port",
        "SOKETI_PRESENCE_MAX_MEMBERS": "presence.maxMembersPerChannel",
        "SOKETI_PRESENCE_MAX_MEMBER_SIZE": "presence.maxMemberSizeInKb",
        "SOKETI_SHUTDOWN_GRACE_PERIOD": "shutdownGracePeriod",
        "SOKETI_SSL_CERT": "ssl.certPath",
        "SOKETI_SSL_KEY": "ssl.keyPath",
        "SOKETI_SSL_PASS": "ssl.passphrase",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT": "userAuthenticationTimeout",
        "SOKETI_WEBHOOKS_BATCHING": "webhooks.batching.enabled",
        "SOKETI_WEBHOOKS_BATCHING_DURATION": "webhooks.batching.duration",
    }
)

# Top-level soketi options: a file key under one of these that fastrelay does not map is a soketi
# feature fastrelay lacks (cluster, queues, MySQL apps, …) and is skipped, not an error.
_SOKETI_ROOTS = frozenset(
    {
        "adapter", "appManager", "cache", "channelLimits", "cluster", "cors", "database",
        "databasePooling", "debug", "eventLimits", "host", "httpApi", "instance", "metrics",
        "mode", "port", "pathPrefix", "presence", "queue", "rateLimiter", "shutdownGracePeriod",
        "ssl", "userAuthenticationTimeout", "webhooks",
    }
)  # fmt: skip

# Variables fastrelay knows but does not read: Reverb's client-side ones (where the Laravel app
# and Echo reach the server) and Reverb's Laravel-only knobs. Not reported as unknown.
_KNOWN_UNUSED = frozenset(
    {
        "REVERB_HOST",
        "REVERB_PORT",
        "REVERB_SCHEME",
        "REVERB_SERVER",
        "REVERB_PULSE_INGEST_INTERVAL",
        "REVERB_TELESCOPE_INGEST_INTERVAL",
    }
)

_KNOWN_NAMES = frozenset(
    {name for var in VARIABLES for name in (var.name, *var.also, *var.soketi, *var.reverb)}
    | _KNOWN_UNUSED
)

# App object keys: fastrelay snake_case, soketi camelCase / PascalCase / snake_case, Reverb.
_APP_KEYS: Mapping[str, tuple[tuple[str, ...], Parser]] = MappingProxyType(
    {
        "id": (("id", "AppId", "app_id"), _ident),
        "key": (("key", "AppKey"), _ident),
        "secret": (("secret", "AppSecret"), _secret),
        "enabled": (("enabled", "Enabled"), _bool),
        "enable_client_messages": (
            ("enable_client_messages", "enableClientMessages", "EnableClientMessages"),
            _bool,
        ),
        "max_connections": (("max_connections", "maxConnections", "MaxConnections"), _UNLIMITED),
        "max_client_events_per_sec": (
            ("max_client_events_per_sec", "maxClientEventsPerSecond", "MaxClientEventsPerSecond"),
            _UNLIMITED,
        ),
        "max_backend_events_per_sec": (
            (
                "max_backend_events_per_sec",
                "maxBackendEventsPerSecond",
                "MaxBackendEventsPerSecond",
            ),
            _UNLIMITED,
        ),
        "max_read_req_per_sec": (
            ("max_read_req_per_sec", "maxReadRequestsPerSecond", "MaxReadRequestsPerSecond"),
            _UNLIMITED,
        ),
        "rate_limit_terminate": (("rate_limit_terminate",), _bool),
        "enable_user_authentication": (
            (
                "enable_user_authentication",
                "enableUserAuthentication",
                "EnableUserAuthentication",
            ),
            _bool,
        ),
        "subscription_count_enabled": (("subscription_count_enabled",), _bool),
        "watchlist_events_enabled": (("watchlist_events_enabled",), _bool),
        "max_presence_members": (
            (
                "max_presence_members",
                "maxPresenceMembersPerChannel",
                "MaxPresenceMembersPerChannel",
                "max_presence_members_per_channel",
            ),
            _POSITIVE,
        ),
        "max_presence_member_size_kb": (
            (
                "max_presence_member_size_kb",
                "maxPresenceMemberSizeInKb",
                "MaxPresenceMemberSizeInKb",
                "max_presence_member_size_in_kb",
            ),
            _KB,
        ),
        "max_channel_name_length": (
            ("max_channel_name_length", "maxChannelNameLength", "MaxChannelNameLength"),
            _POSITIVE,
        ),
        "max_event_name_length": (
            ("max_event_name_length", "maxEventNameLength", "MaxEventNameLength"),
            _POSITIVE,
        ),
        "max_event_payload_kb": (
            (
                "max_event_payload_kb",
                "maxEventPayloadInKb",
                "MaxEventPayloadInKb",
                "max_event_payload_in_kb",
            ),
            _KB,
        ),
        "max_event_channels_at_once": (
            ("max_event_channels_at_once", "maxEventChannelsAtOnce", "MaxEventChannelsAtOnce"),
            _POSITIVE,
        ),
        "max_event_batch_size": (
            ("max_event_batch_size", "maxEventBatchSize", "MaxEventBatchSize"),
            _POSITIVE,
        ),
        "allowed_origins": (("allowed_origins",), _origins),
        "webhooks": (("webhooks", "Webhooks"), _webhooks),
    }
)
_APP_KEY_INDEX: Mapping[str, str] = MappingProxyType(
    {key: field for field, (keys, _) in _APP_KEYS.items() for key in keys}
)
# Reverb's per-app liveness and size knobs are server-wide in fastrelay (Config fields).
_APP_SERVER_KEYS: Mapping[str, Var] = MappingProxyType(
    {
        var.field: var
        for var in VARIABLES
        if var.field in ("ping_interval", "activity_timeout", "max_message_size")
    }
)
_APP_IGNORED_KEYS = frozenset({"options"})  # Reverb: where clients reach the server
_APP_SPECIAL_KEYS = ("accept_client_events_from", "rate_limiting")
_ALL_APP_KEYS = (*_APP_KEY_INDEX, *_APP_SPECIAL_KEYS, *_APP_SERVER_KEYS, *_APP_IGNORED_KEYS)

# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(_one_line(message))


def help_epilog(width: int = 100) -> str:
    """The ``--help`` epilog: precedence, then every variable with its default and aliases."""
    lines = [
        "subcommands:",
        "  fastrelay [serve] [options]   run the server (serve is optional)",
        "  fastrelay bench [args]        run the benchmark client",
        "",
        "precedence (highest first):",
        "  command-line flags > RELAY_* > SOKETI_* > REVERB_* > config file > defaults",
        "  RELAY_APPS replaces the single-app variables (RELAY_APP_*, SOKETI_DEFAULT_APP_*,",
        "  REVERB_APP_*); apps from the config file are patched by them, first app only.",
        "  Config file: JSON, or TOML when the name ends in .toml. Keys: a variable's name in",
        "  lower case without RELAY_ (port, max_event_data_kb, ...) or its Config / App field",
        "  name (max_event_payload_kb, ...); 'apps' (a list of app objects); soketi's dotted",
        "  option keys (port, eventLimits.maxNameLength, appManager.array.apps, ...).",
        "  Values: booleans true/false/1/0/yes/no; numbers; JSON for arrays and objects.",
        "  (ms) marks soketi durations in milliseconds; their RELAY_* twins are in seconds.",
        "",
        "environment variables (name, default, then soketi / Reverb aliases):",
    ]
    titles = {
        "meta": "files and apps",
        "server": "server",
        "limit": "limits (defaults of every app; an app may set its own)",
        "app": "the single app (ignored when RELAY_APPS is set)",
    }
    indent = " " * 55
    for scope, title in titles.items():
        lines.append(f"  {title}:")
        for var in VARIABLES:
            if var.scope != scope:
                continue
            names = " ".join((var.name, *var.also))
            head = f"    {names:<37} {var.default_text:<12}"
            aliases = var.aliases_text or "-"
            if len(names) > 37:
                lines.append(head.rstrip())
                head = indent[:-1]
            lines.extend(
                textwrap.wrap(
                    aliases,
                    width,
                    initial_indent=head + " ",
                    subsequent_indent=indent,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
    return "\n".join(lines)


def build_parser(prog: str = "fastrelay") -> argparse.ArgumentParser:
    """The command-line parser; one flag per commonly used knob, each generated from the table."""
    parser = _ArgumentParser(
        prog=prog,
        usage=f"{prog} [serve] [options] | {prog} bench [args]",
        description="fastrelay: a Pusher Channels (protocol 7) server, a drop-in replacement "
        "for soketi and Laravel Reverb.",
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fastrelay {__version__}")
    for var in VARIABLES:
        if var.flag is None:
            continue
        text = f"{var.help} [{var.name}; default {var.default_text}]".replace("%", "%%")
        if var.is_boolean:
            parser.add_argument(
                var.flag, dest=var.name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(var.flag, dest=var.name, metavar=var.metavar, help=text)
    return parser


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _is_unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True, slots=True)
class _Env:
    environ: Mapping[str, str]

    def get(self, name: str, allow_empty: bool = False) -> _Raw | None:
        value = self.environ.get(name)
        if value is None or (not allow_empty and _is_unset(value)):
            return None
        return _Raw(name, value)


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    values: Mapping[str, object]  # dotted keys, nested objects flattened
    apps: list[object] | None
    apps_key: str

    def key(self, key: str) -> str:
        return f"{self.path}: {key}"

    def get(self, key: str, allow_empty: bool = False) -> _Raw | None:
        key = _SOKETI_PATHS.get(key, key)
        if key not in self.values:
            return None
        value = self.values[key]
        if value is None or (not allow_empty and _is_unset(value)):
            return None
        return _Raw(self.key(key), value)


_APP_PATCH = re.compile(r"appManager\.array\.apps\.(\d+)\.(\w+)")


def _flatten(doc: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for name, value in doc.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _parse_document(origin: _Raw, path: str, data: bytes) -> object:
    if path.lower().endswith(".toml"):
        try:
            import tomllib as toml
        except ImportError:  # Python 3.10
            try:
                import tomli as toml  # type: ignore[no-redef]
            except ImportError:
                raise _fail(
                    origin.key,
                    path,
                    "a JSON config file: TOML needs Python 3.11 or newer (tomllib) or tomli",
                ) from None
        try:
            return toml.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, toml.TOMLDecodeError) as exc:
            raise _fail(origin.key, path, f"a valid TOML file ({exc})") from None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise _fail(origin.key, path, f"a valid JSON file ({exc})") from None


def _read_file(origin: _Raw) -> _File:
    path = _text(origin.key, origin.value)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise _fail(origin.key, path, "an existing config file (not found)") from None
    except OSError as exc:
        raise _fail(origin.key, path, f"a readable config file ({exc.strerror})") from None
    document = _parse_document(origin, path, data)
    if not isinstance(document, dict):
        raise _fail(origin.key, path, "a config file holding an object / table at the top level")
    flat = _flatten(document)
    own: dict[str, Var] = {}
    soketi_keys: set[str] = set()
    for var in VARIABLES:
        if var.scope in ("server", "limit"):
            for key in var.own_file_keys:
                own[key] = var
            soketi_keys.update(_SOKETI_PATHS[name] for name in var.soketi)
            soketi_keys.update(var.soketi_file)
    apps: list[object] | None = None
    apps_key = "apps"
    patches: list[tuple[int, str, object]] = []
    values: dict[str, object] = {}
    for key, value in flat.items():
        if key in ("apps", "appManager.array.apps"):
            if apps is not None:
                raise ConfigError(f"{path}: {key}: expected either apps or appManager.array.apps")
            if not isinstance(value, list) or not value:
                raise _fail(f"{path}: {key}", value, "a non-empty list of app objects")
            apps, apps_key = list(value), key
        elif match := _APP_PATCH.fullmatch(key):
            patches.append((int(match.group(1)), match.group(2), value))
        elif key in own or key in soketi_keys:
            values[key] = value
        elif key.split(".", 1)[0] in _SOKETI_ROOTS:
            continue  # a soketi option fastrelay has no use for
        else:
            close = difflib.get_close_matches(key, [*own, "apps"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(f"{path}: {key}", value, f"a known setting{hint}")
    if patches:
        # soketi's flat "appManager.array.apps.0.id" keys patch (or create) the listed apps.
        if apps is None:
            apps, apps_key = [], "appManager.array.apps"
        for index, name, value in sorted(patches, key=lambda patch: patch[0]):
            if index > len(apps):
                key = f"appManager.array.apps.{index}.{name}"
                raise _fail(f"{path}: {key}", value, f"app indexes in order from 0 to {len(apps)}")
            if index == len(apps):
                apps.append(
                    {"id": DEFAULT_APP.id, "key": DEFAULT_APP.key, "secret": DEFAULT_APP.secret}
                )
            target = apps[index]
            if not isinstance(target, Mapping):
                raise _fail(f"{path}: {apps_key}[{index}]", target, "an app object")
            apps[index] = {**target, name: value}
    return _File(path=path, values=values, apps=apps, apps_key=apps_key)


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def _from_family(
    names: Sequence[str],
    parse: Parser,
    resolver: Resolver | None,
    get: Callable[[str, bool], _Raw | None],
    allow_empty: bool,
) -> tuple[_Raw, Any] | None:
    if resolver is not None:
        return resolver(lambda name: get(name, False))
    for name in names:
        raw = get(name, allow_empty)
        if raw is not None:
            return raw, parse(raw.key, raw.value)
    return None


def _resolve(
    var: Var,
    flags: Mapping[str, _Raw],
    env: _Env | None,
    file: _File | None,
) -> tuple[_Raw, Any] | None:
    """The value of one setting from the highest-precedence source that sets it, with its key."""
    raw = flags.get(var.name)
    if raw is not None:
        return raw, var.parse(raw.key, raw.value)
    if env is not None:
        for name in (var.name, *var.also):
            raw = env.get(name, var.allow_empty)
            if raw is not None:
                return raw, var.parse(raw.key, raw.value)
        soketi = var.soketi_parse or var.parse
        found = _from_family(var.soketi, soketi, var.soketi_resolve, env.get, var.allow_empty)
        if found is not None:
            return found
        reverb = var.reverb_parse or var.parse
        found = _from_family(var.reverb, reverb, var.reverb_resolve, env.get, var.allow_empty)
        if found is not None:
            return found
    if file is not None and var.scope in ("server", "limit"):
        for key in var.own_file_keys:
            raw = file.get(key, var.allow_empty)
            if raw is not None:
                return raw, var.parse(raw.key, raw.value)
        names = (*var.soketi, *var.soketi_file)
        soketi = var.soketi_parse or var.parse
        return _from_family(names, soketi, var.soketi_resolve, file.get, var.allow_empty)
    return None


def _rate_limiting(key: str, value: object) -> dict[str, Any]:
    """Reverb's ``rate_limiting`` object → fastrelay's per-connection client event rate."""
    expected = "an object {enabled, max_attempts, decay_seconds, terminate_on_limit}"
    if not isinstance(value, Mapping):
        raise _fail(key, value, expected)
    for name in value:
        if name not in (
            "enabled",
            "max_attempts",
            "decay_seconds",
            "terminate_on_limit",
            "terminate",
        ):
            raise _fail(f"{key}.{name}", value[name], f"one of the keys of {expected}")

    def get(name: str, parse: Parser, default: Any) -> Any:
        item = value.get(name)
        return default if _is_unset(item) else parse(f"{key}.{name}", item)

    fields: dict[str, Any] = {}
    if get("enabled", _bool, False):
        attempts = get("max_attempts", _POSITIVE, 60)
        decay = get("decay_seconds", _POSITIVE, 60)
        fields["max_client_events_per_sec"] = _per_second(attempts, decay)
    for name in ("terminate_on_limit", "terminate"):
        if not _is_unset(value.get(name)):
            fields["rate_limit_terminate"] = get(name, _bool, False)
    return fields


def _build_app(
    obj: object,
    where: str,
    limits: Mapping[str, Any],
    server_values: dict[str, list[tuple[_Raw, Any]]],
) -> App:
    """One app object (fastrelay, soketi or Reverb keys) → App, limits filling what it omits."""
    if not isinstance(obj, Mapping):
        raise _fail(where, obj, "an app object with id, key and secret")
    fields: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, value in obj.items():
        key = f"{where}.{name}"
        if _is_unset(value):  # soketi: null and "" mean "not set"
            continue
        if name in _APP_KEY_INDEX:
            field = _APP_KEY_INDEX[name]
            found = {field: _APP_KEYS[field][1](key, value)}
        elif name == "accept_client_events_from":
            found = {"enable_client_messages": _accept_client_events_from(key, value)}
        elif name == "rate_limiting":
            found = _rate_limiting(key, value)
        elif name in _APP_SERVER_KEYS:
            parsed = _APP_SERVER_KEYS[name].parse(key, value)
            server_values.setdefault(name, []).append((_Raw(key, value), parsed))
            continue
        elif name in _APP_IGNORED_KEYS:
            continue
        else:
            close = difflib.get_close_matches(str(name), _ALL_APP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(key, value, f"a known app setting{hint}")
        for field, parsed in found.items():
            if field in origin:
                raise _fail(key, value, f"only one of {origin[field]} and {key}")
            fields[field] = parsed
            origin[field] = key
    for required in ("id", "key", "secret"):
        if required not in fields:
            spellings = " or ".join(repr(name) for name in _APP_KEYS[required][0])
            raise ConfigError(f"{where}: missing the app {required} (expected {spellings})")
    return App(**{**limits, **fields})


def _parse_apps_json(raw: _Raw) -> list[object]:
    expected = "a non-empty JSON array of app objects"
    items = _json(raw.key, raw.value, expected)
    if not isinstance(items, list) or not items:
        raise _fail(raw.key, raw.value, expected)
    return items


def _build_apps(
    flags: Mapping[str, _Raw],
    env: _Env,
    file: _File | None,
    limits: Mapping[str, Any],
    server_values: dict[str, list[tuple[_Raw, Any]]],
) -> tuple[App, ...]:
    relay_apps = env.get("RELAY_APPS")
    objects: list[object] | None = None
    where = ""
    if relay_apps is not None:
        objects, where = _parse_apps_json(relay_apps), "RELAY_APPS"
    elif file is not None and file.apps is not None:
        objects, where = file.apps, file.key(file.apps_key)
    # Single-app settings: with RELAY_APPS only the flags count; otherwise flags and environment.
    overrides: dict[str, Any] = {}
    override_keys: dict[str, str] = {}
    for var in VARIABLES:
        if var.scope == "app":
            found = _resolve(var, flags, None if relay_apps is not None else env, None)
            if found is not None:
                override_keys[var.field] = found[0].key
                overrides[var.field] = found[1]
    if objects is None:
        base = {"id": DEFAULT_APP.id, "key": DEFAULT_APP.key, "secret": DEFAULT_APP.secret}
        apps = [App(**{**base, **limits, **overrides})]
        keys = [{field: override_keys.get(field, field) for field in ("id", "key")}]
    else:
        apps = [
            _build_app(obj, f"{where}[{index}]", limits, server_values)
            for index, obj in enumerate(objects)
        ]
        keys = [{f: f"{where}[{index}].{f}" for f in ("id", "key")} for index in range(len(apps))]
        if overrides:
            apps[0] = dataclasses.replace(apps[0], **overrides)
            keys[0].update({f: override_keys[f] for f in ("id", "key") if f in override_keys})
    for field in ("id", "key"):
        seen: dict[str, int] = {}
        for index, app in enumerate(apps):
            value = getattr(app, field)
            if value in seen:
                raise _fail(
                    keys[index][field],
                    value,
                    f"a unique app {field} (app {seen[value]} has it too)",
                )
            seen[value] = index
    return tuple(apps)


def load_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """Build the :class:`Config` from command-line flags, the environment and the config file.

    ``argv`` excludes the program name and any subcommand; ``None`` means no flags. Raises
    :class:`ConfigError` (one line: key, value, what is expected) on any bad value.
    """
    namespace = build_parser().parse_args(list(argv or ()))
    flags: dict[str, _Raw] = {}
    for var in VARIABLES:
        value = getattr(namespace, var.name, None) if var.flag else None
        if value is not None:
            flags[var.name] = _Raw(str(var.flag), value)
    env = _Env(environ)
    config_source = flags.get("RELAY_CONFIG") or env.get("RELAY_CONFIG")
    file = _read_file(config_source) if config_source is not None else None

    values: dict[str, Any] = {}
    raws: dict[str, _Raw] = {}
    limits: dict[str, Any] = {}
    for var in VARIABLES:
        if var.scope not in ("server", "limit"):
            continue
        found = _resolve(var, flags, env, file)
        if found is None:
            continue
        if var.scope == "server":
            raws[var.field], values[var.field] = found
        else:
            limits[var.field] = found[1]

    server_values: dict[str, list[tuple[_Raw, Any]]] = {}
    apps = _build_apps(flags, env, file, limits, server_values)

    # Reverb's per-app ping_interval / activity_timeout / max_message_size: fastrelay applies
    # one value to every app, used when nothing above sets it; the apps must agree.
    for field, found_values in server_values.items():
        first_raw, first = found_values[0]
        for other_raw, other in found_values[1:]:
            if other != first:
                raise _fail(
                    other_raw.key,
                    other_raw.value,
                    f"the same value as {first_raw.key}={_show(first_raw.value)}"
                    f" (fastrelay applies {field} to all apps)",
                )
        if field not in values:
            raws[field], values[field] = first_raw, first

    if values.get("debug") and "log_level" not in values:
        values["log_level"] = "debug"
    cert, key = values.get("ssl_cert"), values.get("ssl_key")
    if (cert is None) != (key is None):
        present = "ssl_cert" if cert is not None else "ssl_key"
        missing = "RELAY_SSL_KEY" if cert is not None else "RELAY_SSL_CERT"
        raw = raws[present]
        raise _fail(raw.key, raw.value, f"{missing} as well (TLS needs both)")
    merged = {f.name: getattr(_DEFAULT_CONFIG, f.name) for f in dataclasses.fields(Config)}
    merged.update(values)
    if (
        merged["metrics_enabled"]
        and merged["port"] != 0
        and merged["metrics_port"] == merged["port"]
    ):
        raw = raws["metrics_port"] if "metrics_port" in raws else raws["port"]
        raise _fail(raw.key, raw.value, "different ports for the server and the metrics server")
    merged["apps"] = apps
    return Config(**merged)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """RELAY_* / SOKETI_* / REVERB_* variables fastrelay does not read, sorted (warn once)."""
    return sorted(
        name for name in environ if name.startswith(PREFIXES) and name not in _KNOWN_NAMES
    )
