"""One conformance suite for every cluster :class:`~fastrelay.cluster.base.Adapter`.

The single-node half runs against both :class:`LocalAdapter` and :class:`RedisAdapter` (the
``adapter_factory`` fixture); the multi-node half needs several nodes sharing one cluster, which
only Redis can give (the ``cluster`` fixture: a LocalAdapter cluster is one node). Every node is
an adapter in this process with a :class:`RecordingReceiver` standing in for the hub.

Nothing here sleeps to wait for something. Callback APIs are turned into awaitables
(:func:`answer`); receiver calls are awaited one by one (:meth:`RecordingReceiver.next`); what
can only be observed by asking again (Redis health, a key's expiry, a reconnect) is polled with
:func:`eventually`, which gives up after a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from redisserver import RedisServer, redis_server

from fastrelay.cluster import scripts
from fastrelay.cluster.base import (
    Adapter,
    CachedEvent,
    ChannelCounts,
    ClusterUnavailable,
    JoinResult,
    LeaveResult,
)
from fastrelay.cluster.local import LocalAdapter
from fastrelay.cluster.redis_adapter import RedisAdapter
from fastrelay.wire.frames import OP_TEXT, encode_frame

__all__ = ["redis_server"]  # the fixture comes with the import; keep it "used"

T = TypeVar("T")

TIMEOUT = 10.0 * float(os.environ.get("FASTRELAY_TESTS_TIMEOUT_FACTOR", "1"))
POLL = 0.01  # seconds between two looks of eventually()
APP = "1"
OTHER_APP = "2"
PREFIX = "conf"
ONE_NODE = "a LocalAdapter cluster is one node"


# -- test doubles and helpers ------------------------------------------------------------------


class RecordingReceiver:
    """The hub's side of an adapter: records every call, in order, and lets a test await them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._unread: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def _record(self, call: tuple[Any, ...]) -> None:
        self.calls.append(call)
        self._unread.put_nowait(call)

    def deliver(self, app_id: str, topic: str, frame: bytes, except_socket_id: str | None) -> None:
        self._record(("deliver", app_id, topic, frame, except_socket_id))

    def terminate_user(self, app_id: str, user_id: str) -> int:
        self._record(("terminate_user", app_id, user_id))
        return 0

    def member_gone(self, app_id: str, channel: str, user_id: Any) -> None:
        self._record(("member_gone", app_id, channel, user_id))

    def channel_vacated(self, app_id: str, channel: str) -> None:
        self._record(("channel_vacated", app_id, channel))

    async def next(self, within: float = TIMEOUT) -> tuple[Any, ...]:
        """The next call not yet returned by ``next`` (waiting up to ``within`` seconds)."""
        try:
            return await asyncio.wait_for(self._unread.get(), within)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no receiver call within {within:.1f} s; calls so far: {self.calls!r}"
            ) from None

    @property
    def unread(self) -> int:
        return self._unread.qsize()


class FakeClock:
    """Monotonic seconds for LocalAdapter that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def answer(start: Callable[[Callable[[T], None]], None], what: str) -> T:
    """Run a ``done=`` callback API and await its one answer (sync or later, both fine)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    answers: list[T] = []

    def done(value: T) -> None:
        answers.append(value)
        if not future.done():
            future.set_result(value)

    start(done)
    try:
        value = await asyncio.wait_for(future, TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: done was not called within {TIMEOUT:.1f} s") from None
    assert len(answers) == 1, f"{what}: done called {len(answers)} times: {answers!r}"
    return value


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = TIMEOUT
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - started
        if loop.time() - started > within:
            raise AssertionError(f"not within {within:.1f} s: {what}")
        await asyncio.sleep(POLL)


def frame(text: str) -> bytes:
    """A finished WebSocket text frame, as the hub hands them to ``broadcast``."""
    return encode_frame(OP_TEXT, text.encode())


def topic_key(prefix: str, app_id: str, topic: str) -> str:
    """The Redis pub/sub channel of a topic (module docstring of redis_adapter.py)."""
    base = prefix if not prefix or prefix.endswith(":") else prefix + ":"
    return f"{base}fastrelay:t:{app_id}:{topic}"


def ids(users: list[tuple[Any, Any]]) -> list[str]:
    """User ids of a ``users()`` answer as sorted strings (order is only known on one node)."""
    return sorted(str(user_id) for user_id, _ in users)


@dataclass
class Node:
    """One adapter (a node of the cluster) and the receiver it calls."""

    adapter: Adapter
    receiver: RecordingReceiver
    stopped: bool = False

    async def join(
        self,
        channel: str,
        socket_id: str,
        user_id: Any,
        info: Any = None,
        limit: int = -1,
        app_id: str = APP,
    ) -> JoinResult:
        return await answer(
            lambda done: self.adapter.presence_join(
                app_id, channel, socket_id, user_id, info, limit, done
            ),
            f"presence_join({channel}, {socket_id}, {user_id!r})",
        )

    async def leave(
        self, channel: str, socket_id: str, user_id: Any, app_id: str = APP
    ) -> LeaveResult:
        return await answer(
            lambda done: self.adapter.presence_leave(app_id, channel, socket_id, user_id, done),
            f"presence_leave({channel}, {socket_id}, {user_id!r})",
        )

    async def roster(self, channel: str, app_id: str = APP) -> dict[str, Any]:
        return await answer(
            lambda done: self.adapter.presence_roster(app_id, channel, done),
            f"presence_roster({channel})",
        )

    async def cache_get(self, channel: str, app_id: str = APP) -> CachedEvent | None:
        return await answer(
            lambda done: self.adapter.cache_get(app_id, channel, done), f"cache_get({channel})"
        )

    async def occupancy(self, channel: str, occupied: bool, app_id: str = APP) -> bool:
        return await answer(
            lambda done: self.adapter.occupancy(app_id, channel, occupied, done),
            f"occupancy({channel}, {occupied})",
        )

    async def flushed(self) -> None:
        """Let this node's end-of-iteration count flush run, then do a round trip after it.

        ``asyncio.sleep(0)`` yields one loop iteration, which runs the flush RedisAdapter
        scheduled with ``call_soon``; the query then goes out behind its writes, so once it is
        answered Redis has them and any node's query sees them. (Querying without the yield is
        what ``test_query_right_after_a_change_sees_it`` checks.)
        """
        await asyncio.sleep(0)
        await self.adapter.connections(APP)


@dataclass
class Cluster:
    """Makes nodes of one cluster: LocalAdapter (one node only) or RedisAdapters on one Redis."""

    kind: str
    server: RedisServer | None = None
    prefix: str = PREFIX
    clock: FakeClock = field(default_factory=FakeClock)
    nodes: list[Node] = field(default_factory=list)

    async def node(
        self, *, node_timeout: float = 5.0, kind: type[RedisAdapter] = RedisAdapter
    ) -> Node:
        """A started node. For Redis, also settled: see the end of this method."""
        if self.kind == "local":
            if self.nodes:
                pytest.skip(ONE_NODE)
            adapter: Adapter = LocalAdapter(self.clock)
        else:
            assert self.server is not None
            adapter = kind(
                self.server.url,
                loop=asyncio.get_running_loop(),
                prefix=self.prefix,
                node_timeout=node_timeout,
                node_id=secrets.token_hex(6),
            )
        node = Node(adapter, RecordingReceiver())
        self.nodes.append(node)
        await adapter.start(node.receiver)
        if self.kind == "redis" and kind is RedisAdapter:
            # start() returns once connected, not once the registration it queued on connect
            # (SMEMBERS of its memberships, then a presence sync) is answered; a presence join
            # in between races that sync (test_a_join_racing_the_registration_keeps_its_limit).
            # A round trip queued behind it settles the node for every other test.
            await node.flushed()
        return node

    async def start(self, count: int, *, node_timeout: float = 5.0) -> list[Node]:
        return [await self.node(node_timeout=node_timeout) for _ in range(count)]

    async def stop(self, node: Node) -> None:
        node.stopped = True
        await node.adapter.stop()

    async def close(self) -> None:
        for node in self.nodes:
            if not node.stopped:
                await self.stop(node)

    async def redis(self, *args: str | int) -> str:
        """A redis-cli command against the cluster's Redis, off the event loop."""
        assert self.server is not None
        return await asyncio.to_thread(self.server.client(), *args)

    async def numsub(self, app_id: str, topic: str) -> int:
        """How many pub/sub connections (nodes) are subscribed to the topic's channel."""
        reply = await self.redis("PUBSUB", "NUMSUB", topic_key(self.prefix, app_id, topic))
        return int(reply.splitlines()[-1])

    async def await_numsub(self, app_id: str, topic: str, count: int) -> None:
        async def reached() -> bool:
            return await self.numsub(app_id, topic) == count

        await eventually(reached, f"{count} node(s) subscribed to {topic}")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> Cluster:
    if request.param == "redis":
        return Cluster("redis", request.getfixturevalue("redis_server"))
    return Cluster("local")


@pytest.fixture
async def adapter_factory(backend: Cluster) -> AsyncIterator[Cluster]:
    """A cluster of either kind; ``await adapter_factory.node()`` makes and starts a node."""
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=["redis"])
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    """A Redis cluster of as many nodes as a test starts (only Redis clusters have several)."""
    made = Cluster("redis", redis_server)
    try:
        yield made
    finally:
        await made.close()


# -- single node: lifecycle --------------------------------------------------------------------


async def test_a_started_node_is_healthy_and_named(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert node.adapter.healthy
    if adapter_factory.kind == "local":
        assert node.adapter.node_id == "local"
    else:
        assert len(node.adapter.node_id) == 12
        int(node.adapter.node_id, 16)


# -- single node: presence ---------------------------------------------------------------------


async def test_first_join_is_first_and_in_the_roster(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    result = await node.join("presence-room", "1.1", "alice", {"name": "Alice"})
    assert result == JoinResult(
        rejected=False,
        first=True,
        user_info={"name": "Alice"},
        roster={"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1},
    )


async def test_second_connection_of_a_user_is_not_first(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    await node.join("presence-room", "1.1", "alice", {"name": "Alice"})
    await node.join("presence-room", "1.2", "bob", {"name": "Bob"})
    again = await node.join("presence-room", "1.3", "alice", {"name": "Alice again"})
    assert not again.rejected
    assert not again.first
    assert again.user_info == {"name": "Alice"}  # the first connection's
    assert again.roster["count"] == 2
    assert sorted(again.roster["ids"]) == ["alice", "bob"]
    assert again.roster["hash"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}


async def test_numeric_and_string_ids_are_one_user(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    first = await node.join("presence-room", "1.1", 1, {"n": "first"})
    assert first.first
    assert first.roster == {"ids": [1], "hash": {"1": {"n": "first"}}, "count": 1}
    second = await node.join("presence-room", "1.2", "1", {"n": "second"})
    assert not second.first
    assert second.user_info == {"n": "first"}
    # The roster keeps the id as the first connection gave it: a number.
    assert second.roster == {"ids": [1], "hash": {"1": {"n": "first"}}, "count": 1}


async def test_join_without_user_info_shows_an_empty_object(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    result = await node.join("presence-room", "1.1", "alice", None)
    assert result.user_info == {}
    assert result.roster["hash"] == {"alice": {}}


async def test_member_limit_rejects_new_users_only(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert not (await node.join("presence-room", "1.1", "alice", limit=2)).rejected
    assert not (await node.join("presence-room", "1.2", "bob", limit=2)).rejected
    third = await node.join("presence-room", "1.3", "carol", limit=2)
    assert third.rejected
    assert third.first is False
    # Another connection of a user already in: accepted, the channel is not fuller.
    extra = await node.join("presence-room", "1.4", "alice", limit=2)
    assert not extra.rejected
    assert not extra.first
    assert extra.roster["count"] == 2
    # The rejected user left no trace.
    roster = await node.roster("presence-room")
    assert sorted(roster["ids"]) == ["alice", "bob"]
    assert ids(await node.adapter.users(APP, "presence-room")) == ["alice", "bob"]
    # Once a user is gone, there is room again.
    assert (await node.leave("presence-room", "1.2", "bob")).last
    assert not (await node.join("presence-room", "1.3", "carol", limit=2)).rejected


async def test_negative_limit_means_no_limit(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    for n in range(50):
        result = await node.join("presence-room", f"1.{n}", f"user{n}", limit=-1)
        assert not result.rejected
        assert result.first
    assert result.roster["count"] == 50


async def test_zero_limit_rejects_everyone(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert (await node.join("presence-room", "1.1", "alice", limit=0)).rejected
    assert await node.roster("presence-room") == {"ids": [], "hash": {}, "count": 0}
    assert await node.adapter.users(APP, "presence-room") == []


async def test_leave_reports_the_last_connection(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    await node.join("presence-room", "1.1", 1, {"n": 1})
    await node.join("presence-room", "1.2", 1, {"n": 2})
    assert await node.leave("presence-room", "1.1", 1) == LeaveResult(last=False)
    last = await node.leave("presence-room", "1.2", "1")  # the string form is the same user
    assert last.last
    assert last.user_id == 1
    assert type(last.user_id) is int  # as the roster had it
    assert await node.roster("presence-room") == {"ids": [], "hash": {}, "count": 0}


async def test_leaving_an_unknown_connection_is_a_no_op(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert not (await node.leave("presence-room", "9.9", "nobody")).last
    await node.join("presence-room", "1.1", "alice")
    assert not (await node.leave("presence-room", "9.9", "alice")).last
    assert not (await node.leave("presence-other", "1.1", "alice")).last
    roster = await node.roster("presence-room")
    assert roster["ids"] == ["alice"]
    # ... and the real leave still works afterwards.
    assert (await node.leave("presence-room", "1.1", "alice")).last


async def test_leave_under_another_user_id_is_a_no_op(
    adapter_factory: Cluster, request: pytest.FixtureRequest
) -> None:
    """The connection is the pair (socket, user): a leave naming another user matches nothing.

    (The hub always leaves with the id it joined with, so only a buggy caller gets here.)
    """
    node = await adapter_factory.node()
    await node.join("presence-room", "1.1", "alice")
    assert await node.leave("presence-room", "1.1", "bob") == LeaveResult(last=False)
    assert await node.roster("presence-room") == {
        "ids": ["alice"],
        "hash": {"alice": {}},
        "count": 1,
    }
    assert (await node.leave("presence-room", "1.1", "alice")).last


async def test_roster_and_users_follow_joins_and_leaves(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert await node.roster("presence-room") == {"ids": [], "hash": {}, "count": 0}
    await node.join("presence-room", "1.1", "alice", {"a": 1})
    await node.join("presence-room", "1.2", 2, {"b": 2})
    await node.join("presence-room", "1.3", "carol", {"c": 3})
    await node.join("presence-room", "1.4", "alice", {"a": "other"})
    await node.join("presence-other", "1.5", "dave", {"d": 4})

    roster = await node.roster("presence-room")
    assert roster["count"] == 3
    assert sorted(map(str, roster["ids"])) == ["2", "alice", "carol"]
    assert roster["hash"] == {"alice": {"a": 1}, "2": {"b": 2}, "carol": {"c": 3}}
    users = await node.adapter.users(APP, "presence-room")
    assert sorted(users, key=lambda u: str(u[0])) == [
        (2, {"b": 2}),
        ("alice", {"a": 1}),
        ("carol", {"c": 3}),
    ]
    assert await node.adapter.users(APP, "presence-other") == [("dave", {"d": 4})]
    assert await node.adapter.users(OTHER_APP, "presence-room") == []

    await node.leave("presence-room", "1.4", "alice")  # alice still has 1.1
    await node.leave("presence-room", "1.2", 2)
    roster = await node.roster("presence-room")
    assert sorted(roster["ids"]) == ["alice", "carol"]
    assert roster["hash"] == {"alice": {"a": 1}, "carol": {"c": 3}}
    assert ids(await node.adapter.users(APP, "presence-room")) == ["alice", "carol"]


async def test_user_info_is_the_earliest_remaining_connections(
    adapter_factory: Cluster, request: pytest.FixtureRequest
) -> None:
    """PROTOCOL.md §3.5: ``hash`` carries the user_info of the user's earliest
    still-subscribed connection."""
    node = await adapter_factory.node()
    await node.join("presence-room", "1.1", "alice", {"v": 1})
    await node.join("presence-room", "1.2", "alice", {"v": 2})
    await node.join("presence-room", "1.3", "alice", {"v": 3})
    assert not (await node.leave("presence-room", "1.1", "alice")).last
    assert (await node.roster("presence-room"))["hash"] == {"alice": {"v": 2}}
    assert await node.adapter.users(APP, "presence-room") == [("alice", {"v": 2})]
    again = await node.join("presence-room", "1.4", "alice", {"v": 4})
    assert again.user_info == {"v": 2}


# -- single node: counts -----------------------------------------------------------------------


async def test_channels_filter_by_prefix_and_count_presence_users(
    adapter_factory: Cluster,
) -> None:
    node = await adapter_factory.node()
    adapter = node.adapter
    await node.join("presence-room", "1.1", "alice")
    await node.join("presence-room", "1.2", "bob")
    await node.join("presence-room", "1.3", "bob")
    adapter.subscriptions_changed(APP, "presence-room", 3)
    adapter.subscriptions_changed(APP, "private-x", 2)
    adapter.subscriptions_changed(APP, "news", 5)
    adapter.subscriptions_changed(OTHER_APP, "news", 7)
    await node.flushed()

    assert await adapter.channels(APP, "") == {
        "presence-room": ChannelCounts(3, 2),
        "private-x": ChannelCounts(2, 0),
        "news": ChannelCounts(5, 0),
    }
    assert await adapter.channels(APP, "presence-") == {"presence-room": ChannelCounts(3, 2)}
    assert await adapter.channels(APP, "private-") == {"private-x": ChannelCounts(2, 0)}
    assert await adapter.channels(APP, "nothing-") == {}
    assert await adapter.channels(OTHER_APP, "") == {"news": ChannelCounts(7, 0)}
    assert await adapter.channels("3", "") == {}

    assert await adapter.channel(APP, "presence-room") == ChannelCounts(3, 2)
    assert await adapter.channel(APP, "news") == ChannelCounts(5, 0)
    assert await adapter.channel(APP, "unknown") == ChannelCounts(0, 0)
    assert await adapter.channel(APP, "presence-unknown") == ChannelCounts(0, 0)


async def test_latest_count_wins_and_zero_removes_the_channel(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    adapter = node.adapter
    adapter.subscriptions_changed(APP, "news", 1)
    adapter.subscriptions_changed(APP, "news", 2)
    adapter.subscriptions_changed(APP, "sport", 1)
    await node.flushed()
    assert await adapter.channels(APP, "") == {
        "news": ChannelCounts(2, 0),
        "sport": ChannelCounts(1, 0),
    }
    adapter.subscriptions_changed(APP, "news", 4)
    adapter.subscriptions_changed(APP, "sport", 0)
    await node.flushed()
    assert await adapter.channels(APP, "") == {"news": ChannelCounts(4, 0)}
    assert await adapter.channel(APP, "sport") == ChannelCounts(0, 0)
    adapter.subscriptions_changed(APP, "news", 0)
    await node.flushed()
    assert await adapter.channels(APP, "") == {}
    assert await adapter.channel(APP, "news") == ChannelCounts(0, 0)


async def test_connections_per_app(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    adapter = node.adapter
    assert await adapter.connections(APP) == 0
    adapter.connections_changed(APP, 3)
    adapter.connections_changed(OTHER_APP, 9)
    await node.flushed()
    assert await adapter.connections(APP) == 3
    assert await adapter.connections(OTHER_APP) == 9
    adapter.connections_changed(APP, 0)
    await node.flushed()
    assert await adapter.connections(APP) == 0
    assert await adapter.connections(OTHER_APP) == 9


async def test_connection_estimate_of_a_lone_node_is_its_own(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    node.adapter.connections_changed(APP, 4)
    await node.flushed()
    assert node.adapter.connection_estimate(APP, 4) == 4
    assert node.adapter.connection_estimate(OTHER_APP, 0) == 0


async def test_query_right_after_a_change_sees_it(
    adapter_factory: Cluster, request: pytest.FixtureRequest
) -> None:
    """No yield between the change and the query: one connection, FIFO, so it must see it."""
    node = await adapter_factory.node()
    adapter = node.adapter
    adapter.subscriptions_changed(APP, "news", 2)
    assert await adapter.channels(APP, "") == {"news": ChannelCounts(2, 0)}
    adapter.subscriptions_changed(APP, "sport", 1)
    assert await adapter.channel(APP, "sport") == ChannelCounts(1, 0)
    adapter.connections_changed(APP, 5)
    assert await adapter.connections(APP) == 5


# -- single node: cache channels ---------------------------------------------------------------


async def test_cache_put_then_get(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    adapter = node.adapter
    assert await node.cache_get("cache-news") is None
    assert await adapter.cached(APP, "cache-news") is None

    adapter.cache_put(APP, "cache-news", "headline", '{"title":"hi"}', 100.0)
    got = await node.cache_get("cache-news")
    assert got is not None
    assert (got.event, got.data) == ("headline", '{"title":"hi"}')
    cached = await adapter.cached(APP, "cache-news")
    assert cached is not None
    assert (cached.event, cached.data) == ("headline", '{"title":"hi"}')
    assert 98 <= cached.ttl <= 100, cached

    # The last event wins; other apps and channels are apart.
    adapter.cache_put(APP, "cache-news", "update", "second", 100.0)
    got = await node.cache_get("cache-news")
    assert got is not None
    assert (got.event, got.data) == ("update", "second")
    assert await adapter.cached(OTHER_APP, "cache-news") is None
    assert await node.cache_get("cache-other") is None


async def test_cached_event_expires(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    adapter = node.adapter
    adapter.cache_put(APP, "cache-long", "stays", "x", 100.0)
    if adapter_factory.kind == "local":
        adapter.cache_put(APP, "cache-news", "headline", "x", 0.2)
        assert await adapter.cached(APP, "cache-news") == CachedEvent("headline", "x", 0)
        adapter_factory.clock.now += 0.3
    else:
        adapter.cache_put(APP, "cache-news", "headline", "x", 0.001)  # PX 1

        async def expired() -> bool:
            return await adapter.cached(APP, "cache-news") is None

        await eventually(expired, "the 1 ms cache entry expires")
    assert await adapter.cached(APP, "cache-news") is None
    assert await node.cache_get("cache-news") is None
    long = await adapter.cached(APP, "cache-long")
    assert long is not None
    assert long.event == "stays"


# -- single node: traffic ----------------------------------------------------------------------


async def test_broadcast_comes_back_through_the_cluster_or_not_at_all(
    adapter_factory: Cluster,
) -> None:
    """Local: broadcast() says False and the hub delivers itself. Redis: True, and the node's
    own message comes back from Redis like everyone else's, so all nodes share one order."""
    node = await adapter_factory.node()
    node.adapter.interest(APP, "news", True)
    if adapter_factory.kind == "local":
        assert node.adapter.broadcast(APP, "news", frame("own"), None) is False
        node.adapter.terminate_user(APP, "alice")
        assert node.receiver.calls == []  # no I/O: nothing can arrive later
        return
    await adapter_factory.await_numsub(APP, "news", 1)
    assert node.adapter.broadcast(APP, "news", frame("own"), None) is True
    assert node.adapter.broadcast(APP, "news", frame("own, except"), "1.1") is True
    node.adapter.terminate_user(APP, "alice")  # done here already: never comes back
    assert await node.receiver.next() == ("deliver", APP, "news", frame("own"), None)
    assert await node.receiver.next() == ("deliver", APP, "news", frame("own, except"), "1.1")
    # A second node's message, published after them, is the next and last thing it sees.
    other = await adapter_factory.node()
    theirs = frame("from the other node")
    other.adapter.broadcast(APP, "news", theirs, None)
    assert await node.receiver.next() == ("deliver", APP, "news", theirs, None)
    assert node.receiver.unread == 0
    assert other.receiver.calls == []


async def test_ready_waits_for_the_subscription(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    node.adapter.interest(APP, "fresh", True)
    ready = asyncio.get_running_loop().create_future()
    node.adapter.ready(APP, "fresh", lambda: ready.set_result(True))
    await asyncio.wait_for(ready, TIMEOUT)
    if adapter_factory.kind == "redis":
        # Confirmed: Redis already counts this node's subscription.
        assert await adapter_factory.numsub(APP, "fresh") == 1


# -- several nodes (Redis) ---------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "conf", "conf:"])
async def test_interest_routes_broadcasts(cluster: Cluster, prefix: str) -> None:
    cluster.prefix = prefix
    a, b, c = await cluster.start(3)
    b.adapter.interest(APP, "news", True)
    c.adapter.interest(APP, "sport", True)
    await cluster.await_numsub(APP, "news", 1)
    await cluster.await_numsub(APP, "sport", 1)
    assert await cluster.numsub(OTHER_APP, "news") == 0

    # Binary-safe: a newline and NUL inside the frame, a socket id in the header.
    payload = frame('{"event":"e","channel":"news","data":"a\\nb"}') + b"\n\x00tail"
    a.adapter.broadcast(APP, "news", payload, "123.456")
    a.adapter.broadcast(APP, "news", frame("second"), None)
    a.adapter.broadcast(OTHER_APP, "news", frame("other app"), None)
    a.adapter.broadcast(APP, "sport", frame("for c"), None)
    assert await b.receiver.next() == ("deliver", APP, "news", payload, "123.456")
    assert await b.receiver.next() == ("deliver", APP, "news", frame("second"), None)
    # C only ever gets its own topic.
    assert await c.receiver.next() == ("deliver", APP, "sport", frame("for c"), None)
    assert c.receiver.unread == 0

    # Both B and A interested: two nodes subscribed.
    a.adapter.interest(APP, "news", True)
    await cluster.await_numsub(APP, "news", 2)
    # B withdraws: Redis stops sending it the topic, and it delivers nothing more of it.
    b.adapter.interest(APP, "news", False)
    b.adapter.interest(APP, "probe", True)
    await cluster.await_numsub(APP, "news", 1)
    await cluster.await_numsub(APP, "probe", 1)
    a.adapter.broadcast(APP, "news", frame("after withdrawal"), None)
    a.adapter.broadcast(APP, "probe", frame("probe"), None)
    assert await b.receiver.next() == ("deliver", APP, "probe", frame("probe"), None)
    assert b.receiver.unread == 0
    # A hears only what was published while it had interest, its own message included.
    assert await a.receiver.next() == ("deliver", APP, "news", frame("after withdrawal"), None)
    assert a.receiver.unread == 0
    assert c.receiver.calls == [("deliver", APP, "sport", frame("for c"), None)]


async def test_broadcasts_arrive_once_each_and_in_order(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    b.adapter.interest(APP, "news", True)
    await cluster.await_numsub(APP, "news", 1)
    sent = [(frame(f"message {n}"), f"1.{n}" if n % 2 else None) for n in range(1000)]
    for payload, except_socket_id in sent:
        a.adapter.broadcast(APP, "news", payload, except_socket_id)
    a.adapter.broadcast(APP, "news", frame("end"), None)
    got = [await b.receiver.next() for _ in range(1000)]
    assert got == [("deliver", APP, "news", p, e) for p, e in sent]
    assert await b.receiver.next() == ("deliver", APP, "news", frame("end"), None)
    assert b.receiver.unread == 0
    assert a.receiver.calls == []


async def test_terminate_user_reaches_the_other_nodes_only(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    b.adapter.interest(APP, "probe", True)
    await cluster.await_numsub(APP, "probe", 1)
    a.adapter.terminate_user(APP, "alice")
    a.adapter.broadcast(APP, "probe", frame("after"), None)
    assert await b.receiver.next() == ("terminate_user", APP, "alice")
    # Published after it on the same connection: had there been a second call, it came first.
    assert await b.receiver.next() == ("deliver", APP, "probe", frame("after"), None)
    # A's receiver: its first call is B's terminate, not its own echo.
    b.adapter.terminate_user(OTHER_APP, "bob")
    assert await a.receiver.next() == ("terminate_user", OTHER_APP, "bob")
    assert a.receiver.unread == 0


async def test_presence_spans_nodes(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    joined = await a.join("presence-room", "a.1", 7, {"on": "a"})
    assert joined.first
    again = await b.join("presence-room", "b.1", "7", {"on": "b"})
    assert not again.rejected
    assert not again.first
    assert again.user_info == {"on": "a"}
    assert again.roster == {"ids": [7], "hash": {"7": {"on": "a"}}, "count": 1}
    assert await b.roster("presence-room") == {"ids": [7], "hash": {"7": {"on": "a"}}, "count": 1}

    await a.join("presence-room", "a.2", "alice", {"n": "alice"})
    await b.join("presence-room", "b.2", "bob", {"n": "bob"})
    await b.join("presence-room", "b.3", "alice", {"n": "alice on b"})
    users = await c.adapter.users(APP, "presence-room")
    assert sorted(users, key=lambda u: str(u[0])) == [
        (7, {"on": "a"}),
        ("alice", {"n": "alice"}),
        ("bob", {"n": "bob"}),
    ]
    roster = await c.roster("presence-room")
    assert roster["count"] == 3
    assert sorted(map(str, roster["ids"])) == ["7", "alice", "bob"]

    # The member limit counts users on every node.
    assert (await c.join("presence-room", "c.1", "carol", limit=3)).rejected
    assert not (await c.join("presence-room", "c.2", "bob", limit=3)).rejected
    assert await c.leave("presence-room", "c.2", "bob") == LeaveResult(last=False)

    assert await a.leave("presence-room", "a.1", 7) == LeaveResult(last=False)
    last = await b.leave("presence-room", "b.1", "7")
    assert last.last
    assert last.user_id == 7
    assert type(last.user_id) is int
    assert ids(await c.adapter.users(APP, "presence-room")) == ["alice", "bob"]


async def test_counts_are_summed_across_nodes(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    await a.join("presence-room", "a.1", "alice")
    await b.join("presence-room", "b.1", "bob")
    await b.join("presence-room", "b.2", "alice")
    a.adapter.subscriptions_changed(APP, "presence-room", 1)
    b.adapter.subscriptions_changed(APP, "presence-room", 2)
    a.adapter.subscriptions_changed(APP, "news", 3)
    b.adapter.subscriptions_changed(APP, "news", 4)
    a.adapter.subscriptions_changed(APP, "private-a", 5)
    b.adapter.subscriptions_changed(OTHER_APP, "news", 6)
    a.adapter.connections_changed(APP, 10)
    b.adapter.connections_changed(APP, 20)
    b.adapter.connections_changed(OTHER_APP, 6)
    await a.flushed()
    await b.flushed()

    for node in (a, b, c):
        assert await node.adapter.channels(APP, "") == {
            "presence-room": ChannelCounts(3, 2),
            "news": ChannelCounts(7, 0),
            "private-a": ChannelCounts(5, 0),
        }
        assert await node.adapter.channels(APP, "pr") == {
            "presence-room": ChannelCounts(3, 2),
            "private-a": ChannelCounts(5, 0),
        }
        assert await node.adapter.channels(OTHER_APP, "") == {"news": ChannelCounts(6, 0)}
        assert await node.adapter.channel(APP, "news") == ChannelCounts(7, 0)
        assert await node.adapter.channel(APP, "presence-room") == ChannelCounts(3, 2)
        assert await node.adapter.channel(APP, "missing") == ChannelCounts(0, 0)
        assert await node.adapter.connections(APP) == 30
        assert await node.adapter.connections(OTHER_APP) == 6

    b.adapter.subscriptions_changed(APP, "news", 0)
    b.adapter.connections_changed(APP, 0)
    await b.flushed()
    assert await c.adapter.channel(APP, "news") == ChannelCounts(3, 0)
    assert await c.adapter.connections(APP) == 10


async def test_connection_estimate_adds_the_other_nodes(cluster: Cluster) -> None:
    a, b = await cluster.start(2, node_timeout=0.5)  # a heartbeat every 0.1 s
    a.adapter.connections_changed(APP, 5)
    await a.flushed()
    # It may lag by one heartbeat of B.
    await eventually(
        lambda: b.adapter.connection_estimate(APP, 2) == 7, "B's estimate includes A's 5"
    )
    assert b.adapter.connection_estimate(OTHER_APP, 1) == 1
    assert a.adapter.connection_estimate(APP, 5) == 5


async def test_a_dead_nodes_members_and_counts_go(cluster: Cluster) -> None:
    node_timeout = 0.5
    a, b = await cluster.start(2, node_timeout=node_timeout)
    await a.join("presence-x", "a.1", "ghost", {"boo": True})
    await a.join("presence-x", "a.2", "shared")
    await b.join("presence-x", "b.1", "shared")
    a.adapter.subscriptions_changed(APP, "presence-x", 2)
    a.adapter.subscriptions_changed(APP, "private-a", 4)
    b.adapter.subscriptions_changed(APP, "presence-x", 1)
    await a.flushed()
    await b.flushed()
    assert await b.adapter.channel(APP, "presence-x") == ChannelCounts(3, 2)

    # A dies: no stop(), so no goodbye. The adapter has no public way to die, hence the
    # private members: its heartbeat stops and both Redis connections close (close() rather
    # than a transport abort, as an abort would make the client reconnect).
    a_adapter = a.adapter
    assert isinstance(a_adapter, RedisAdapter)
    assert a_adapter._heartbeat is not None
    a_adapter._heartbeat.cancel()
    await a_adapter._subscriber.close()
    await a_adapter._client.close()
    started = time.monotonic()

    gone = await b.receiver.next(within=node_timeout + 2)
    elapsed = time.monotonic() - started
    print(f"member_gone {elapsed:.3f} s after the node died (node_timeout {node_timeout} s)")
    assert gone == ("member_gone", APP, "presence-x", "ghost")
    # "shared" still has B's connection: it did not go.
    assert b.receiver.unread == 0
    assert ids(await b.adapter.users(APP, "presence-x")) == ["shared"]
    assert await b.adapter.channels(APP, "") == {"presence-x": ChannelCounts(1, 1)}
    assert await b.leave("presence-x", "b.1", "shared") == LeaveResult(last=True, user_id="shared")
    assert b.receiver.unread == 0


async def test_nodes_recover_from_a_redis_restart(cluster: Cluster) -> None:
    assert cluster.server is not None
    a, b = await cluster.start(2, node_timeout=2.0)
    await a.join("presence-x", "a.1", "ghost", {"boo": True})
    a.adapter.subscriptions_changed(APP, "presence-x", 1)
    a.adapter.connections_changed(APP, 1)
    b.adapter.interest(APP, "news", True)
    await a.flushed()
    await cluster.await_numsub(APP, "news", 1)

    await asyncio.to_thread(cluster.server.kill)
    await eventually(
        lambda: not a.adapter.healthy and not b.adapter.healthy, "both nodes notice the outage"
    )
    with pytest.raises(ClusterUnavailable):
        await b.adapter.channels(APP, "")
    # Meanwhile the node answers from what it holds itself.
    late = await a.join("presence-x", "a.2", "late", {"late": True})
    assert late.first
    assert sorted(late.roster["ids"]) == ["ghost", "late"]

    await asyncio.to_thread(cluster.server.restart)
    waited = await eventually(
        lambda: a.adapter.healthy and b.adapter.healthy, "both nodes reconnect", within=10.0
    )
    print(f"healthy again {waited:.3f} s after Redis restarted")

    await cluster.await_numsub(APP, "news", 1)
    a.adapter.broadcast(APP, "news", frame("after the restart"), None)
    assert await b.receiver.next() == ("deliver", APP, "news", frame("after the restart"), None)

    async def presence_back() -> bool:
        return ids(await b.adapter.users(APP, "presence-x")) == ["ghost", "late"]

    await eventually(presence_back, "A's members are registered again")
    assert await b.adapter.channels(APP, "") == {"presence-x": ChannelCounts(1, 2)}
    assert await b.adapter.connections(APP) == 1


async def test_a_stopped_nodes_counts_vanish_at_once(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)  # node timeout 5 s: far longer than this test waits
    a.adapter.subscriptions_changed(APP, "news", 2)
    a.adapter.subscriptions_changed(APP, "private-a", 1)
    b.adapter.subscriptions_changed(APP, "news", 3)
    a.adapter.connections_changed(APP, 4)
    b.adapter.connections_changed(APP, 5)
    await a.flushed()
    await b.flushed()
    assert await c.adapter.channels(APP, "") == {
        "news": ChannelCounts(5, 0),
        "private-a": ChannelCounts(1, 0),
    }
    assert await c.adapter.connections(APP) == 9

    await cluster.stop(a)
    assert await c.adapter.channels(APP, "") == {"news": ChannelCounts(3, 0)}
    assert await c.adapter.channel(APP, "private-a") == ChannelCounts(0, 0)
    assert await c.adapter.connections(APP) == 5
    assert await b.adapter.connections(APP) == 5


async def test_a_stopped_nodes_presence_members_go(cluster: Cluster) -> None:
    """Base.stop(): "Leave the cluster: withdraw this node's presence members and counts"."""
    a, b = await cluster.start(2)
    await a.join("presence-x", "a.1", "alice")
    await b.join("presence-x", "b.1", "bob")
    await cluster.stop(a)
    assert ids(await b.adapter.users(APP, "presence-x")) == ["bob"]


async def test_a_join_racing_the_registration_keeps_its_limit(cluster: Cluster) -> None:
    """A presence join handled between a (re)connect and the answer to the registration's
    SMEMBERS (clients keep joining while a node reconnects) is decided by its own JOIN."""
    answers: list[JoinResult] = []

    class RacingAdapter(RedisAdapter):
        def _registered(self) -> None:
            super()._registered()
            # A client's join in the same loop iteration as the connect: the registration's
            # SMEMBERS is on its way, not answered. Limit 0: the cluster must reject it.
            self.presence_join(APP, "presence-room", "1.1", "alice", None, 0, answers.append)

    observer = await cluster.node()
    racer = await cluster.node(kind=RacingAdapter)
    await eventually(lambda: bool(answers), "the racing join is answered")
    assert answers == [JoinResult(rejected=True)]
    await racer.flushed()  # behind whatever the presence sync sent after SMEMBERS' answer
    assert await observer.adapter.users(APP, "presence-room") == []
    assert await racer.roster("presence-room") == {"ids": [], "hash": {}, "count": 0}


async def test_prefixes_keep_clusters_apart(redis_server: RedisServer) -> None:
    first, second = Cluster("redis", redis_server, "one"), Cluster("redis", redis_server, "two")
    try:
        a = await first.node()
        b = await second.node()
        a.adapter.subscriptions_changed(APP, "news", 1)
        a.adapter.connections_changed(APP, 1)
        await a.join("presence-room", "a.1", "alice")
        b.adapter.interest(APP, "news", True)
        await a.flushed()
        await second.await_numsub(APP, "news", 1)
        a.adapter.broadcast(APP, "news", frame("cluster one"), None)
        assert await b.adapter.channels(APP, "") == {}
        assert await b.adapter.connections(APP) == 0
        assert await b.adapter.users(APP, "presence-room") == []
        assert (await b.join("presence-room", "b.1", "alice")).first
        # The broadcast went to cluster one's channel: B's first delivery is its own cluster's.
        a2 = await second.node()
        a2.adapter.broadcast(APP, "news", frame("cluster two"), None)
        assert await b.receiver.next() == ("deliver", APP, "news", frame("cluster two"), None)
    finally:
        await first.close()
        await second.close()


async def test_a_flushed_script_cache_is_loaded_again(cluster: Cluster) -> None:
    (a,) = await cluster.start(1, node_timeout=0.5)
    await a.join("presence-x", "a.1", "before")
    await cluster.redis("SCRIPT", "FLUSH")

    async def joins_work_again() -> bool:
        # While the scripts are gone a join falls back to this node's own view; once the next
        # heartbeat has reloaded them, the join is the cluster's again (the roster from Redis).
        result = await a.join("presence-x", "a.2", "after")
        await a.leave("presence-x", "a.2", "after")
        loaded = await cluster.redis("SCRIPT", "EXISTS", scripts.sha(scripts.JOIN))
        return loaded == "1" and sorted(map(str, result.roster["ids"])) == ["after", "before"]

    await eventually(joins_work_again, "the scripts are back")
    assert ids(await a.adapter.users(APP, "presence-x")) == ["before"]


async def test_a_lone_node_occupies_and_vacates(adapter_factory: Cluster) -> None:
    node = await adapter_factory.node()
    assert await node.occupancy("news", True) is True
    assert await node.occupancy("news", False) is True


async def test_occupancy_changes_once_per_cluster(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    assert await a.occupancy("news", True) is True  # channel_occupied is due
    assert await b.occupancy("news", True) is False  # already occupied elsewhere
    assert await a.occupancy("news", False) is False  # B still has subscribers
    assert await b.occupancy("news", False) is True  # channel_vacated is due
    assert await b.occupancy("news", True) is True  # and occupied again


async def test_a_dead_nodes_channels_are_vacated(cluster: Cluster) -> None:
    node_timeout = 0.5
    a, b = await cluster.start(2, node_timeout=node_timeout)
    assert await a.occupancy("only-a", True) is True
    assert await a.occupancy("shared", True) is True
    assert await b.occupancy("shared", True) is False
    # A dies without a goodbye (see test_a_dead_nodes_members_and_counts_go).
    a_adapter = a.adapter
    assert isinstance(a_adapter, RedisAdapter) and a_adapter._heartbeat is not None
    a_adapter._heartbeat.cancel()
    await a_adapter._subscriber.close()
    await a_adapter._client.close()
    assert await b.receiver.next(within=node_timeout + 2) == ("channel_vacated", APP, "only-a")
    assert b.receiver.unread == 0
    assert await b.occupancy("shared", False) is True  # B held the last subscribers
