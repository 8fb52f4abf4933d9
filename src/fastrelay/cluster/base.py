"""The adapter seam: what a node asks of the rest of the cluster.

The local :class:`~fastrelay.hub.hub.Hub` owns this node's subscribers and delivers to them. An
:class:`Adapter` moves already-encoded frames to the other nodes that have subscribers, keeps the
state that must be the same on every node (presence rosters, cache-channel last events, counts)
and answers cluster-wide questions. :class:`~fastrelay.cluster.local.LocalAdapter` is the
single-node default (no I/O); :class:`~fastrelay.cluster.redis_adapter.RedisAdapter` shares
everything through Redis.

Operations that may need a round trip take a ``done`` callback instead of returning an
awaitable, so the hub stays free of asyncio; a local adapter calls ``done`` before returning.
The REST queries are awaitables: the HTTP shell already awaits handlers.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Adapter",
    "CachedEvent",
    "ChannelCounts",
    "ClusterUnavailable",
    "JoinResult",
    "LeaveResult",
    "Receiver",
    "roster_payload",
]


def roster_payload(ids: list[Any], infos: dict[str, Any]) -> dict[str, Any]:
    """The presence part of ``pusher_internal:subscription_succeeded`` (PROTOCOL.md §3.5)."""
    return {"ids": ids, "hash": infos, "count": len(ids)}


class ClusterUnavailable(Exception):
    """A cluster-wide question cannot be answered now (the shared store is unreachable)."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    """The outcome of a presence join.

    ``rejected``: the channel already has ``limit`` users and this one is not among them.
    ``first``: no connection of this user was in the channel on any node before.
    ``user_info``: the user's info as the roster shows it. ``roster``: the
    ``subscription_succeeded`` payload, ``{"ids", "hash", "count"}``.
    """

    rejected: bool
    first: bool = False
    user_info: Any = None
    roster: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LeaveResult:
    """The outcome of a presence leave: ``last`` when the user has no connection left anywhere;
    ``user_id`` is then the id as the roster had it (``1`` stays a number)."""

    last: bool
    user_id: Any = None


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """One channel across the cluster; ``user_count`` is 0 for non-presence channels."""

    subscription_count: int
    user_count: int = 0


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last event of a cache channel and the seconds it has left (PROTOCOL.md §11)."""

    event: str
    data: str
    ttl: int


class Receiver(Protocol):
    """What an adapter calls on this node when something arrives from another node."""

    def deliver(self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None) -> None:
        """Fan ``frame`` out to this node's subscribers of ``topic`` (a channel name)."""

    def terminate_user(self, app_id: str, user_id: str) -> int:
        """Close this node's connections of ``user_id``."""

    def member_gone(self, app_id: str, channel: str, user_id: Any) -> None:
        """A presence member vanished with a dead node: announce ``member_removed``."""

    def channel_vacated(self, app_id: str, channel: str) -> None:
        """A dead node held the channel's last subscribers: fire ``channel_vacated``."""


JoinDone = Callable[[JoinResult], None]
LeaveDone = Callable[[LeaveResult], None]
CacheDone = Callable[["CachedEvent | None"], None]
RosterDone = Callable[[dict[str, Any]], None]


class Adapter(abc.ABC):
    """Connects one node's hub to the others. One instance per node, owned by its event loop.

    Topics are channel names; ``#server-to-user-{id}`` is the topic of a user's connections.
    """

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, receiver: Receiver) -> None:
        """Begin; a shared store that is down now must not stop the node from serving."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the cluster: withdraw this node's presence members and counts."""

    @property
    def healthy(self) -> bool:
        """False while the cluster cannot be reached (``/health`` says DEGRADED)."""
        return True

    @property
    def node_id(self) -> str:
        """This node's name in the cluster."""
        return "local"

    # -- traffic -----------------------------------------------------------------------------

    @abc.abstractmethod
    def interest(self, app_id: str, topic: str, wanted: bool) -> None:
        """This node got its first local subscriber of ``topic`` (True) or lost its last."""

    def ready(self, app_id: str, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this node receives every later message of ``topic`` from
        every node (after :meth:`interest`): then a subscription may be confirmed."""
        callback()

    @abc.abstractmethod
    def broadcast(
        self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None
    ) -> bool:
        """Deliver ``frame`` to ``topic``'s subscribers through the cluster; True when that
        includes this node's (then the caller must not deliver it too), False when this node
        must deliver it to its own subscribers itself.

        Through the cluster, every node gets a topic's messages in one order, the order in
        which the cluster took them, whichever node they were published on."""

    def settled(self) -> Awaitable[None] | None:
        """What to await before confirming a publish: every broadcast so far has then been
        accepted by the cluster, so a publish confirmed by this node is ordered before any
        publish made after the confirmation, on any node. None: nothing to wait for."""
        return None

    @abc.abstractmethod
    def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close ``user_id``'s connections on the other nodes."""

    def occupancy(
        self, app_id: str, channel: str, occupied: bool, done: Callable[[bool], None]
    ) -> None:
        """This node got its first subscriber of ``channel`` (``occupied``) or lost its last;
        ``done(True)`` when that made the channel occupied, or vacant, across the cluster: then
        ``channel_occupied`` / ``channel_vacated`` is due (HTTP_API.md §5.3), once per cluster.
        """
        done(True)

    # -- counts ------------------------------------------------------------------------------

    @abc.abstractmethod
    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        """This node now has ``count`` subscriptions to ``channel`` (0: none)."""

    @abc.abstractmethod
    def connections_changed(self, app_id: str, count: int) -> None:
        """This node now has ``count`` connections of the app."""

    @abc.abstractmethod
    def connection_estimate(self, app_id: str, local: int) -> int:
        """The app's connections across the cluster for quota checks: ``local`` plus the
        other nodes' count as last seen (it may lag by one heartbeat)."""

    # -- presence ----------------------------------------------------------------------------

    @abc.abstractmethod
    def presence_join(
        self,
        app_id: str,
        channel: str,
        socket_id: str,
        user_id: Any,
        user_info: Any,
        limit: int,
        done: JoinDone,
    ) -> None:
        """Add a connection to a presence channel; ``limit`` < 0 means no member limit."""

    @abc.abstractmethod
    def presence_leave(
        self, app_id: str, channel: str, socket_id: str, user_id: Any, done: LeaveDone
    ) -> None:
        """Remove a connection from a presence channel (a no-op for an unknown one)."""

    @abc.abstractmethod
    def presence_roster(self, app_id: str, channel: str, done: RosterDone) -> None:
        """The channel's ``subscription_succeeded`` payload as it stands."""

    # -- cache channels ----------------------------------------------------------------------

    @abc.abstractmethod
    def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: float) -> None:
        """Remember the last event of a cache channel for ``ttl`` seconds."""

    @abc.abstractmethod
    def cache_get(self, app_id: str, channel: str, done: CacheDone) -> None:
        """The last event of a cache channel, or None."""

    # -- shared event history --------------------------------------------------------------

    def publish_recorded(
        self,
        app_id: str,
        topic: str,
        message: bytes,
        record: dict[str, Any],
        except_socket_id: str | None,
    ) -> bool:
        """Give a history-recorded event a cluster-wide id, store it and deliver it everywhere,
        this node included; False when this adapter keeps no shared history (or cannot now),
        and the caller records and delivers it itself.

        ``message`` is the encoded event without ``id``; ``record`` the history record's JSON
        fields but ``id`` (RELAY_EXTRAS.md §4.1).
        """
        return False

    async def history(
        self,
        app_id: str,
        channel: str,
        *,
        limit: int,
        before: int | None,
        after: int | None,
        now_ms: int,
    ) -> dict[str, Any] | None:
        """The §4.4 history page from the shared store; None when there is none (or not now)."""
        return None

    # -- queries (HTTP API) ------------------------------------------------------------------

    @abc.abstractmethod
    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        """Occupied channels starting with ``prefix``; raises :class:`ClusterUnavailable`."""

    @abc.abstractmethod
    async def channel(self, app_id: str, name: str) -> ChannelCounts:
        """One channel's counts (zeros when unoccupied)."""

    @abc.abstractmethod
    async def users(self, app_id: str, channel: str) -> list[tuple[Any, Any]]:
        """A presence channel's users as ``(user_id, user_info)``, in join order if known."""

    @abc.abstractmethod
    async def connections(self, app_id: str) -> int:
        """The app's open connections across the cluster."""

    @abc.abstractmethod
    async def cached(self, app_id: str, channel: str) -> CachedEvent | None:
        """As :meth:`cache_get`, for the HTTP API."""
