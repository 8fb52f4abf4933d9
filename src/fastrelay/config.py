"""Configuration: frozen dataclasses describing the apps and the server.

Loading (defaults < config file < REVERB_* < SOKETI_* < RELAY_* < command-line flags) lives in
:mod:`fastrelay.settings`; this module only holds the shapes, so every layer can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["App", "Config", "WebhookTarget"]


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook URL of an app, with the events it wants (soketi's shape)."""

    url: str
    event_types: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    channel_name_starts_with: str | None = None
    channel_name_ends_with: str | None = None


@dataclass(frozen=True, slots=True)
class App:
    """One Pusher app: credentials, switches and per-app limits (-1 = unlimited)."""

    id: str
    key: str
    secret: str = field(repr=False)
    enabled: bool = True
    enable_client_messages: bool = True
    max_connections: int = -1
    max_client_events_per_sec: int = -1
    max_backend_events_per_sec: int = -1
    max_read_req_per_sec: int = -1
    rate_limit_terminate: bool = False
    enable_user_authentication: bool = False
    subscription_count_enabled: bool = False
    watchlist_events_enabled: bool = True
    max_presence_members: int = 100
    max_presence_member_size_kb: float = 2
    max_channel_name_length: int = 200
    max_event_name_length: int = 200
    max_event_payload_kb: float = 100
    max_event_channels_at_once: int = 100
    max_event_batch_size: int = 10
    allowed_origins: tuple[str, ...] = ("*",)
    webhooks: tuple[WebhookTarget, ...] = ()
    secret_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed once: every signature check keys HMAC with these bytes.
        object.__setattr__(self, "secret_bytes", self.secret.encode())

    @property
    def max_event_payload_bytes(self) -> int:
        return int(self.max_event_payload_kb * 1024)

    @property
    def max_presence_member_size_bytes(self) -> int:
        return int(self.max_presence_member_size_kb * 1024)


DEFAULT_APP = App(id="app-id", key="app-key", secret="app-secret")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to start; see RELAY_EXTRAS.md §8 for each knob."""

    apps: tuple[App, ...] = (DEFAULT_APP,)
    host: str = "0.0.0.0"
    port: int = 6001
    workers: int = 1  # server processes sharing the port (server/workers.py); >1 needs Redis
    reuse_port: bool = False  # SO_REUSEPORT, so several processes can listen on the port
    path_prefix: str = ""
    activity_timeout: int = 30
    ping_interval: float = 60.0
    pong_timeout: float = 30.0
    max_message_size: int = 262144
    max_request_size: int = 1048576
    cache_ttl: float = 1800.0
    user_authentication_timeout: float = 30.0
    require_protocol: bool = False
    api_timestamp_tolerance: int = 600
    encryption_master_key: bytes | None = field(default=None, repr=False)
    shutdown_grace_period: float = 3.0
    write_buffer_high_water: int = 4 * 1024 * 1024
    max_node_connections: int = -1  # WebSocket connections on this node, all apps (-1 = no cap)
    http_request_timeout: float = 10.0  # first byte to last of an HTTP request (slowloris)
    webhook_batching: bool = False
    webhook_batching_duration_ms: int = 50
    webhook_grace_period: float = 3.0
    history_enabled: bool = False
    history_max_events: int = 100
    history_max_age: float = 3600.0
    history_max_channels: int = 10000
    history_client_events: bool = False
    event_log_enabled: bool = True
    event_log_size: int = 1000
    metrics_enabled: bool = False
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9601
    metrics_prefix: str = "fastrelay_"
    redis_url: str | None = None
    redis_prefix: str = ""
    # Seconds after which a node that stopped heart-beating in Redis counts as dead: the
    # other nodes then remove its presence members (RedisAdapter).
    redis_node_timeout: float = 5.0
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_passphrase: str | None = field(default=None, repr=False)
    debug: bool = False
    log_level: str = "info"
    log_format: str = "text"
