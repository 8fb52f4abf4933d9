"""The records the hub keeps: one per connection, per channel, per presence member, per app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import App
from ..protocol.channels import ChannelKind
from ..wire.frames import OP_TEXT, encode_frame
from .fanout import Outlet

__all__ = ["AppState", "CachedEvent", "Channel", "Client", "Member", "user_key"]


def user_key(user_id: Any) -> str:
    """Identity of a presence user: the string form of its id (``1`` and ``"1"`` are one user)."""
    return user_id if isinstance(user_id, str) else str(user_id)


class Client:
    """One connection as the hub sees it: who it is, what it is subscribed to, how to reach it."""

    __slots__ = (
        "app",
        "channels",
        "outlet",
        "presence_ids",
        "socket_id",
        "terminate",
        "user_id",
        "watchlist",
    )

    def __init__(
        self, app: App, socket_id: str, outlet: Outlet, terminate: Callable[[int, str], None]
    ) -> None:
        self.app = app
        self.socket_id = socket_id
        self.outlet = outlet
        # Closes the connection with a Pusher error code; run by the I/O shell.
        self.terminate = terminate
        self.channels: set[str] = set()
        # presence channel → this connection's user_id there (JSON type kept)
        self.presence_ids: dict[str, Any] = {}
        self.user_id: str | None = None
        self.watchlist: tuple[str, ...] = ()

    def send(self, message: bytes) -> bool:
        """Send one encoded Pusher message to this connection alone."""
        return self.outlet.send(encode_frame(OP_TEXT, message))


class Member:
    """A user in a presence channel, with every connection it joined from (oldest first)."""

    __slots__ = ("connections", "user_id")

    def __init__(self, user_id: Any) -> None:
        self.user_id = user_id
        self.connections: dict[str, Any] = {}  # socket_id → user_info, in join order

    @property
    def user_info(self) -> Any:
        # The earliest still-subscribed connection's user_info (PROTOCOL.md §3.5, Reverb's rule).
        return next(iter(self.connections.values()))


class Channel:
    """Subscribers of one channel on this node."""

    __slots__ = ("count_sent_at", "count_timer", "kind", "members", "name", "outlets")

    def __init__(self, name: str, kind: ChannelKind) -> None:
        self.name = name
        self.kind = kind
        self.outlets: dict[str, Outlet] = {}
        self.members: dict[str, Member] = {}  # presence only: user key → member
        self.count_sent_at = float("-inf")
        self.count_timer: Any = None

    @property
    def subscription_count(self) -> int:
        return len(self.outlets)

    @property
    def user_count(self) -> int:
        return len(self.members)

    def presence_payload(self) -> dict[str, Any]:
        members = self.members.values()
        return {
            "ids": [m.user_id for m in members],
            "hash": {key: m.user_info for key, m in self.members.items()},
            "count": len(self.members),
        }


class CachedEvent:
    """The last event published to a cache channel (PROTOCOL.md §11)."""

    __slots__ = ("data", "event", "expires_at")

    def __init__(self, event: str, data: str, expires_at: float) -> None:
        self.event = event
        self.data = data
        self.expires_at = expires_at


class AppState:
    """Everything this node holds for one app."""

    __slots__ = ("cache", "channels", "clients", "users", "watchers")

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.clients: dict[str, Client] = {}
        self.users: dict[str, dict[str, Client]] = {}  # signed-in user id → its connections
        self.watchers: dict[str, set[str]] = {}  # watched user id → socket ids watching it
        self.cache: dict[str, CachedEvent] = {}

    def is_empty(self) -> bool:
        return not (self.channels or self.clients or self.users or self.watchers)
