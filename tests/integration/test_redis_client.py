"""The self-written Redis client against a real redis-server (and a few fake ones).

Every test body runs twice, on asyncio's default loop and on uvloop, through the ``run``
fixture; it also fails a test that leaves a task behind or lets an exception reach the loop.
Nothing sleeps to wait: every wait is on an event or a future, with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from redisserver import TIMEOUT, RedisServer, redis_server, require_redis

from fastrelay.cluster.redis_client import (
    SUBSCRIBE_CHUNK,
    RedisClient,
    RedisSubscriber,
    RedisUnavailable,
    parse_redis_url,
)
from fastrelay.cluster.resp import (
    RedisReplyError,
    RespParser,
    RespProtocolError,
    encode_command,
)

# The fixture comes with the import; listing it here marks the import as used.
__all__ = ["redis_server"]

LOG = "fastrelay.redis"


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


LOOPS = _loop_factories()


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine on a fresh loop of the parametrized kind, then check it is clean."""

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        loop = LOOPS[request.param]()
        problems: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: problems.append(context))
        try:
            result = loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT * 6))
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            assert not left, f"tasks left behind: {left}"
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
        assert not problems, f"exceptions reached the event loop: {problems}"
        return result

    return runner


class Signal:
    """Wake waiters when something changed; they re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], bool], what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not condition():
            self._event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except asyncio.TimeoutError:
                continue


class States(Signal):
    """An ``on_state`` callback that keeps every transition."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[bool] = []

    def __call__(self, connected: bool) -> None:
        self.values.append(connected)
        self.notify()

    async def reach(self, values: list[bool]) -> None:
        await self.until(lambda: self.values == values, f"states {values} (got {self.values})")


class Inbox(Signal):
    """An ``on_message`` callback that keeps every message."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[bytes, bytes]] = []

    def __call__(self, channel: bytes, payload: bytes) -> None:
        self.messages.append((channel, payload))
        self.notify()

    async def count(self, n: int) -> list[tuple[bytes, bytes]]:
        await self.until(lambda: len(self.messages) >= n, f"{n} messages")
        return self.messages


class Replies(Signal):
    """A ``call`` callback factory that keeps replies in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def __call__(self, reply: Any) -> None:
        self.values.append(reply)
        self.notify()

    async def count(self, n: int) -> list[Any]:
        await self.until(lambda: len(self.values) >= n, f"{n} replies")
        return self.values


class CountingTransport:
    """Wraps a connection's transport to see exactly what goes out, write by write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def commands(self) -> list[list[bytes]]:
        parser = RespParser()
        parser.feed(b"".join(self.writes))
        return parser.replies()  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def spy(connection: RedisClient | RedisSubscriber) -> CountingTransport:
    counting = CountingTransport(connection._transport)
    connection._transport = counting  # type: ignore[assignment]
    return counting


async def started(
    connection: RedisClient | RedisSubscriber,
) -> RedisClient | RedisSubscriber:
    connection.start()
    assert await connection.wait_connected(TIMEOUT), "no connection to redis"
    return connection


# -- the codec, no I/O ----------------------------------------------------------------------

STREAM = (
    b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$6\r\nhe\r\nlo\r\n"
    b"+OK\r\n-ERR unknown command 'NOPE'\r\n:42\r\n:-7\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n"
    b"*2\r\n*1\r\n:1\r\n*2\r\n$1\r\na\r\n-WRONGTYPE no\r\n"
    b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$0\r\n\r\n$3\r\n\x00\xff\n\r\n"
    b"*3\r\n$7\r\nmessage\r\n$-1\r\n:5\r\n"
)


def expected_stream() -> list[Any]:
    return [
        [b"message", b"news", b"he\r\nlo"],
        "OK",
        ("error", "ERR unknown command 'NOPE'"),
        42,
        -7,
        None,
        None,
        [],
        b"",
        [[1], [b"a", ("error", "WRONGTYPE no")]],
        [b"subscribe", b"news", 1],
        [b"message", b"", b"\x00\xff\n"],
        [b"message", None, 5],
    ]


def plain(value: Any) -> Any:
    """Error instances as comparable tuples."""
    if isinstance(value, RedisReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def parse_in_pieces(data: bytes, cuts: list[int]) -> list[Any]:
    parser = RespParser()
    out: list[Any] = []
    start = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[start:cut])
        out += parser.replies()
        start = cut
    assert parser.pending == 0
    return plain(out)


def test_parser_reads_every_reply_type() -> None:
    assert parse_in_pieces(STREAM, []) == expected_stream()


def test_parser_split_at_every_byte_boundary() -> None:
    expected = expected_stream()
    for cut in range(len(STREAM) + 1):
        assert parse_in_pieces(STREAM, [cut]) == expected, cut
    # Two cuts: every pair in the pub/sub part (the fast path) and a stride elsewhere.
    for first in range(0, len(STREAM), 3):
        for second in range(first, len(STREAM) + 1, 2):
            assert parse_in_pieces(STREAM, [first, second]) == expected, (first, second)
    assert parse_in_pieces(STREAM, list(range(1, len(STREAM)))) == expected


def test_parser_large_bulk_in_small_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    data = encode_command("x", payload) + b"+OK\r\n"
    parser = RespParser()
    out: list[Any] = []
    for start in range(0, len(data), 1000):
        parser.feed(data[start : start + 1000])
        out += parser.replies()
    assert out == [[b"x", payload], "OK"]


@pytest.mark.parametrize(
    "garbage",
    [b"?what\r\n", b"$abc\r\n", b"$3\r\nabcXY", b"*-2\r\n", b"$-5\r\n", b":1x\r\n", b"+" * 70_000],
)
def test_parser_rejects_garbage(garbage: bytes) -> None:
    parser = RespParser()
    parser.feed(b"+OK\r\n")
    assert parser.replies() == ["OK"]
    parser.feed(garbage)
    with pytest.raises(RespProtocolError):
        parser.replies()


def test_parser_keeps_the_replies_before_garbage() -> None:
    parser = RespParser()
    parser.feed(b"+OK\r\n:1\r\n?bad\r\n")
    with pytest.raises(RespProtocolError) as caught:
        parser.replies()
    assert caught.value.replies == ["OK", 1]


def test_encode_command() -> None:
    assert encode_command("SET", b"k\r\n", 12, 2.5, "é") == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n2.5\r\n$2\r\n\xc3\xa9\r\n"
    )
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(ValueError):
        encode_command()


def test_parse_redis_url() -> None:
    address = parse_redis_url("redis://127.0.0.1:7000/3")
    assert (address.host, address.port, address.db) == ("127.0.0.1", 7000, 3)
    assert address.username is None and address.password is None and not address.tls
    address = parse_redis_url("rediss://al%40ice:p%3Ass@cache.example:6380")
    assert address.tls and address.username == "al@ice" and address.password == "p:ss"
    assert "p:ss" not in repr(address)
    address = parse_redis_url("redis://:secret@localhost")
    assert (address.username, address.password, address.port, address.db) == (
        None,
        "secret",
        6379,
        0,
    )
    assert parse_redis_url("redis://[::1]:1/0").where == "[::1]:1"
    for bad in ("http://x", "redis://x/abc", "redis://x:99999", "redis://x/-1"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


# -- commands -------------------------------------------------------------------------------


def test_commands_and_fifo_replies(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        client = await started(RedisClient(redis_server.url, loop=loop))
        try:
            replies = Replies()
            client.call(replies, "SET", "k", "v")
            client.call(replies, "GET", "k")
            client.call(replies, "GET", "missing")
            client.call(replies, "RPUSH", "l", b"a", b"\x00b")
            client.call(replies, "LRANGE", "l", 0, -1)
            client.call(replies, "INCRBYFLOAT", "f", 1.5)
            assert replies.values == []  # never answered from inside call()
            assert await replies.count(6) == ["OK", b"v", None, 2, [b"a", b"\x00b"], b"1.5"]
            assert await client.execute("PING") == "PONG"
            assert await client.execute("ECHO", b"\r\n") == b"\r\n"
            # execute and call share one FIFO.
            results = await asyncio.gather(*(client.execute("INCR", "n") for _ in range(50)))
            assert results == list(range(1, 51))
            assert redis_server.client()("GET", "n") == "50"
        finally:
            await client.close()

    run(body())


def test_pipelining_1000_incrs_one_write(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        client = await started(RedisClient(redis_server.url, loop=loop))
        try:
            counting = spy(client)
            replies = Replies()
            for _ in range(1000):
                client.call(replies, "INCR", "counter")
            assert await replies.count(1000) == list(range(1, 1001))
            assert len(counting.writes) == 1
            assert counting.commands() == [[b"INCR", b"counter"]] * 1000
        finally:
            await client.close()

    run(body())


def test_error_replies_do_not_break_the_stream(run, redis_server: RedisServer, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOG)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        client = await started(RedisClient(redis_server.url, loop=loop))
        try:
            replies = Replies()
            client.call(replies, "SET", "s", "text")
            client.call(replies, "NOSUCHCOMMAND", "x")
            client.call(replies, "INCR", "s")
            client.call(replies, "GET", "s")
            got = await replies.count(4)
            assert got[0] == "OK" and got[3] == b"text"
            assert isinstance(got[1], RedisReplyError) and got[1].prefix == "ERR"
            assert isinstance(got[2], RedisReplyError) and "not an integer" in str(got[2])
            with pytest.raises(RedisReplyError, match="WRONGTYPE"):
                await client.execute("LPUSH", "s", "x")
            # A failed fire-and-forget command is logged, and the next one still works.
            client.send("NOSUCHCOMMAND")
            client.send("SET", "after", "1")
            assert await client.execute("GET", "after") == b"1"
            assert any("command failed" in r.getMessage() for r in caplog.records)
        finally:
            await client.close()

    run(body())


def test_auth_and_select_from_the_url(run) -> None:
    require_redis()
    acl = ["alice", "on", ">wonder", "~*", "&*", "+@all"]
    with RedisServer("--user", *acl, password="s3cret") as server:
        cli = server.client()

        async def body() -> None:
            loop = asyncio.get_running_loop()
            base = f"127.0.0.1:{server.port}"
            default = await started(RedisClient(f"redis://:s3cret@{base}/3", loop=loop))
            alice = await started(RedisClient(f"redis://alice:wonder@{base}/5", loop=loop))
            wrong = RedisClient(f"redis://:nope@{base}/0", loop=loop, min_backoff=0.01)
            wrong.start()
            try:
                await default.execute("SET", "where", "db3")
                await alice.execute("SET", "where", "db5")
                assert await alice.execute("ACL", "WHOAMI") == b"alice"
                assert await default.execute("CLIENT", "GETNAME") == b"fastrelay"
                assert not await wrong.wait_connected(0.5)
                with pytest.raises(RedisUnavailable):
                    await wrong.execute("PING")
            finally:
                await default.close()
                await alice.close()
                await wrong.close()

        run(body())
        assert cli("-n", "3", "GET", "where") == "db3"
        assert cli("-n", "5", "GET", "where") == "db5"
        assert cli("-n", "0", "GET", "where") == ""


def test_on_connect_commands_go_out_first(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        order = Replies()
        seen: list[bool] = []
        client: RedisClient

        def on_connect() -> None:
            seen.append(client.connected)
            client.call(order, "RPUSH", "order", "on_connect")

        def on_state(connected: bool) -> None:
            if connected:
                client.call(order, "RPUSH", "order", "on_state")

        client = RedisClient(redis_server.url, loop=loop, on_connect=on_connect, on_state=on_state)
        await started(client)
        try:
            assert await order.count(2) == [1, 2]
            assert seen == [True]
            assert await client.execute("LRANGE", "order", 0, -1) == [b"on_connect", b"on_state"]
        finally:
            await client.close()

    run(body())


# -- pub/sub --------------------------------------------------------------------------------


def test_subscribe_coalescing_and_delivery(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        inbox = Inbox()
        client = await started(RedisClient(redis_server.url, loop=loop))
        sub = RedisSubscriber(redis_server.url, loop=loop, on_message=inbox)
        try:
            await started(sub)
            assert await sub.wait_subscribed(TIMEOUT)  # nothing desired yet
            counting = spy(sub)
            for name in (b"a", b"b", b"c", b"a", b"d"):
                sub.subscribe(name)
            sub.unsubscribe(b"d")  # joined and left in one iteration: never sent
            sub.unsubscribe(b"never")
            assert sub.channels == {b"a", b"b", b"c"} and sub.subscribed(b"a")
            assert await sub.wait_subscribed(TIMEOUT)
            assert counting.commands() == [[b"SUBSCRIBE", b"a", b"b", b"c"]]
            assert len(counting.writes) == 1
            assert sub.subscribed_count == 3

            counting.writes.clear()
            sub.unsubscribe(b"b")
            sub.unsubscribe(b"c")
            sub.subscribe(b"e")
            sub.unsubscribe(b"a")
            sub.subscribe(b"a")  # left and re-joined in one iteration: nothing for a
            assert await sub.wait_subscribed(TIMEOUT)
            assert counting.commands() == [[b"SUBSCRIBE", b"e"], [b"UNSUBSCRIBE", b"b", b"c"]]
            assert len(counting.writes) == 1

            assert await client.execute("PUBLISH", "b", "dropped") == 0
            assert await client.execute("PUBLISH", "a", "one") == 1
            client.send("PUBLISH", "e", "two")
            assert await inbox.count(2) == [(b"a", b"one"), (b"e", b"two")]
            await inbox.until(lambda: sub.subscribed_count == 2, "2 confirmed subscriptions")
        finally:
            await sub.close()
            await client.close()

    run(body())


def test_binary_safe_payloads(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        inbox = Inbox()
        client = await started(RedisClient(redis_server.url, loop=loop))
        sub = RedisSubscriber(redis_server.url, loop=loop, on_message=inbox)
        try:
            every_byte = bytes(range(256))
            big = every_byte * 4096  # 1 MiB
            channel = b"bin\x00\r\n\xff"
            await started(sub)
            sub.subscribe(channel)
            assert await sub.wait_subscribed(TIMEOUT)
            client.send("PUBLISH", channel, every_byte)
            client.send("PUBLISH", channel, big)
            client.send("PUBLISH", channel, b"")
            assert await inbox.count(3) == [(channel, every_byte), (channel, big), (channel, b"")]
            await client.execute("SET", every_byte, big)
            assert await client.execute("GET", every_byte) == big
        finally:
            await sub.close()
            await client.close()

    run(body())


# -- losing Redis ---------------------------------------------------------------------------


def test_reconnect_after_sigkill(run, redis_server: RedisServer, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    url = f"redis://127.0.0.1:{redis_server.port}/2"  # SELECT must be redone on reconnect

    async def body() -> None:
        loop = asyncio.get_running_loop()
        client_states, sub_states, inbox = States(), States(), Inbox()
        connects: list[int] = []
        client: RedisClient

        def on_connect() -> None:
            connects.append(len(connects) + 1)
            client.send("SET", "registered", len(connects))

        client = RedisClient(
            url, loop=loop, on_connect=on_connect, on_state=client_states, min_backoff=0.01
        )
        resubscribed: list[CountingTransport] = []

        def on_sub_state(connected: bool) -> None:
            # Called before the first flush of a new connection: see its re-SUBSCRIBEs.
            if connected and sub_states.values:
                resubscribed.append(spy(sub))
            sub_states(connected)

        sub = RedisSubscriber(
            url, loop=loop, on_message=inbox, on_state=on_sub_state, min_backoff=0.01
        )
        try:
            await started(client)
            await started(sub)
            channels = [b"news", *(b"ch-%d" % n for n in range(2500))]
            for channel in channels:
                sub.subscribe(channel)
            assert await sub.wait_subscribed(TIMEOUT)
            assert sub.subscribed_count == len(channels)
            await client.execute("PUBLISH", "news", "before")
            await inbox.count(1)

            # Mid-stream: a pipeline, and a blocked command behind it, in flight when Redis
            # dies (the blocked one holds up everything after it on its connection).
            blocked, pipeline = Replies(), Replies()
            for _ in range(2000):
                client.call(pipeline, "INCR", "n")
            client.call(blocked, "BLPOP", "nothing", 0)
            client.send("PUBLISH", "news", "never")
            await pipeline.count(1)
            redis_server.kill()

            await client_states.reach([True, False])
            await sub_states.reach([True, False])
            assert not client.connected and not sub.connected
            assert isinstance((await blocked.count(1))[0], RedisUnavailable)
            got = await pipeline.count(2000)
            done = [reply for reply in got if not isinstance(reply, RedisUnavailable)]
            assert done == list(range(1, len(done) + 1))  # replies in order, then failures
            assert all(isinstance(reply, RedisUnavailable) for reply in got[len(done) :])
            with pytest.raises(RedisUnavailable):
                await client.execute("PING")
            late = Replies()
            client.call(late, "PING")
            assert late.values == []
            assert isinstance((await late.count(1))[0], RedisUnavailable)
            sub.subscribe(b"while-down")
            channels.append(b"while-down")

            await loop.run_in_executor(None, redis_server.restart)
            await client_states.reach([True, False, True])
            await sub_states.reach([True, False, True])
            assert connects == [1, 2]
            assert await sub.wait_subscribed(TIMEOUT)
            assert sub.subscribed_count == len(channels)
            sizes = [len(command) - 1 for command in resubscribed[0].commands()]
            assert sizes == [SUBSCRIBE_CHUNK, SUBSCRIBE_CHUNK, len(channels) - 2 * SUBSCRIBE_CHUNK]
            assert {c for command in resubscribed[0].commands() for c in command[1:]} == set(
                channels
            )
            before = len(inbox.messages)
            await client.execute("PUBLISH", "news", "after")
            await client.execute("PUBLISH", "while-down", "new")
            await client.execute("PUBLISH", "ch-2499", "last")
            assert (await inbox.count(before + 3))[before:] == [
                (b"news", b"after"),
                (b"while-down", b"new"),
                (b"ch-2499", b"last"),
            ]
            assert await client.execute("INCR", "fresh") == 1  # the data died with the server
            assert await client.execute("GET", "registered") == b"2"
        finally:
            await sub.close()
            await client.close()
        assert client_states.values == [True, False, True, False]

    run(body())
    assert redis_server.client()("-n", "2", "GET", "registered") == "2"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [m for m in warnings if " lost: " in m]
    assert len(lost) == 2, warnings  # one per connection, not one per retry
    assert all(m.startswith("redis: connection to 127.0.0.1:") for m in lost)
    assert not [m for m in warnings if "unavailable" in m], warnings
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("reconnected" in m for m in infos) == 2, infos


def test_redis_down_at_start(run, caplog) -> None:
    require_redis()
    caplog.set_level(logging.DEBUG, logger=LOG)
    server = RedisServer()
    try:
        server.start()
        server.stop()  # keep the port, lose the server

        async def body() -> None:
            loop = asyncio.get_running_loop()
            states, inbox = States(), Inbox()
            client = RedisClient(server.url, loop=loop, on_state=states, min_backoff=0.01)
            sub = RedisSubscriber(server.url, loop=loop, on_message=inbox, min_backoff=0.01)
            try:
                client.start()
                sub.start()
                sub.subscribe(b"early")
                assert not client.connected
                # A few attempts fail meanwhile (0.01 s backoff), for the log check below.
                assert not await client.wait_connected(0.3)
                assert not await sub.wait_subscribed(0.01)
                assert states.values == []
                await loop.run_in_executor(None, server.restart)
                assert await client.wait_connected(TIMEOUT)
                assert await sub.wait_subscribed(TIMEOUT)
                await states.reach([True])
                assert await client.execute("PUBLISH", "early", "hello") == 1
                assert await inbox.count(1) == [(b"early", b"hello")]
            finally:
                await sub.close()
                await client.close()

        run(body())
    finally:
        server.close()
    attempts = [r for r in caplog.records if r.getMessage().startswith("redis: connect to")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(attempts) >= 2  # retried quietly...
    assert len(warnings) == 2, warnings  # ...after one warning per connection
    assert all("unavailable" in m and m.endswith("; retrying") for m in warnings)
    assert sum(r.getMessage().startswith("redis: connected to") for r in caplog.records) == 2


def test_tls_url_really_uses_tls(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        url = redis_server.url.replace("redis://", "rediss://")
        client = RedisClient(url, loop=loop, connect_timeout=1.0)
        client.start()
        try:
            # A plain-text server cannot complete a TLS handshake.
            assert not await client.wait_connected(0.5)
        finally:
            await client.close()

    run(body())


def test_close_fails_pending_and_stops(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        states = States()
        client = await started(RedisClient(redis_server.url, loop=loop, on_state=states))
        blocked = Replies()
        client.call(blocked, "BLPOP", "nothing", 0)
        execute = asyncio.ensure_future(client.execute("BLPOP", "nothing", 0))
        await asyncio.sleep(0)  # one step for the task: its command is queued, not yet sent
        await client.close()
        assert isinstance(blocked.values[0], RedisUnavailable)
        with pytest.raises(RedisUnavailable):
            await execute
        assert states.values == [True, False]
        assert not client.connected
        assert not await client.wait_connected(0.01)
        after = Replies()
        client.call(after, "PING")
        assert after.values == []
        assert isinstance((await after.count(1))[0], RedisUnavailable)
        client.start()  # no-op once closed
        await client.close()

    run(body())


# -- a server that speaks garbage -----------------------------------------------------------


class FakeRedis:
    """A TCP server that answers RESP commands with canned replies, per connection."""

    def __init__(self, reply: Callable[[int, list[bytes]], bytes]) -> None:
        self.reply = reply
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = self.connections
        parser = RespParser()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                for command in parser.replies():
                    writer.write(self.reply(index, command))  # type: ignore[arg-type]
        except (ConnectionError, RespProtocolError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_protocol_error_closes_and_reconnects(run, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOG)

    spoiled: set[bytes] = set()

    def reply(connection: int, command: list[bytes]) -> bytes:
        # The first PING, and the first SUBSCRIBE's confirmation, are followed by garbage.
        if command[0] == b"PING":
            return b"!garbage\r\n" if connection == 1 else b"+PONG\r\n"
        if command[0] == b"SUBSCRIBE":
            answer = b"".join(
                b"*3\r\n$9\r\nsubscribe\r\n" + encode_command(name)[4:] + b":%d\r\n" % n
                for n, name in enumerate(command[1:], 1)
            )
            if b"SUBSCRIBE" not in spoiled:
                spoiled.add(b"SUBSCRIBE")
                answer += b"*3\r\n$7\r\nmessage\r\n$1\r\nabc\r\n"
            return answer
        return b"+OK\r\n"

    async def body() -> None:
        loop = asyncio.get_running_loop()
        fake = FakeRedis(reply)
        url = await fake.start()
        states, sub_states, inbox = States(), States(), Inbox()
        client = RedisClient(url, loop=loop, on_state=states, min_backoff=0.01)
        try:
            await started(client)
            first = Replies()
            client.call(first, "PING")
            client.call(first, "PING")
            await states.reach([True, False, True])
            assert [type(r) for r in await first.count(2)] == [RedisUnavailable] * 2
            assert await client.execute("PING") == "PONG"
            assert fake.connections == 2

            sub = RedisSubscriber(url, loop=loop, on_message=inbox, on_state=sub_states)
            sub.subscribe(b"x")
            sub.start()
            try:
                await sub_states.reach([True, False, True])
                assert await sub.wait_subscribed(TIMEOUT)
                assert fake.connections == 4
            finally:
                await sub.close()
        finally:
            await client.close()
            await fake.close()

    run(body())
    assert any("RESP protocol error" in r.getMessage() for r in caplog.records)


def test_callbacks_that_raise_do_not_break_anything(run, redis_server: RedisServer) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        inbox = Inbox()

        def boom(*_args: Any) -> None:
            raise RuntimeError("callback bug")

        def picky(channel: bytes, payload: bytes) -> None:
            if payload == b"bad":
                raise RuntimeError("on_message bug")
            inbox(channel, payload)

        client = RedisClient(redis_server.url, loop=loop, on_connect=boom, on_state=boom)
        sub = RedisSubscriber(redis_server.url, loop=loop, on_message=picky, on_state=boom)
        try:
            await started(client)
            await started(sub)
            sub.subscribe(b"c")
            assert await sub.wait_subscribed(TIMEOUT)
            client.call(boom, "PING")
            client.send("PUBLISH", "c", "bad")
            client.send("PUBLISH", "c", "good")
            assert await client.execute("PING") == "PONG"
            assert await inbox.count(1) == [(b"c", b"good")]
        finally:
            await sub.close()
            await client.close()

    run(body())
