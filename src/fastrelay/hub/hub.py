"""This node's channels, presence rosters, signed-in users and cache, with fan-out.

Rule: no I/O and no clock of its own. Time comes from the injected ``clock``, delayed work from
the injected ``call_later``; delivery goes through each connection's :class:`Outlet`. Every
effect a client sees is sent from here, in the order PROTOCOL.md §5.3 gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..config import App
from ..errors import SubscriptionError
from ..history import HistoryStore, should_record
from ..protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, channel_kind
from ..wire import codec
from ..wire.frames import OP_TEXT, encode_frame
from .fanout import Outlet, fanout
from .state import AppState, CachedEvent, Channel, Client, Member, user_key

__all__ = ["Hub", "Recorder", "SentCounter", "WebhookEmitter"]

WebhookEmitter = Callable[[App, dict[str, Any]], None]
"""Receives each webhook-shaped event (HTTP_API.md §5.3) the hub produces."""

Recorder = Callable[[App, str, dict[str, Any]], None]
"""Receives each server event log entry: app, type and fields (RELAY_EXTRAS.md §5.1)."""

SentCounter = Callable[[App, int, int], None]
"""Told once per fan-out: app, frames delivered, bytes delivered (frames × frame size)."""

TERMINATED_MESSAGE = "You got disconnected by the app."
# Pusher rule for subscription counts on busy channels (PROTOCOL.md §3.9).
COUNT_THROTTLE_SUBSCRIBERS = 100
COUNT_THROTTLE_SECONDS = 30.0


def _no_webhooks(app: App, event: dict[str, Any]) -> None:
    return None


def _no_record(app: App, type_: str, fields: dict[str, Any]) -> None:
    return None


class Hub:
    """Local state of one node; one instance per server, owned by its event loop."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], Any],
        cache_ttl: float = 1800.0,
        emit_webhook: WebhookEmitter = _no_webhooks,
        record: Recorder = _no_record,
        history: HistoryStore | None = None,
        history_client_events: bool = False,
        wall_clock_ms: Callable[[], int] = lambda: 0,
        count_sent: SentCounter | None = None,
    ) -> None:
        self._clock = clock
        self._call_later = call_later
        self._cache_ttl = cache_ttl
        self._emit_webhook = emit_webhook
        self._record = record
        self._history = history
        self._history_client_events = history_client_events
        self._wall_clock_ms = wall_clock_ms
        self._count_sent = count_sent
        self._apps: dict[str, AppState] = {}

    def record(self, app: App, type_: str, **fields: Any) -> None:
        """Add an entry to the server event log (never secrets or payloads, only sizes)."""
        self._record(app, type_, fields)

    def _fanout(
        self, app: App, frame: bytes, outlets: Iterable[Outlet], except_socket_id: str | None
    ) -> int:
        """Every fan-out goes through here: metrics count it once, not per recipient."""
        count = fanout(frame, outlets, except_socket_id)
        if count and self._count_sent is not None:
            self._count_sent(app, count, count * len(frame))
        return count

    # -- connections -------------------------------------------------------------------------

    def _state(self, app_id: str) -> AppState:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = AppState()
        return state

    def add_client(self, client: Client) -> None:
        self._state(client.app.id).clients[client.socket_id] = client

    def remove_client(self, client: Client) -> None:
        """The disconnect path (PROTOCOL.md §12): leave every channel, drop the user index."""
        state = self._apps.get(client.app.id)
        if state is None or state.clients.pop(client.socket_id, None) is None:
            return
        for name in list(client.channels):
            self.unsubscribe(client, name)
        if client.user_id is not None:
            self._sign_out(state, client)
        # Keep the cache: it outlives subscribers (PROTOCOL.md §11).
        if state.is_empty() and not state.cache:
            del self._apps[client.app.id]

    def connection_count(self, app_id: str) -> int:
        state = self._apps.get(app_id)
        return len(state.clients) if state else 0

    def total_connections(self) -> int:
        return sum(len(s.clients) for s in self._apps.values())

    def total_channels(self) -> int:
        return sum(len(s.channels) for s in self._apps.values())

    def is_empty(self) -> bool:
        return all(state.is_empty() for state in self._apps.values())

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self, client: Client, name: str, presence_id: Any = None, user_info: Any = None
    ) -> None:
        """Add a subscription and send what follows it (PROTOCOL.md §5.3 steps 3 and 7–10).

        Raises:
            SubscriptionError: the presence channel is full.
        """
        app = client.app
        state = self._state(app.id)
        channel = state.channels.get(name)
        if name in client.channels:
            # Already subscribed: repeat the success, change nothing (step 3).
            assert channel is not None
            client.send(
                codec.encode_subscription_succeeded(
                    name, channel.presence_payload() if channel.kind.is_presence else None
                )
            )
            return
        kind = channel.kind if channel is not None else channel_kind(name)
        new_member = False
        if kind.is_presence:
            key = user_key(presence_id)
            members = channel.members if channel is not None else {}
            new_member = key not in members
            if new_member and 0 <= app.max_presence_members <= len(members):
                raise SubscriptionError(
                    "LimitReached",
                    f"The maximum number of members in this channel ({app.max_presence_members}) "
                    "has been reached",
                    4100,
                )
        if channel is None:
            channel = state.channels[name] = Channel(name, kind)
            self._emit_webhook(app, {"name": "channel_occupied", "channel": name})
        channel.outlets[client.socket_id] = client.outlet
        client.channels.add(name)
        self._record(
            app,
            "subscribed",
            {"socket_id": client.socket_id, "channel": name, "user_id": presence_id},
        )

        if kind.is_presence:
            key = user_key(presence_id)
            member = channel.members.get(key)
            if member is None:
                member = channel.members[key] = Member(presence_id)
            member.connections[client.socket_id] = {} if user_info is None else user_info
            client.presence_ids[name] = presence_id
            client.send(codec.encode_subscription_succeeded(name, channel.presence_payload()))
            if new_member:
                added = codec.encode_member_added(name, presence_id, member.user_info)
                frame = encode_frame(OP_TEXT, added)
                self._fanout(app, frame, channel.outlets.values(), client.socket_id)
                self._emit_webhook(
                    app, {"name": "member_added", "channel": name, "user_id": presence_id}
                )
                self._record(app, "member_added", {"channel": name, "user_id": presence_id})
        else:
            client.send(codec.encode_subscription_succeeded(name))

        if kind.is_cache:
            cached = self._cached(state, name)
            if cached is not None:
                client.send(codec.encode_channel_event(cached.event, name, cached.data))
            else:
                client.send(codec.encode_cache_miss(name))
                self._emit_webhook(app, {"name": "cache_miss", "channel": name})
        self._count_changed(app, channel)

    def unsubscribe(self, client: Client, name: str) -> None:
        """Leave one channel; a no-op when not subscribed (PROTOCOL.md §3.7)."""
        if name not in client.channels:
            return
        client.channels.discard(name)
        app = client.app
        state = self._apps[app.id]
        channel = state.channels[name]
        del channel.outlets[client.socket_id]
        presence_id = client.presence_ids.pop(name, None)
        self._record(
            app,
            "unsubscribed",
            {"socket_id": client.socket_id, "channel": name, "user_id": presence_id},
        )
        if channel.kind.is_presence:
            key = user_key(presence_id)
            member = channel.members[key]
            del member.connections[client.socket_id]
            if not member.connections:
                del channel.members[key]
                removed = codec.encode_member_removed(name, member.user_id)
                self._fanout(app, encode_frame(OP_TEXT, removed), channel.outlets.values(), None)
                self._emit_webhook(
                    app, {"name": "member_removed", "channel": name, "user_id": member.user_id}
                )
                self._record(app, "member_removed", {"channel": name, "user_id": member.user_id})
        if not channel.outlets:
            del state.channels[name]
            if channel.count_timer is not None:
                channel.count_timer.cancel()
            self._emit_webhook(app, {"name": "channel_vacated", "channel": name})
        else:
            self._count_changed(app, channel)

    def _count_changed(self, app: App, channel: Channel) -> None:
        """Broadcast ``subscription_count`` when the app wants it (PROTOCOL.md §3.9)."""
        if not app.subscription_count_enabled or channel.kind.is_presence:
            return
        if channel.subscription_count <= COUNT_THROTTLE_SUBSCRIBERS:
            self._send_count(app, channel)
            return
        wait = channel.count_sent_at + COUNT_THROTTLE_SECONDS - self._clock()
        if wait <= 0:
            self._send_count(app, channel)
        elif channel.count_timer is None:
            # Trailing update once the window is over, with the count at that time.
            channel.count_timer = self._call_later(wait, lambda: self._send_count(app, channel))

    def _send_count(self, app: App, channel: Channel) -> None:
        channel.count_timer = None
        channel.count_sent_at = self._clock()
        count = channel.subscription_count
        if not count:
            return
        frame = encode_frame(OP_TEXT, codec.encode_subscription_count(channel.name, count))
        self._fanout(app, frame, channel.outlets.values(), None)
        self._emit_webhook(
            app,
            {"name": "subscription_count", "channel": channel.name, "subscription_count": count},
        )

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self, app: App, channel: str, event: str, data: str, except_socket_id: str | None = None
    ) -> int:
        """Deliver one API event to this node's subscribers; returns how many got it.

        Cache channels remember it; ``#server-to-user-X`` goes to every connection signed
        in as X, subscribed or not (PROTOCOL.md §3.15).
        """
        state = self._state(app.id)
        kind = channel_kind(channel)
        if kind.is_cache:
            state.cache[channel] = CachedEvent(event, data, self._clock() + self._cache_ttl)
        event_id = self._remember(app, channel, event, data, "api", except_socket_id, None)
        frame = encode_frame(OP_TEXT, codec.encode_channel_event(event, channel, data, event_id))
        if kind is ChannelKind.USER:
            user = state.users.get(channel[len(USER_CHANNEL_PREFIX) :])
            if not user:
                return 0
            return self._fanout(app, frame, [c.outlet for c in user.values()], except_socket_id)
        target = state.channels.get(channel)
        if target is None:
            return 0
        return self._fanout(app, frame, target.outlets.values(), except_socket_id)

    def _remember(
        self,
        app: App,
        channel: str,
        event: str,
        data: Any,
        source: str,
        socket_id: str | None,
        user_id: Any,
    ) -> int | None:
        """Record an accepted event in the history, if kept; its id goes into the envelope."""
        if self._history is None or not should_record(
            channel, event, source, client_events=self._history_client_events
        ):
            return None
        return self._history.append(
            app.id,
            channel,
            event,
            data,
            source=source,
            time_ms=self._wall_clock_ms(),
            socket_id=socket_id,
            user_id=user_id,
        )

    def relay_client_event(self, client: Client, channel: str, event: str, data: Any) -> int:
        """Relay a validated client event to the channel's other subscribers."""
        app = client.app
        state = self._apps[app.id]
        target = state.channels[channel]
        user_id = client.presence_ids.get(channel)
        event_id = self._remember(app, channel, event, data, "client", client.socket_id, user_id)
        message = codec.encode_client_event(event, channel, data, user_id, event_id)
        frame = encode_frame(OP_TEXT, message)
        count = self._fanout(app, frame, target.outlets.values(), client.socket_id)
        hook: dict[str, Any] = {
            "name": "client_event",
            "channel": channel,
            "event": event,
            "data": data if isinstance(data, str) else codec.json_dumps(data).decode(),
            "socket_id": client.socket_id,
        }
        if user_id is not None:
            hook["user_id"] = user_id
        self._emit_webhook(app, hook)
        self._record(
            app,
            "client_event",
            {
                "socket_id": client.socket_id,
                "channel": channel,
                "event": event,
                "data_size": len(hook["data"].encode()),
            },
        )
        return count

    def _cached(self, state: AppState, channel: str) -> CachedEvent | None:
        cached = state.cache.get(channel)
        if cached is not None and cached.expires_at <= self._clock():
            del state.cache[channel]
            return None
        return cached

    # -- users -------------------------------------------------------------------------------

    def sign_in(self, client: Client, user_id: str, watchlist: tuple[str, ...]) -> None:
        """Index a signed-in connection and send the watchlist state (PROTOCOL.md §10.1, §10.4)."""
        state = self._state(client.app.id)
        client.user_id = user_id
        client.watchlist = watchlist
        self._record(client.app, "signin", {"socket_id": client.socket_id, "user_id": user_id})
        connections = state.users.setdefault(user_id, {})
        came_online = not connections
        connections[client.socket_id] = client
        if client.app.watchlist_events_enabled:
            for watched in watchlist:
                state.watchers.setdefault(watched, set()).add(client.socket_id)
            if came_online:
                self._notify_watchers(client.app, state, user_id, "online")
            if watchlist:
                online = [w for w in watchlist if state.users.get(w)]
                offline = [w for w in watchlist if not state.users.get(w)]
                events = [
                    {"name": name, "user_ids": ids}
                    for name, ids in (("online", online), ("offline", offline))
                    if ids
                ]
                client.send(codec.encode_watchlist_events(events))

    def _sign_out(self, state: AppState, client: Client) -> None:
        user_id = client.user_id
        assert user_id is not None
        connections = state.users.get(user_id, {})
        connections.pop(client.socket_id, None)
        for watched in client.watchlist:
            watchers = state.watchers.get(watched)
            if watchers is not None:
                watchers.discard(client.socket_id)
                if not watchers:
                    del state.watchers[watched]
        if not connections:
            state.users.pop(user_id, None)
            if client.app.watchlist_events_enabled:
                self._notify_watchers(client.app, state, user_id, "offline")

    def _notify_watchers(self, app: App, state: AppState, user_id: str, name: str) -> None:
        watchers = state.watchers.get(user_id)
        if not watchers:
            return
        frame = encode_frame(
            OP_TEXT, codec.encode_watchlist_events([{"name": name, "user_ids": [user_id]}])
        )
        outlets = [state.clients[s].outlet for s in watchers if s in state.clients]
        self._fanout(app, frame, outlets, None)

    def terminate_user(self, app_id: str, user_id: str) -> int:
        """Close every connection signed in as, or present as, ``user_id`` (PROTOCOL.md §10.5)."""
        state = self._apps.get(app_id)
        if state is None:
            return 0
        targets = dict(state.users.get(user_id, {}))
        for client in state.clients.values():
            if any(user_key(uid) == user_id for uid in client.presence_ids.values()):
                targets[client.socket_id] = client
        for client in targets.values():
            client.terminate(4009, TERMINATED_MESSAGE)
        return len(targets)

    # -- queries (HTTP API) ------------------------------------------------------------------

    def channels(self, app_id: str, prefix: str = "") -> Iterator[Channel]:
        state = self._apps.get(app_id)
        if state is None:
            return iter(())
        return (c for name, c in state.channels.items() if name.startswith(prefix))

    def channel(self, app_id: str, name: str) -> Channel | None:
        state = self._apps.get(app_id)
        return state.channels.get(name) if state else None

    def cached_event(self, app_id: str, name: str) -> CachedEvent | None:
        state = self._apps.get(app_id)
        return self._cached(state, name) if state else None

    def cache_ttl_left(self, cached: CachedEvent) -> int:
        return max(0, int(cached.expires_at - self._clock()))
