"""Scale-out over Redis: pub/sub for messages, Lua-guarded keys for shared state.

Traffic. A node subscribes on Redis only to the topics it has local subscribers for (first local
subscriber: ``SUBSCRIBE``; last one gone: ``UNSUBSCRIBE``), so a message reaches only nodes
that want it. A published message crosses Redis as the finished WebSocket frame,
``{origin}{except socket}\\n{frame}``, and every node with subscribers, the publishing one
included, delivers it when it comes back: so every subscriber on every node gets a channel's
messages in the one order Redis took them, and a receiving node fans the bytes out without any
JSON work. An HTTP publish is confirmed once Redis has it (:meth:`RedisAdapter.settled`), and a
subscription once Redis has confirmed the node's ``SUBSCRIBE`` (:meth:`RedisAdapter.ready`).

State. Presence rosters, per-node counts and cache-channel last events live in Redis
(:mod:`.scripts` documents the keys). Every node heart-beats into a sorted set every
``node_timeout / 5`` seconds; the same script removes nodes silent for ``node_timeout`` with
their presence members, and the node that ran it announces ``member_removed`` for users left
with no connection. A dead node's members are therefore gone within ``node_timeout`` plus one
heartbeat interval (6 s with the 5 s default).

Outages. While Redis is away the node keeps serving its own clients from a
:class:`LocalAdapter` it keeps up to date all along; ``healthy`` is False (``/health`` says
DEGRADED) and messages for other nodes are dropped. On reconnect it re-registers its counts and
presence members and re-subscribes its topics; members that joined or left meanwhile are
announced to the other nodes then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..history.base import HistoryRecord, history_response, select_page
from ..protocol.channels import channel_kind
from ..wire import codec
from ..wire.frames import OP_TEXT, encode_frame
from . import scripts
from .base import (
    Adapter,
    CachedEvent,
    CacheDone,
    ChannelCounts,
    ClusterUnavailable,
    JoinDone,
    JoinResult,
    LeaveDone,
    LeaveResult,
    Receiver,
    RosterDone,
    roster_payload,
)
from .local import LocalAdapter, user_key
from .redis_client import RedisClient, RedisSubscriber, RedisUnavailable
from .resp import RedisReplyError

__all__ = ["HistoryLimits", "RedisAdapter"]

log = logging.getLogger("fastrelay.cluster")

NODE_ID_LENGTH = 12  # hex characters; fixed, so a message's origin is a slice
START_WAIT = 3.0  # seconds start() waits for Redis before serving degraded
STOP_WAIT = 2.0  # seconds stop() gives the goodbye commands
_TERMINATE = b"T"
# The origin of messages every node delivers, the publishing one included. A message bearing a
# node's own id instead is for the other nodes only (announcements after an outage).
_EVERY_NODE = b"*" * NODE_ID_LENGTH


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """Retention of the shared history (RELAY_EXTRAS.md §4.2): per channel, and in seconds."""

    max_events: int
    max_age: float


def _base(prefix: str) -> str:
    if prefix and not prefix.endswith(":"):
        prefix += ":"
    return prefix + "fastrelay:"


def _roster(flat: list[bytes]) -> dict[str, Any]:
    """The ``subscription_succeeded`` payload from an ``…:i`` hash (user key → [id, info])."""
    ids: list[Any] = []
    infos: dict[str, Any] = {}
    for j in range(0, len(flat), 2):
        user_id, info = orjson.loads(flat[j + 1])
        ids.append(user_id)
        infos[flat[j].decode()] = info
    return roster_payload(ids, infos)


class RedisAdapter(Adapter):
    """The cluster through one Redis server: a command connection and a pub/sub connection."""

    def __init__(
        self,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        prefix: str = "",
        node_timeout: float = 5.0,
        node_id: str | None = None,
        history: HistoryLimits | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._loop = loop
        self._base = _base(prefix)
        self._node = node_id or secrets.token_hex(NODE_ID_LENGTH // 2)
        assert len(self._node) == NODE_ID_LENGTH
        self._node_bytes = self._node.encode()
        self._timeout_ms = int(node_timeout * 1000)
        self._interval = max(0.05, node_timeout / 5)
        self._nodes_key = self._base + "nodes"
        self._node_key = f"{self._base}n:{self._node}"
        self._control = (self._base + "control").encode()
        self._local = LocalAdapter(loop.time)
        self._receiver: Receiver | None = None
        self._client = RedisClient(
            url, loop=loop, on_connect=self._registered, on_state=self._state
        )
        self._subscriber = RedisSubscriber(url, loop=loop, on_message=self._on_message)
        # Redis channel → (app, topic), for the topics this node has subscribers of.
        self._topics: dict[bytes, tuple[str, str]] = {}
        self._dirty_subscriptions: dict[tuple[str, str], int] = {}
        self._dirty_connections: dict[str, int] = {}
        self._flush_scheduled = False
        self._others: dict[str, int] = {}  # app → connections on the other nodes
        self._heartbeat: asyncio.Task[None] | None = None
        self._history = history
        # Told (app, seconds) for every query round trip: the adapter latency metric.
        self._observe = observe
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node

    @property
    def healthy(self) -> bool:
        return self._client.connected and self._subscriber.connected

    async def start(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._subscriber.subscribe(self._control)
        self._client.start()
        self._subscriber.start()
        ready = await self._client.wait_connected(START_WAIT)
        ready = await self._subscriber.wait_subscribed(START_WAIT) and ready
        if not ready:
            log.warning("Redis is not reachable yet: serving this node's clients alone until it is")
        self._heartbeat = self._loop.create_task(self._beat())
        log.info(
            "cluster: node %s on Redis (node timeout %.1f s)", self._node, self._timeout_ms / 1000
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        self._flush()
        if self._client.connected:
            # Leave the cluster now rather than after a node timeout: zero counts, no members.
            # (Clients are gone by now, so their presence leaves are already queued ahead.)
            with contextlib.suppress(RedisUnavailable, RedisReplyError, asyncio.TimeoutError):
                await asyncio.wait_for(self._goodbye(), STOP_WAIT)
        await self._subscriber.close()
        await self._client.close()

    async def _goodbye(self) -> None:
        gone, vacated = await self._client.execute(
            "EVALSHA", scripts.sha(scripts.NODE_LEAVE), 1, self._nodes_key, self._node, self._base
        )
        self._members_gone(gone)
        self._channels_vacated(vacated)
        await self._client.execute("PING")  # the member_removed broadcasts are out

    def _state(self, connected: bool) -> None:
        if not connected and not self._stopping:
            log.warning("cluster: Redis connection lost; serving local clients only")

    # -- registration (after every connect) --------------------------------------------------

    def _registered(self) -> None:
        """Runs right after each (re)connect, ahead of anything else on the connection."""
        client = self._client
        for script in (
            scripts.JOIN,
            scripts.LEAVE,
            scripts.HEARTBEAT,
            scripts.NODE_RESET,
            scripts.NODE_LEAVE,
            scripts.CHANNELS,
            scripts.CHANNEL,
            scripts.CONNECTIONS,
            scripts.HISTORY_PUBLISH,
            scripts.OCCUPANCY,
        ):
            client.send("SCRIPT", "LOAD", script)
        if self._history is not None:
            # A fresh Redis (restarted without its data) starts a new epoch: clients then
            # discard their cursors (RELAY_EXTRAS.md §4.4).
            client.send("SET", self._base + "h:epoch", int(time.time() * 1000), "NX")
        self._send_heartbeat(first=True)
        client.send(
            "EVALSHA", scripts.sha(scripts.NODE_RESET), 1, self._nodes_key, self._node, self._base
        )
        self._dirty_subscriptions.clear()
        self._dirty_connections.clear()
        apps: set[str] = set()
        for app_id, channel, count in self._local.subscription_snapshot():
            client.send("HSET", f"{self._node_key}:a:{app_id}", channel, count)
            client.send(*self._occupancy_command(app_id, channel, True))
            apps.add(app_id)
        for app_id, count in self._local.connection_snapshot().items():
            client.send("HSET", f"{self._node_key}:conns", app_id, count)
        if apps:
            client.send("SADD", f"{self._node_key}:apps", *apps)
        # What this node held when it asked; joins and leaves made after the question go to
        # Redis on their own, behind it, and must not be redone from a stale view.
        held = {
            self._membership(app_id, channel, socket_id, user_id): (
                app_id,
                channel,
                socket_id,
                user_id,
                info,
            )
            for app_id, channel, socket_id, user_id, info in self._local.presence_snapshot()
        }
        client.call(
            lambda reply: self._sync_presence(reply, held), "SMEMBERS", f"{self._node_key}:pres"
        )

    def _sync_presence(self, reply: Any, held: dict[bytes, tuple[str, str, str, Any, Any]]) -> None:
        """Make Redis hold exactly this node's presence members (after an outage)."""
        if not isinstance(reply, list):
            return
        registered = set(reply)
        for stale in registered - held.keys():
            app_id, channel, socket_id, key = orjson.loads(stale)
            self._call_leave(app_id, channel, socket_id, key, stale, self._announce_removed)
        still_held = {
            self._membership(app_id, channel, socket_id, user_id)
            for app_id, channel, socket_id, user_id, _ in self._local.presence_snapshot()
        }
        for membership, (app_id, channel, socket_id, user_id, info) in held.items():
            if membership not in registered and membership in still_held:
                self._call_join(
                    app_id,
                    channel,
                    socket_id,
                    user_id,
                    info,
                    -1,
                    membership,
                    self._announce_added(app_id, channel, user_id),
                )

    def _announce_added(self, app_id: str, channel: str, user_id: Any) -> Callable[[Any], None]:
        def answered(reply: Any) -> None:
            if isinstance(reply, list) and reply and reply[0] == 1:
                infos = _roster(reply[1])["hash"]
                added = codec.encode_member_added(channel, user_id, infos.get(user_key(user_id)))
                # Local clients saw this join while Redis was away; tell the others only.
                frame = encode_frame(OP_TEXT, added)
                self._publish(app_id, channel, frame, None, self._node_bytes)

        return answered

    def _announce_removed(self, app_id: str, channel: str, reply: Any) -> None:
        if isinstance(reply, bytes):
            user_id = orjson.loads(reply)[0]
            removed = codec.encode_member_removed(channel, user_id)
            frame = encode_frame(OP_TEXT, removed)
            self._publish(app_id, channel, frame, None, self._node_bytes)

    # -- heartbeat and dead nodes ------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._client.connected:
                self._send_heartbeat(first=False)

    def _send_heartbeat(self, *, first: bool) -> None:
        self._client.call(
            lambda reply: self._heartbeat_answer(reply, first),
            "EVALSHA",
            scripts.sha(scripts.HEARTBEAT),
            1,
            self._nodes_key,
            self._node,
            self._timeout_ms,
            self._base,
        )

    def _heartbeat_answer(self, reply: Any, first: bool) -> None:
        if not isinstance(reply, list):
            if isinstance(reply, RedisReplyError):
                log.warning("cluster: heartbeat failed: %s", reply)
                if reply.prefix == "NOSCRIPT":
                    # Someone flushed Redis's script cache: load ours again, re-register.
                    self._registered()
            return
        gone, others, new, vacated = reply
        self._members_gone(gone)
        self._channels_vacated(vacated)
        self._others = {others[j].decode(): int(others[j + 1]) for j in range(0, len(others), 2)}
        if new and not first and not self._stopping:
            # Another node took this one for dead (a stall longer than the timeout) and
            # removed its state: put it back.
            log.warning("cluster: this node was presumed dead; registering its state again")
            self._registered()

    def _members_gone(self, gone: list[bytes]) -> None:
        """Announce the users that left with a node: (app, channel, member) triples."""
        for j in range(0, len(gone), 3):
            app_id, channel = gone[j].decode(), gone[j + 1].decode()
            user_id = orjson.loads(gone[j + 2])[0]
            log.info("cluster: user %s left %s with a departed node", user_id, channel)
            if self._receiver is not None:
                self._receiver.member_gone(app_id, channel, user_id)

    def _channels_vacated(self, vacated: list[bytes]) -> None:
        """Channels whose last subscribers left with a node: (app, channel) pairs."""
        for j in range(0, len(vacated), 2):
            if self._receiver is not None:
                self._receiver.channel_vacated(vacated[j].decode(), vacated[j + 1].decode())

    # -- traffic -----------------------------------------------------------------------------

    def _topic_key(self, app_id: str, topic: str) -> bytes:
        return f"{self._base}t:{app_id}:{topic}".encode()

    def interest(self, app_id: str, topic: str, wanted: bool) -> None:
        key = self._topic_key(app_id, topic)
        if wanted:
            self._topics[key] = (app_id, topic)
            self._subscriber.subscribe(key)
        else:
            self._topics.pop(key, None)
            self._subscriber.unsubscribe(key)

    def ready(self, app_id: str, topic: str, callback: Callable[[], None]) -> None:
        self._subscriber.when_subscribed(self._topic_key(app_id, topic), callback)

    def broadcast(
        self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None
    ) -> bool:
        if not self._client.connected:
            return False  # Redis is away: this node serves its own subscribers itself
        # Delivered on this node too when it comes back from Redis, so that every node sees
        # the topic's messages in Redis's order, whichever node published them.
        self._publish(app_id, topic, frame, except_socket_id, _EVERY_NODE)
        return True

    def _publish(
        self,
        app_id: str,
        topic: str,
        frame: bytes,
        except_socket_id: str | None,
        origin: bytes,
    ) -> None:
        """PUBLISH ``{origin}{except socket}\\n{frame}``; a node drops what bears its own id."""
        head = origin + (except_socket_id.encode() if except_socket_id else b"")
        self._client.send("PUBLISH", self._topic_key(app_id, topic), head + b"\n" + frame)

    def settled(self) -> Awaitable[None] | None:
        if not self._client.connected:
            return None
        return self._settle()

    async def _settle(self) -> None:
        # Replies come in order: PING's means every command sent before it has run.
        with contextlib.suppress(RedisUnavailable, RedisReplyError):
            await self._client.execute("PING")

    def occupancy(
        self, app_id: str, channel: str, occupied: bool, done: Callable[[bool], None]
    ) -> None:
        if not self._client.connected:
            done(True)  # no cluster to ask: this node's view
            return
        self._client.call(
            lambda reply: done(reply == 1 if isinstance(reply, int) else True),
            *self._occupancy_command(app_id, channel, occupied),
        )

    def _occupancy_command(self, app_id: str, channel: str, occupied: bool) -> tuple[Any, ...]:
        return (
            "EVALSHA",
            scripts.sha(scripts.OCCUPANCY),
            2,
            f"{self._base}o:{app_id}:{channel}",
            f"{self._node_key}:occ",
            self._node,
            1 if occupied else 0,
            orjson.dumps([app_id, channel]),
        )

    def terminate_user(self, app_id: str, user_id: str) -> None:
        if self._client.connected:
            # Bears this node's id: the hub has closed this node's connections already.
            message = self._node_bytes + _TERMINATE + orjson.dumps([app_id, user_id])
            self._client.send("PUBLISH", self._control, message)

    def publish_recorded(
        self,
        app_id: str,
        topic: str,
        message: bytes,
        record: dict[str, Any],
        except_socket_id: str | None,
    ) -> bool:
        if self._history is None or not self._client.connected:
            return False
        key = f"{self._base}h:{app_id}:{topic}"
        head = _EVERY_NODE + (except_socket_id.encode() if except_socket_id else b"")
        self._client.send(
            "EVALSHA",
            scripts.sha(scripts.HISTORY_PUBLISH),
            2,
            key + ":seq",
            key,
            self._topic_key(app_id, topic),
            head + b"\n",
            message[:-1],
            orjson.dumps(record)[1:],
            self._history.max_events,
            max(1, int(self._history.max_age * 1000)),
        )
        return True

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
        if self._history is None or not self._client.connected:
            return None
        key = f"{self._base}h:{app_id}:{channel}"
        raw, epoch = await asyncio.gather(
            self._ask(app_id, "LRANGE", key, 0, -1),
            self._ask(app_id, "GET", self._base + "h:epoch"),
        )
        cutoff = now_ms - int(self._history.max_age * 1000)
        visible = [
            HistoryRecord(**fields)
            for fields in map(orjson.loads, raw)
            if fields["time_ms"] > cutoff
        ]
        epoch_ms = int(epoch) if epoch is not None else 0
        if not visible:
            return history_response(channel, epoch_ms, [], False, None, None)
        page, has_more = select_page(visible, limit=limit, before=before, after=after)
        return history_response(channel, epoch_ms, page, has_more, visible[0].id, visible[-1].id)

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        if payload[:NODE_ID_LENGTH] == self._node_bytes:
            return  # meant for the other nodes only (this one has dealt with it)
        receiver = self._receiver
        if receiver is None:
            return
        target = self._topics.get(channel)
        if target is not None:
            newline = payload.find(b"\n", NODE_ID_LENGTH)
            except_socket_id = (
                payload[NODE_ID_LENGTH:newline].decode() if newline > NODE_ID_LENGTH else None
            )
            receiver.deliver(target[0], target[1], payload[newline + 1 :], except_socket_id)
        elif channel == self._control and payload[NODE_ID_LENGTH:][:1] == _TERMINATE:
            app_id, user_id = orjson.loads(payload[NODE_ID_LENGTH + 1 :])
            receiver.terminate_user(app_id, user_id)

    # -- counts ------------------------------------------------------------------------------

    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        self._local.subscriptions_changed(app_id, channel, count)
        self._dirty_subscriptions[(app_id, channel)] = count
        self._schedule_flush()

    def connections_changed(self, app_id: str, count: int) -> None:
        self._local.connections_changed(app_id, count)
        self._dirty_connections[app_id] = count
        self._schedule_flush()

    def connection_estimate(self, app_id: str, local: int) -> int:
        return local + self._others.get(app_id, 0)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the counts changed in this loop iteration, latest value only."""
        self._flush_scheduled = False
        subscriptions, self._dirty_subscriptions = self._dirty_subscriptions, {}
        connections, self._dirty_connections = self._dirty_connections, {}
        if not self._client.connected:
            return  # the snapshot written on reconnect covers them
        client = self._client
        apps: set[str] = set()
        for (app_id, channel), count in subscriptions.items():
            key = f"{self._node_key}:a:{app_id}"
            if count > 0:
                client.send("HSET", key, channel, count)
                apps.add(app_id)
            else:
                client.send("HDEL", key, channel)
        if apps:
            client.send("SADD", f"{self._node_key}:apps", *apps)
        for app_id, count in connections.items():
            if count > 0:
                client.send("HSET", f"{self._node_key}:conns", app_id, count)
            else:
                client.send("HDEL", f"{self._node_key}:conns", app_id)

    # -- presence ----------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str) -> tuple[str, str, str, str]:
        key = f"{self._base}p:{app_id}:{channel}"
        return key + ":m", key + ":u", key + ":i", self._node_key + ":pres"

    def _membership(self, app_id: str, channel: str, socket_id: str, user_id: Any) -> bytes:
        return orjson.dumps([app_id, channel, socket_id, user_key(user_id)])

    def _call_join(
        self,
        app_id: str,
        channel: str,
        socket_id: str,
        user_id: Any,
        user_info: Any,
        limit: int,
        membership: bytes,
        callback: Callable[[Any], None],
    ) -> None:
        info = {} if user_info is None else user_info
        self._client.call(
            callback,
            "EVALSHA",
            scripts.sha(scripts.JOIN),
            5,
            *self._presence_keys(app_id, channel),
            self._base + "joins",
            f"{self._node}|{socket_id}",
            orjson.dumps([user_id, info]),
            user_key(user_id),
            limit,
            membership,
            orjson.dumps(user_id),
            orjson.dumps(info),
        )

    def _call_leave(
        self,
        app_id: str,
        channel: str,
        socket_id: str,
        key: str,
        membership: bytes,
        callback: Callable[[str, str, Any], None],
    ) -> None:
        self._client.call(
            lambda reply: callback(app_id, channel, reply),
            "EVALSHA",
            scripts.sha(scripts.LEAVE),
            4,
            *self._presence_keys(app_id, channel),
            f"{self._node}|{socket_id}",
            key,
            membership,
        )

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
        # Recorded here first (no limit: the cluster decides), so that an outage can fall
        # back to it and a reconnect can re-register it.
        first_here = self._local.record_join(app_id, channel, socket_id, user_id, user_info)
        if not self._client.connected:
            done(self._local.joined(app_id, channel, user_id, first_here))
            return

        def answered(reply: Any) -> None:
            if isinstance(reply, list) and reply and reply[0] == -1:
                self._local.leave_now(app_id, channel, socket_id, user_id)
                done(JoinResult(rejected=True))
            elif isinstance(reply, list) and len(reply) == 2:
                roster = _roster(reply[1])
                infos = roster["hash"]
                done(
                    JoinResult(
                        rejected=False,
                        first=reply[0] == 1,
                        user_info=infos.get(user_key(user_id), user_info),
                        roster=roster,
                    )
                )
            elif self._local.has_connection(app_id, channel, socket_id, user_id):
                if isinstance(reply, RedisReplyError):
                    log.warning("cluster: presence join failed: %s", reply)
                done(self._local.joined(app_id, channel, user_id, first_here))
            else:
                done(JoinResult(rejected=True))  # gone meanwhile: nothing to confirm

        membership = self._membership(app_id, channel, socket_id, user_id)
        self._call_join(app_id, channel, socket_id, user_id, user_info, limit, membership, answered)

    def presence_leave(
        self, app_id: str, channel: str, socket_id: str, user_id: Any, done: LeaveDone
    ) -> None:
        gone = self._local.leave_now(app_id, channel, socket_id, user_id)
        fallback = LeaveResult(last=gone is not None, user_id=gone.user_id if gone else None)
        if not self._client.connected:
            done(fallback)
            return

        def answered(app_id: str, channel: str, reply: Any) -> None:
            if isinstance(reply, bytes):
                done(LeaveResult(last=True, user_id=orjson.loads(reply)[0]))
            elif isinstance(reply, int) or reply is None:
                done(LeaveResult(last=False))
            else:
                done(fallback)

        membership = self._membership(app_id, channel, socket_id, user_id)
        self._call_leave(app_id, channel, socket_id, user_key(user_id), membership, answered)

    def presence_roster(self, app_id: str, channel: str, done: RosterDone) -> None:
        if not self._client.connected:
            self._local.presence_roster(app_id, channel, done)
            return

        def answered(reply: Any) -> None:
            if isinstance(reply, list):
                done(_roster(reply))
            else:
                self._local.presence_roster(app_id, channel, done)

        self._client.call(answered, "HGETALL", self._presence_keys(app_id, channel)[2])

    # -- cache channels ----------------------------------------------------------------------

    def _cache_key(self, app_id: str, channel: str) -> str:
        return f"{self._base}c:{app_id}:{channel}"

    def cache_put(self, app_id: str, channel: str, event: str, data: str, ttl: float) -> None:
        self._local.cache_put(app_id, channel, event, data, ttl)
        if self._client.connected:
            value = orjson.dumps([event, data])
            self._client.send(
                "SET", self._cache_key(app_id, channel), value, "PX", max(1, int(ttl * 1000))
            )

    def cache_get(self, app_id: str, channel: str, done: CacheDone) -> None:
        if not self._client.connected:
            self._local.cache_get(app_id, channel, done)
            return

        def answered(reply: Any) -> None:
            if isinstance(reply, bytes):
                event, data = orjson.loads(reply)
                done(CachedEvent(event, data, 0))
            elif reply is None:
                done(None)
            else:
                self._local.cache_get(app_id, channel, done)

        self._client.call(answered, "GET", self._cache_key(app_id, channel))

    # -- queries -----------------------------------------------------------------------------

    async def _ask(self, app_id: str, *args: Any) -> Any:
        """One query round trip, timed for ``adapter_latency_seconds``."""
        if self._flush_scheduled:
            self._flush()  # counts changed in this iteration go first: the answer includes them
        started = self._loop.time()
        try:
            reply = await self._client.execute(*args)
        except (RedisUnavailable, RedisReplyError) as exc:
            raise ClusterUnavailable(str(exc)) from None
        if self._observe is not None:
            self._observe(app_id, self._loop.time() - started)
        return reply

    def _script_args(self, script: str) -> tuple[Any, ...]:
        return ("EVALSHA", scripts.sha(script), 1, self._nodes_key, self._base, self._timeout_ms)

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        flat = await self._ask(app_id, *self._script_args(scripts.CHANNELS), app_id, prefix)
        return {
            flat[j].decode(): ChannelCounts(int(flat[j + 1]), int(flat[j + 2]))
            for j in range(0, len(flat), 3)
        }

    async def channel(self, app_id: str, name: str) -> ChannelCounts:
        count, users = await self._ask(app_id, *self._script_args(scripts.CHANNEL), app_id, name)
        return ChannelCounts(int(count), int(users) if channel_kind(name).is_presence else 0)

    async def users(self, app_id: str, channel: str) -> list[tuple[Any, Any]]:
        flat = await self._ask(app_id, "HGETALL", self._presence_keys(app_id, channel)[2])
        roster = _roster(flat)
        infos = roster["hash"]
        return [(user_id, infos[user_key(user_id)]) for user_id in roster["ids"]]

    async def connections(self, app_id: str) -> int:
        return int(await self._ask(app_id, *self._script_args(scripts.CONNECTIONS), app_id))

    async def cached(self, app_id: str, channel: str) -> CachedEvent | None:
        key = self._cache_key(app_id, channel)
        value, ttl_ms = await asyncio.gather(
            self._ask(app_id, "GET", key), self._ask(app_id, "PTTL", key)
        )
        if value is None:
            return None
        event, data = orjson.loads(value)
        return CachedEvent(event, data, max(0, int(ttl_ms) // 1000))
