"""This node's channels, presence rosters, signed-in users and cache, with fan-out.

Rule: no I/O and no clock of its own. Time comes from the injected ``clock``, delayed work from
the injected ``call_later``; delivery goes through each connection's :class:`Outlet`. Every
effect a client sees is sent from here, in the order PROTOCOL.md §5.3 gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..cluster.base import Adapter, CachedEvent, JoinResult, LeaveResult
from ..cluster.local import LocalAdapter
from ..config import App
from ..history import HistoryRecord, HistoryStore, should_record
from ..protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, channel_kind
from ..wire import codec
from ..wire.frames import OP_TEXT, encode_frame
from .fanout import Outlet, fanout
from .state import AppState, Channel, Client, user_key

__all__ = ["Hub", "Recorder", "SentCounter", "WebhookEmitter"]

WebhookEmitter = Callable[[App, dict[str, Any]], None]
"""Receives each webhook-shaped event (HTTP_API.md §5.3) the hub produces."""

Recorder = Callable[[App, str, dict[str, Any]], None]
"""Receives each server event log entry: app, type and fields (RELAY_EXTRAS.md §5.1)."""

SentCounter = Callable[[str, int, int], None]
"""Told once per fan-out: app id, frames delivered, bytes delivered (frames × frame size)."""

TERMINATED_MESSAGE = "You got disconnected by the app."
# Pusher rule for subscription counts on busy channels (PROTOCOL.md §3.9).
COUNT_THROTTLE_SUBSCRIBERS = 100
COUNT_THROTTLE_SECONDS = 30.0


class _PendingJoin:
    """A presence join the cluster has not answered yet; identity tells joins apart."""

    __slots__ = ("presence_id",)

    def __init__(self, presence_id: Any) -> None:
        self.presence_id = presence_id


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
        adapter: Adapter | None = None,
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
        self._adapter: Adapter = adapter if adapter is not None else LocalAdapter(clock)

    @property
    def adapter(self) -> Adapter:
        """Where this node's view ends and the cluster's begins."""
        return self._adapter

    def record(self, app: App, type_: str, **fields: Any) -> None:
        """Add an entry to the server event log (never secrets or payloads, only sizes)."""
        self._record(app, type_, fields)

    def _fanout(
        self, app_id: str, frame: bytes, outlets: Iterable[Outlet], except_socket_id: str | None
    ) -> int:
        """Every local fan-out goes through here: metrics count it once, not per recipient."""
        count = fanout(frame, outlets, except_socket_id)
        if count and self._count_sent is not None:
            self._count_sent(app_id, count, count * len(frame))
        return count

    def _fanout_topic(
        self, app: App, topic: str, frame: bytes, except_socket_id: str | None
    ) -> int:
        """Deliver to ``topic``'s subscribers on every node; returns the deliveries made here
        now (0 when the cluster delivers on this node too, in the cluster's order).

        The frame crosses to other nodes already encoded.
        """
        if self._adapter.broadcast(app.id, topic, frame, except_socket_id):
            return 0
        return self.deliver(app.id, topic, frame, except_socket_id)

    def deliver(self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None) -> int:
        """Fan ``frame`` out to this node's subscribers of ``topic`` (the adapter's entry)."""
        state = self._apps.get(app_id)
        if state is None:
            return 0
        if topic.startswith(USER_CHANNEL_PREFIX):
            user = state.users.get(topic[len(USER_CHANNEL_PREFIX) :])
            if not user:
                return 0
            return self._fanout(app_id, frame, [c.outlet for c in user.values()], except_socket_id)
        channel = state.channels.get(topic)
        if channel is None:
            return 0
        return self._fanout(app_id, frame, channel.outlets.values(), except_socket_id)

    # -- connections -------------------------------------------------------------------------

    def _state(self, app_id: str) -> AppState:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = AppState()
        return state

    def add_client(self, client: Client) -> None:
        clients = self._state(client.app.id).clients
        clients[client.socket_id] = client
        self._adapter.connections_changed(client.app.id, len(clients))

    def remove_client(self, client: Client) -> None:
        """The disconnect path (PROTOCOL.md §12): leave every channel, drop the user index."""
        state = self._apps.get(client.app.id)
        if state is None or state.clients.pop(client.socket_id, None) is None:
            return
        self._adapter.connections_changed(client.app.id, len(state.clients))
        for name in list(client.channels):
            self.unsubscribe(client, name)
        if client.pending:
            for name in list(client.pending):
                self._cancel_pending(client, name)
        if client.user_id is not None:
            self._sign_out(state, client)
        if state.is_empty():
            del self._apps[client.app.id]

    def connection_count(self, app_id: str) -> int:
        """This node's connections of the app."""
        state = self._apps.get(app_id)
        return len(state.clients) if state else 0

    def cluster_connection_count(self, app_id: str) -> int:
        """The app's connections on all nodes, as last seen (quota checks)."""
        return self._adapter.connection_estimate(app_id, self.connection_count(app_id))

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

        A presence subscription is first joined in the adapter (which may ask other nodes);
        the connection is added to the channel when the join is answered.
        """
        app = client.app
        if name in client.channels or (client.pending and name in client.pending):
            # Already subscribed: repeat the success, change nothing (step 3). A join still
            # pending answers for itself.
            if name not in client.channels:
                return
            if channel_kind(name).is_presence:
                self._adapter.presence_roster(
                    app.id, name, lambda roster: self._repeat_success(client, name, roster)
                )
            else:
                client.send(codec.encode_subscription_succeeded(name))
            return
        kind = channel_kind(name)
        if not kind.is_presence:
            self._register(client, name, kind, None)
            self._confirm(client, name, kind, codec.encode_subscription_succeeded(name))
            return
        token = _PendingJoin(presence_id)
        if client.pending is None:
            client.pending = {}
        client.pending[name] = token
        self._adapter.presence_join(
            app.id,
            name,
            client.socket_id,
            presence_id,
            user_info,
            app.max_presence_members,
            lambda result: self._joined(client, name, presence_id, token, result),
        )

    def _confirm(self, client: Client, name: str, kind: ChannelKind, succeeded: bytes) -> None:
        """Send ``subscription_succeeded`` once this node hears the channel from every node
        (at once on a single node), then what follows it."""

        def ready() -> None:
            if name in client.channels:
                client.send(succeeded)
                self._after_success(client, name, kind)

        self._adapter.ready(client.app.id, name, ready)

    def _repeat_success(self, client: Client, name: str, roster: dict[str, Any]) -> None:
        if name in client.channels:
            client.send(codec.encode_subscription_succeeded(name, roster))

    def _register(self, client: Client, name: str, kind: ChannelKind, presence_id: Any) -> Channel:
        """Add the connection to the channel on this node."""
        app = client.app
        state = self._state(app.id)
        channel = state.channels.get(name)
        if channel is None:
            channel = state.channels[name] = Channel(name, kind)
            self._adapter.interest(app.id, name, True)
            self._adapter.occupancy(
                app.id, name, True, lambda first: self._occupancy_changed(app, name, first, True)
            )
        channel.outlets[client.socket_id] = client.outlet
        # The channel's own name object: the message's copy would stay alive per connection.
        client.add_channel(channel.name)
        if kind.is_presence:
            if client.presence_ids is None:
                client.presence_ids = {}
            client.presence_ids[name] = presence_id
        self._adapter.subscriptions_changed(app.id, name, len(channel.outlets))
        self._record(
            app,
            "subscribed",
            {"socket_id": client.socket_id, "channel": name, "user_id": presence_id},
        )
        return channel

    def _after_success(self, client: Client, name: str, kind: ChannelKind) -> None:
        """What follows ``subscription_succeeded``: the cached event, the count broadcast."""
        app = client.app
        if kind.is_cache:
            self._adapter.cache_get(
                app.id, name, lambda cached: self._send_cached(client, name, cached)
            )
        channel = self._apps[app.id].channels.get(name)
        if channel is not None:
            self._count_changed(app, channel)

    def _send_cached(self, client: Client, name: str, cached: CachedEvent | None) -> None:
        if name not in client.channels:
            return
        if cached is not None:
            client.send(codec.encode_channel_event(cached.event, name, cached.data))
        else:
            client.send(codec.encode_cache_miss(name))
            self._emit_webhook(client.app, {"name": "cache_miss", "channel": name})

    def _joined(
        self, client: Client, name: str, presence_id: Any, token: _PendingJoin, result: JoinResult
    ) -> None:
        """The cluster answered a presence join (synchronously, for a local adapter)."""
        app = client.app
        pending = client.pending
        current = pending is not None and pending.get(name) is token
        if current:
            assert pending is not None
            del pending[name]
            if not pending:
                client.pending = None
        if result.rejected:
            if current:
                error = (
                    f"The maximum number of members in this channel "
                    f"({app.max_presence_members}) has been reached"
                )
                client.send(codec.encode_subscription_error(name, "LimitReached", error, 4100))
                self._record(
                    app,
                    "subscription_failed",
                    {
                        "socket_id": client.socket_id,
                        "channel": name,
                        "error_type": "LimitReached",
                        "status": 4100,
                    },
                )
            return
        if current:
            kind = channel_kind(name)
            self._register(client, name, kind, presence_id)
            self._confirm(
                client, name, kind, codec.encode_subscription_succeeded(name, result.roster)
            )
        if result.first:
            # Announced even when the connection left meanwhile: its leave, already on its way
            # to the cluster, will announce member_removed after this.
            added = codec.encode_member_added(name, presence_id, result.user_info)
            self._fanout_topic(app, name, encode_frame(OP_TEXT, added), client.socket_id)
            self._emit_webhook(
                app, {"name": "member_added", "channel": name, "user_id": presence_id}
            )
            self._record(app, "member_added", {"channel": name, "user_id": presence_id})

    def _cancel_pending(self, client: Client, name: str) -> bool:
        """Withdraw a join the cluster has not answered; its answer will find it gone."""
        pending = client.pending
        if pending is None or name not in pending:
            return False
        token = pending.pop(name)
        if not pending:
            client.pending = None
        self._leave_presence(client.app, name, client.socket_id, token.presence_id)
        return True

    def _leave_presence(self, app: App, name: str, socket_id: str, presence_id: Any) -> None:
        self._adapter.presence_leave(
            app.id,
            name,
            socket_id,
            presence_id,
            lambda result: self._left(app, name, result),
        )

    def _left(self, app: App, name: str, result: LeaveResult) -> None:
        if result.last:
            self.member_gone(app, name, result.user_id)

    def member_gone(self, app: App, name: str, user_id: Any) -> None:
        """``user_id`` has no connection left in presence channel ``name`` on any node."""
        removed = codec.encode_member_removed(name, user_id)
        self._fanout_topic(app, name, encode_frame(OP_TEXT, removed), None)
        self._emit_webhook(app, {"name": "member_removed", "channel": name, "user_id": user_id})
        self._record(app, "member_removed", {"channel": name, "user_id": user_id})

    def unsubscribe(self, client: Client, name: str) -> None:
        """Leave one channel; a no-op when not subscribed (PROTOCOL.md §3.7)."""
        if name not in client.channels:
            self._cancel_pending(client, name)
            return
        client.discard_channel(name)
        app = client.app
        state = self._apps[app.id]
        channel = state.channels[name]
        del channel.outlets[client.socket_id]
        presence_ids = client.presence_ids
        presence_id = None
        if presence_ids is not None:
            presence_id = presence_ids.pop(name, None)
            if not presence_ids:
                client.presence_ids = None
        self._adapter.subscriptions_changed(app.id, name, len(channel.outlets))
        self._record(
            app,
            "unsubscribed",
            {"socket_id": client.socket_id, "channel": name, "user_id": presence_id},
        )
        if channel.kind.is_presence:
            self._leave_presence(app, name, client.socket_id, presence_id)
        if not channel.outlets:
            del state.channels[name]
            self._adapter.interest(app.id, name, False)
            if channel.count_timer is not None:
                channel.count_timer.cancel()
            self._adapter.occupancy(
                app.id, name, False, lambda last: self._occupancy_changed(app, name, last, False)
            )
        else:
            self._count_changed(app, channel)

    def _occupancy_changed(self, app: App, name: str, changed: bool, occupied: bool) -> None:
        """``channel_occupied``/``channel_vacated``, when the cluster says this was the change."""
        if changed:
            event = "channel_occupied" if occupied else "channel_vacated"
            self._emit_webhook(app, {"name": event, "channel": name})

    def channel_vacated(self, app: App, name: str) -> None:
        """A departed node held the channel's last subscribers anywhere (the adapter's entry)."""
        self._occupancy_changed(app, name, True, False)

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
        self._fanout(app.id, frame, channel.outlets.values(), None)
        self._emit_webhook(
            app,
            {"name": "subscription_count", "channel": channel.name, "subscription_count": count},
        )

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self, app: App, channel: str, event: str, data: str, except_socket_id: str | None = None
    ) -> int:
        """Deliver one API event to its subscribers on every node; returns how many here got it.

        Cache channels remember it; ``#server-to-user-X`` goes to every connection signed
        in as X, subscribed or not (PROTOCOL.md §3.15).
        """
        kind = channel_kind(channel)
        if kind.is_cache:
            self._adapter.cache_put(app.id, channel, event, data, self._cache_ttl)
        message = codec.encode_channel_event(event, channel, data)
        if self._recording(channel, event, "api"):
            if self._publish_recorded(app, channel, message, event, data, "api", except_socket_id):
                return 0  # on its way to every node, this one included
            event_id = self._remember(app, channel, event, data, "api", except_socket_id, None)
            message = codec.encode_channel_event(event, channel, data, event_id)
        return self._fanout_topic(app, channel, encode_frame(OP_TEXT, message), except_socket_id)

    def _recording(self, channel: str, event: str, source: str) -> bool:
        return self._history is not None and should_record(
            channel, event, source, client_events=self._history_client_events
        )

    def _publish_recorded(
        self,
        app: App,
        channel: str,
        message: bytes,
        event: str,
        data: Any,
        source: str,
        socket_id: str | None,
        user_id: Any = None,
    ) -> bool:
        """Hand a recorded event to the cluster's shared history, if it keeps one."""
        record = HistoryRecord(
            0, event, channel, data, self._wall_clock_ms(), source, socket_id, user_id
        ).to_json()
        del record["id"]
        return self._adapter.publish_recorded(app.id, channel, message, record, socket_id)

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
        """Record an accepted event in this node's history; its id goes into the envelope."""
        assert self._history is not None
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
        presence_ids = client.presence_ids
        user_id = presence_ids.get(channel) if presence_ids is not None else None
        message = codec.encode_client_event(event, channel, data, user_id)
        sender = client.socket_id
        count = 0
        if not self._recording(channel, event, "client"):
            count = self._fanout_topic(app, channel, encode_frame(OP_TEXT, message), sender)
        elif not self._publish_recorded(
            app, channel, message, event, data, "client", sender, user_id
        ):
            event_id = self._remember(app, channel, event, data, "client", sender, user_id)
            message = codec.encode_client_event(event, channel, data, user_id, event_id)
            count = self._fanout_topic(app, channel, encode_frame(OP_TEXT, message), sender)
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

    # -- users -------------------------------------------------------------------------------

    def sign_in(
        self, client: Client, user_id: str, watchlist: tuple[str, ...], ack: bytes | None = None
    ) -> None:
        """Index a signed-in connection, then send ``ack`` (``pusher:signin_success``) and the
        watchlist state (PROTOCOL.md §10.1, §10.4) once this node hears the user's topic from
        every node, so a ``#server-to-user`` event sent after the ack reaches it."""
        state = self._state(client.app.id)
        client.user_id = user_id
        client.watchlist = watchlist
        self._record(client.app, "signin", {"socket_id": client.socket_id, "user_id": user_id})
        connections = state.users.setdefault(user_id, {})
        came_online = not connections
        connections[client.socket_id] = client
        if came_online:
            self._adapter.interest(client.app.id, USER_CHANNEL_PREFIX + user_id, True)
        replies = [ack] if ack is not None else []
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
                replies.append(codec.encode_watchlist_events(events))

        def ready() -> None:
            for reply in replies:
                client.send(reply)

        self._adapter.ready(client.app.id, USER_CHANNEL_PREFIX + user_id, ready)

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
            self._adapter.interest(client.app.id, USER_CHANNEL_PREFIX + user_id, False)
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
        self._fanout(app.id, frame, outlets, None)

    def terminate_user(self, app_id: str, user_id: str) -> int:
        """Close every connection signed in as, or present as, ``user_id`` (PROTOCOL.md §10.5),
        on every node; returns how many were closed here."""
        self._adapter.terminate_user(app_id, user_id)
        return self.terminate_local_user(app_id, user_id)

    def terminate_local_user(self, app_id: str, user_id: str) -> int:
        """As :meth:`terminate_user`, on this node only (the adapter's entry)."""
        state = self._apps.get(app_id)
        if state is None:
            return 0
        targets = dict(state.users.get(user_id, {}))
        for client in state.clients.values():
            presence_ids = client.presence_ids
            if presence_ids and any(user_key(uid) == user_id for uid in presence_ids.values()):
                targets[client.socket_id] = client
        for client in targets.values():
            client.terminate(4009, TERMINATED_MESSAGE)
        return len(targets)

    # -- queries (this node) ------------------------------------------------------------------

    def channels(self, app_id: str, prefix: str = "") -> Iterator[Channel]:
        state = self._apps.get(app_id)
        if state is None:
            return iter(())
        return (c for name, c in state.channels.items() if name.startswith(prefix))

    def channel(self, app_id: str, name: str) -> Channel | None:
        state = self._apps.get(app_id)
        return state.channels.get(name) if state else None
