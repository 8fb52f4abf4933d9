"""The records the hub keeps: one per connection, per channel, per presence member, per app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..cluster.local import user_key
from ..config import App
from ..protocol.channels import ChannelKind
from ..wire.frames import OP_TEXT, encode_frame
from .fanout import Outlet

__all__ = ["AppState", "Channel", "Client", "user_key"]

# Up to this many subscriptions a connection keeps its channel names in a tuple, not a set.
SMALL_CHANNELS = 8


class Client:
    """One connection as the hub sees it: who it is, what it is subscribed to, how to reach it."""

    __slots__ = (
        "app",
        "channels",
        "outlet",
        "pending",
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
        # The subscribed channels: a tuple while there are few (an idle connection usually has
        # one; a 1-tuple costs 48 bytes, a set 216), a set beyond SMALL_CHANNELS. Read it with
        # ``in``, ``len`` and iteration; change it only with add_channel / discard_channel.
        self.channels: tuple[str, ...] | set[str] = ()
        # presence channel → this connection's user_id there (JSON type kept); None while there
        # is none, like pending: most connections never join a presence channel.
        self.presence_ids: dict[str, Any] | None = None
        # presence channel → token of a join the cluster has not answered yet (None: no such)
        self.pending: dict[str, object] | None = None
        self.user_id: str | None = None
        self.watchlist: tuple[str, ...] = ()

    def send(self, message: bytes) -> bool:
        """Send one encoded Pusher message to this connection alone."""
        return self.outlet.send(encode_frame(OP_TEXT, message))

    def add_channel(self, name: str) -> None:
        channels = self.channels
        if isinstance(channels, tuple):
            if name in channels:
                return
            if len(channels) < SMALL_CHANNELS:
                self.channels = (*channels, name)
                return
            self.channels = channels = set(channels)
        channels.add(name)

    def discard_channel(self, name: str) -> None:
        channels = self.channels
        if isinstance(channels, tuple):
            if name in channels:
                self.channels = tuple(c for c in channels if c != name)
        else:
            channels.discard(name)


class Channel:
    """Subscribers of one channel on this node."""

    __slots__ = ("count_sent_at", "count_timer", "kind", "name", "outlets")

    def __init__(self, name: str, kind: ChannelKind) -> None:
        self.name = name
        self.kind = kind
        self.outlets: dict[str, Outlet] = {}
        self.count_sent_at = float("-inf")
        self.count_timer: Any = None

    @property
    def subscription_count(self) -> int:
        return len(self.outlets)


class AppState:
    """Everything this node holds for one app."""

    __slots__ = ("channels", "clients", "users", "watchers")

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.clients: dict[str, Client] = {}
        self.users: dict[str, dict[str, Client]] = {}  # signed-in user id → its connections
        self.watchers: dict[str, set[str]] = {}  # watched user id → socket ids watching it

    def is_empty(self) -> bool:
        return not (self.channels or self.clients or self.users or self.watchers)
