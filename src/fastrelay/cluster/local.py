"""The single-node adapter: the cluster is this node, so every answer is local and immediate.

No I/O; time comes from the injected ``clock``. :class:`RedisAdapter` keeps one as its record of
what this node holds, which is what it re-registers after Redis comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .base import (
    Adapter,
    CachedEvent,
    CacheDone,
    ChannelCounts,
    JoinDone,
    JoinResult,
    LeaveDone,
    LeaveResult,
    Receiver,
    RosterDone,
    roster_payload,
)

__all__ = ["LocalAdapter", "LocalMember", "user_key"]


def user_key(user_id: Any) -> str:
    """Identity of a presence user: the string form of its id (``1`` and ``"1"`` are one user)."""
    return user_id if isinstance(user_id, str) else str(user_id)


class LocalMember:
    """A presence user on this node, with every connection it joined from (oldest first)."""

    __slots__ = ("connections", "user_id")

    def __init__(self, user_id: Any) -> None:
        self.user_id = user_id
        self.connections: dict[str, Any] = {}  # socket_id → user_info, in join order

    @property
    def user_info(self) -> Any:
        # The earliest still-subscribed connection's user_info (PROTOCOL.md §3.5, Reverb's rule).
        return next(iter(self.connections.values()))


class _Presence:
    """One presence channel on this node: its members, and the roster kept up to date with them
    (a join answers with the whole roster; rebuilding it per join from the members cost more
    than the rest of the join)."""

    __slots__ = ("ids", "infos", "members")

    def __init__(self) -> None:
        self.members: dict[str, LocalMember] = {}  # user key → member, in join order
        # Same keys, same order: the user_id as first joined, the user_info the roster shows.
        self.ids: dict[str, Any] = {}
        self.infos: dict[str, Any] = {}

    def roster(self) -> dict[str, Any]:
        """The ``pusher_internal:subscription_succeeded`` presence payload (a fresh copy)."""
        return roster_payload(list(self.ids.values()), dict(self.infos))


def _empty_roster() -> dict[str, Any]:
    return roster_payload([], {})


class LocalAdapter(Adapter):
    """Everything on one node; ``clock`` gives monotonic seconds (cache expiry)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # app → channel → subscriptions on this node
        self._subscriptions: dict[str, dict[str, int]] = {}
        self._connections: dict[str, int] = {}
        # (app, channel) → its members and roster
        self._presence: dict[tuple[str, str], _Presence] = {}
        self._cache: dict[tuple[str, str], tuple[str, str, float]] = {}

    async def start(self, receiver: Receiver) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- traffic: nobody else to tell --------------------------------------------------------

    def interest(self, app_id: str, topic: str, wanted: bool) -> None:
        return None

    def broadcast(
        self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None
    ) -> bool:
        return False

    def terminate_user(self, app_id: str, user_id: str) -> None:
        return None

    # -- counts ------------------------------------------------------------------------------

    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        if count > 0:
            self._subscriptions.setdefault(app_id, {})[channel] = count
            return
        channels = self._subscriptions.get(app_id)
        if channels is not None:
            channels.pop(channel, None)
            if not channels:
                del self._subscriptions[app_id]

    def connections_changed(self, app_id: str, count: int) -> None:
        if count > 0:
            self._connections[app_id] = count
        else:
            self._connections.pop(app_id, None)

    def connection_estimate(self, app_id: str, local: int) -> int:
        return local

    def subscription_snapshot(self) -> Iterator[tuple[str, str, int]]:
        """Every ``(app, channel, count)`` this node holds."""
        for app_id, channels in self._subscriptions.items():
            for channel, count in channels.items():
                yield app_id, channel, count

    def connection_snapshot(self) -> dict[str, int]:
        return dict(self._connections)

    # -- presence ----------------------------------------------------------------------------

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
        done(self.join_now(app_id, channel, socket_id, user_id, user_info, limit))

    def join_now(
        self,
        app_id: str,
        channel: str,
        socket_id: str,
        user_id: Any,
        user_info: Any,
        limit: int,
    ) -> JoinResult:
        presence = self._presence.get((app_id, channel))
        key = user_key(user_id)
        member = None if presence is None else presence.members.get(key)
        if member is None and 0 <= limit <= (0 if presence is None else len(presence.members)):
            return JoinResult(rejected=True)
        first = self.record_join(app_id, channel, socket_id, user_id, user_info)
        return self.joined(app_id, channel, user_id, first)

    def record_join(
        self, app_id: str, channel: str, socket_id: str, user_id: Any, user_info: Any
    ) -> bool:
        """Add the connection, whatever the limit; True when the user is new here."""
        presence = self._presence.get((app_id, channel))
        if presence is None:
            presence = self._presence[(app_id, channel)] = _Presence()
        key = user_key(user_id)
        member = presence.members.get(key)
        first = member is None
        if member is None:
            member = presence.members[key] = LocalMember(user_id)
            presence.ids[key] = user_id
        member.connections[socket_id] = {} if user_info is None else user_info
        presence.infos[key] = member.user_info
        return first

    def has_connection(self, app_id: str, channel: str, socket_id: str, user_id: Any) -> bool:
        presence = self._presence.get((app_id, channel))
        member = None if presence is None else presence.members.get(user_key(user_id))
        return member is not None and socket_id in member.connections

    def joined(self, app_id: str, channel: str, user_id: Any, first: bool) -> JoinResult:
        """The answer to a join :meth:`record_join` has made, from this node's view."""
        presence = self._presence[(app_id, channel)]
        return JoinResult(
            rejected=False,
            first=first,
            user_info=presence.infos[user_key(user_id)],
            roster=presence.roster(),
        )

    def presence_leave(
        self, app_id: str, channel: str, socket_id: str, user_id: Any, done: LeaveDone
    ) -> None:
        gone = self.leave_now(app_id, channel, socket_id, user_id)
        done(LeaveResult(last=gone is not None, user_id=gone.user_id if gone else None))

    def presence_roster(self, app_id: str, channel: str, done: RosterDone) -> None:
        presence = self._presence.get((app_id, channel))
        done(_empty_roster() if presence is None else presence.roster())

    def leave_now(
        self, app_id: str, channel: str, socket_id: str, user_id: Any
    ) -> LocalMember | None:
        """Remove the connection; the member when it was the user's last one here."""
        presence = self._presence.get((app_id, channel))
        if presence is None:
            return None
        key = user_key(user_id)
        member = presence.members.get(key)
        if member is None or member.connections.pop(socket_id, None) is None:
            return None
        if member.connections:
            presence.infos[key] = member.user_info  # the earliest remaining connection's
            return None
        del presence.members[key], presence.ids[key], presence.infos[key]
        if not presence.members:
            del self._presence[(app_id, channel)]
        return member

    def presence_snapshot(self) -> Iterator[tuple[str, str, str, Any, Any]]:
        """Every ``(app, channel, socket_id, user_id, user_info)`` joined on this node."""
        for (app_id, channel), presence in self._presence.items():
            for member in presence.members.values():
                for socket_id, info in member.connections.items():
                    yield app_id, channel, socket_id, member.user_id, info

    def local_users(self, app_id: str, channel: str) -> list[tuple[Any, Any]]:
        presence = self._presence.get((app_id, channel))
        if presence is None:
            return []
        return list(zip(presence.ids.values(), presence.infos.values(), strict=True))

    def local_user_count(self, app_id: str, channel: str) -> int:
        presence = self._presence.get((app_id, channel))
        return 0 if presence is None else len(presence.members)

    # -- cache channels ----------------------------------------------------------------------

    def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: float) -> None:
        self._cache[(app_id, channel)] = (event, data, self._clock() + ttl)

    def cache_get(self, app_id: str, channel: str, done: CacheDone) -> None:
        done(self.cached_now(app_id, channel))

    def cached_now(self, app_id: str, channel: str) -> CachedEvent | None:
        entry = self._cache.get((app_id, channel))
        if entry is None:
            return None
        event, data, expires_at = entry
        left = expires_at - self._clock()
        if left <= 0:
            del self._cache[(app_id, channel)]
            return None
        return CachedEvent(event, data, max(0, int(left)))

    # -- queries -----------------------------------------------------------------------------

    def channels_now(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return {
            name: ChannelCounts(count, self.local_user_count(app_id, name))
            for name, count in self._subscriptions.get(app_id, {}).items()
            if name.startswith(prefix)
        }

    def channel_now(self, app_id: str, name: str) -> ChannelCounts:
        count = self._subscriptions.get(app_id, {}).get(name, 0)
        return ChannelCounts(count, self.local_user_count(app_id, name))

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return self.channels_now(app_id, prefix)

    async def channel(self, app_id: str, name: str) -> ChannelCounts:
        return self.channel_now(app_id, name)

    async def users(self, app_id: str, channel: str) -> list[tuple[Any, Any]]:
        return self.local_users(app_id, channel)

    async def connections(self, app_id: str) -> int:
        return self._connections.get(app_id, 0)

    async def cached(self, app_id: str, channel: str) -> CachedEvent | None:
        return self.cached_now(app_id, channel)
