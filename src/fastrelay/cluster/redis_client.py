"""A small asyncio Redis client: one command connection and one pub/sub connection.

Both are plain :class:`asyncio.Protocol` connections (no streams) speaking RESP2 through
:mod:`.resp`. They connect in the background and reconnect forever, with exponential backoff
and jitter, until closed: a node keeps serving its own clients while Redis is away, and the
caller learns about each transition through ``on_state`` (and, for commands, ``on_connect``,
where it re-registers whatever state the new connection needs).

Commands are pipelined: everything written in one loop iteration goes out in one
``transport.write`` and replies are matched to callbacks first-in, first-out. A command whose
reply cannot arrive (not connected, or the connection dropped first) gets a
:class:`RedisUnavailable` instead; its effect on Redis is then unknown.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .resp import RedisReplyError, Reply, RespParser, RespProtocolError, encode_command

__all__ = [
    "RedisAddress",
    "RedisClient",
    "RedisReplyError",
    "RedisSubscriber",
    "RedisUnavailable",
    "parse_redis_url",
]

log = logging.getLogger("fastrelay.redis")

Arg = bytes | str | int | float

# Channel names per SUBSCRIBE when re-subscribing everything after a reconnect.
SUBSCRIBE_CHUNK = 1000
# A connection that dies sooner than this after its handshake does not reset the backoff, so
# a server that accepts and drops at once is not hammered.
_STABLE_AFTER = 1.0
# At most one "error reply to a fire-and-forget command" warning per this many seconds.
_WARN_EVERY = 10.0


class RedisUnavailable(ConnectionError):
    """There is no connection to Redis now (or it dropped before the reply arrived)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """What a ``redis://`` or ``rediss://`` URL says; the password never appears in repr."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        auth = "" if self.password is None else f"{self.username or ''}:***@"
        return f"RedisAddress({'rediss' if self.tls else 'redis'}://{auth}{self.where}/{self.db})"

    @property
    def where(self) -> str:
        """``host:port`` for log lines (never the credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_redis_url(url: str) -> RedisAddress:
    """Parse ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS).

    A lone ``redis://secret@host`` is read as a password: AUTH needs one, a user alone is
    meaningless. Raises ``ValueError`` for anything else.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme or url!r}")
    port = parts.port or 6379  # ValueError for a bad port, as promised
    host = parts.hostname or "localhost"
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"Redis database must be a number, got {path!r}") from None
    if db < 0:
        raise ValueError(f"Redis database must not be negative, got {db}")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password is None and username is not None:
        username, password = None, username
    return RedisAddress(host, port, db, username, password, parts.scheme == "rediss")


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "closed by the server"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class _RespProtocol(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes to the parser, replies to the owning connection."""

    __slots__ = ("_owner", "closed", "parser", "transport")

    def __init__(self, owner: _Connection) -> None:
        self._owner = owner
        self.parser = RespParser()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = owner._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # Pipelined writes are already batched per loop iteration; Nagle only delays.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # A vanished peer (no FIN, no RST) is noticed eventually rather than never.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except (OSError, AttributeError):
                pass

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        try:
            replies = parser.replies()
        except RespProtocolError as exc:
            if exc.replies:
                self._owner._dispatch(self, exc.replies)
            self._owner._protocol_error(self, exc)
            return
        if replies:
            self._owner._dispatch(self, replies)

    def eof_received(self) -> bool:
        return False  # close our side too: Redis never half-closes on purpose

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner._connection_lost(self, exc)


class _Connection:
    """Connect, handshake, reconnect, flush: what the two kinds of connection share."""

    def __init__(
        self,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_state: Callable[[bool], None] | None,
        connect_timeout: float,
        min_backoff: float,
        max_backoff: float,
        name: str,
    ) -> None:
        self._address = parse_redis_url(url)
        self._ssl = ssl.create_default_context() if self._address.tls else None
        self._loop = loop
        self._on_state = on_state
        self._connect_timeout = connect_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max(max_backoff, min_backoff)
        self._name = name
        self._protocol: _RespProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._connected = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._waiters: set[asyncio.Future[bool]] = set()
        # Encoded commands not yet written, and whether a flush is already scheduled.
        self._out: list[bytes] = []
        self._flush_scheduled = False
        # Reply callbacks in the order their commands were written.
        self._callbacks: deque[Callable[[Any], None]] = deque()
        self._warned_at = -_WARN_EVERY
        self._suppressed = 0

    # -- public surface shared by both kinds ------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a completed handshake and the loss of that connection."""
        return self._connected

    @property
    def address(self) -> RedisAddress:
        return self._address

    def start(self) -> None:
        """Begin connecting in the background; retries until :meth:`close`. Never raises."""
        if self._task is None and not self._closed:
            self._task = self._loop.create_task(self._run())

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected (at once if already), False if ``timeout`` passes first."""
        if self._connected:
            return True
        if self._closed:
            return False
        return await self._wait(self._waiters, timeout)

    async def close(self) -> None:
        """Stop reconnecting, fail what is pending with RedisUnavailable, close the socket.

        Commands queued but not yet written are written before the socket closes (a
        fire-and-forget ``send`` just before shutdown still reaches Redis); their callbacks
        get RedisUnavailable all the same, as nobody waits for the replies.
        """
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        protocol = self._protocol
        if protocol is not None:
            if self._out and self._transport is not None and self._connected:
                self._transport.write(b"".join(self._out))
            self._out.clear()
            if protocol.transport is not None:
                protocol.transport.close()
            self._connection_lost(protocol, RedisUnavailable("closed by this client"))
        if task is not None:
            await asyncio.wait({task})
        if protocol is not None:
            # Let the transport finish closing so no socket outlives close().
            await asyncio.wait({protocol.closed}, timeout=self._connect_timeout)
        self._release(self._waiters, False)

    # -- connecting -------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        streak = False  # a WARNING already covers the current run of failures
        ever = False
        while not self._closed:
            try:
                await asyncio.wait_for(self._open(), self._connect_timeout)
            except asyncio.CancelledError:
                self._abandon()
                raise
            except Exception as exc:
                self._abandon()
                failures += 1
                if not streak:
                    streak = True
                    log.warning(
                        "redis: connection to %s unavailable: %s; retrying",
                        self._address.where,
                        _reason(exc),
                    )
                else:
                    log.debug("redis: connect to %s failed: %s", self._address.where, _reason(exc))
                await asyncio.sleep(self._backoff(failures))
                continue
            log.info("redis: %s to %s", "reconnected" if ever else "connected", self._address.where)
            ever = True
            streak = False
            connected_at = self._loop.time()
            lost = self._lost
            reason = await lost if lost is not None else "closed"
            if self._closed:
                return
            log.warning("redis: connection to %s lost: %s; retrying", self._address.where, reason)
            streak = True
            failures = 1 if self._loop.time() - connected_at >= _STABLE_AFTER else failures + 1
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        delay = min(self._max_backoff, self._min_backoff * 2 ** min(failures - 1, 30))
        # Jitter: nodes that lost the same Redis do not all come back in the same instant.
        return delay * (0.5 + random.random() / 2)

    async def _open(self) -> None:
        address = self._address
        transport, protocol = await self._loop.create_connection(
            lambda: _RespProtocol(self),
            address.host,
            address.port,
            ssl=self._ssl,
            server_hostname=address.host if self._ssl is not None else None,
        )
        if protocol.closed.done():
            raise RedisUnavailable("closed while connecting")
        self._protocol = protocol
        self._transport = transport  # type: ignore[assignment]
        self._lost = self._loop.create_future()
        await self._handshake(transport)  # type: ignore[arg-type]
        if protocol is not self._protocol:
            raise RedisUnavailable("closed during the handshake")
        self._ready()

    async def _handshake(self, transport: asyncio.Transport) -> None:
        """AUTH and SELECT (then CLIENT SETNAME) before anything else goes out."""
        address = self._address
        commands: list[tuple[Arg, ...]] = []
        if address.password is not None:
            if address.username:
                commands.append(("AUTH", address.username, address.password))
            else:
                commands.append(("AUTH", address.password))
        if address.db:
            commands.append(("SELECT", address.db))
        commands.append(("CLIENT", "SETNAME", self._name))
        done: asyncio.Future[None] = self._loop.create_future()
        replies: list[Any] = []

        def collect(reply: Any) -> None:
            replies.append(reply)
            if done.done():
                return
            if isinstance(reply, RedisUnavailable):
                done.set_exception(reply)
            elif len(replies) == len(commands):
                done.set_result(None)

        self._callbacks.extend([collect] * len(commands))
        transport.write(b"".join(encode_command(*command) for command in commands))
        await done
        for command, reply in zip(commands, replies, strict=True):
            # A refused CLIENT SETNAME (a proxy, an odd name) costs nothing but the label.
            if isinstance(reply, RedisReplyError) and command[0] != "CLIENT":
                raise RedisUnavailable(f"{command[0]} refused: {reply}")

    def _ready(self) -> None:
        self._connected = True
        self._on_ready()
        self._notify(True)
        self._release(self._waiters, True)

    def _abandon(self) -> None:
        """Drop a half-made connection after a failed or cancelled attempt."""
        protocol = self._protocol
        if protocol is not None:
            if protocol.transport is not None:
                protocol.transport.abort()
            self._connection_lost(protocol, RedisUnavailable("connect attempt abandoned"))

    # -- events from the protocol -----------------------------------------------------------

    def _connection_lost(self, protocol: _RespProtocol, exc: BaseException | None) -> None:
        if protocol is not self._protocol:
            return  # an old connection's late notice: already accounted for
        self._protocol = None
        self._transport = None
        was_connected = self._connected
        self._connected = False
        self._out.clear()
        reason = _reason(exc)
        self._on_lost()
        callbacks = self._callbacks
        while callbacks:
            self._deliver(callbacks.popleft(), RedisUnavailable(f"Redis connection lost: {reason}"))
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(reason)
        if was_connected:
            self._notify(False)

    def _protocol_error(self, protocol: _RespProtocol, exc: RespProtocolError) -> None:
        if protocol.transport is not None:
            protocol.transport.abort()
        self._connection_lost(protocol, RespProtocolError(f"RESP protocol error: {exc}"))

    def _dispatch(self, protocol: _RespProtocol, replies: list[Reply]) -> None:
        raise NotImplementedError

    # -- hooks for the two kinds ------------------------------------------------------------

    def _on_ready(self) -> None:
        """Connected and handshaken: queue whatever the new connection needs first."""

    def _on_lost(self) -> None:
        """The connection is gone: forget per-connection state."""

    # -- helpers ----------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out:
            transport = self._transport
            if transport is not None:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _notify(self, connected: bool) -> None:
        if self._on_state is not None:
            try:
                self._on_state(connected)
            except Exception:
                log.exception("redis: on_state(%s) callback failed", connected)

    @staticmethod
    def _deliver(callback: Callable[[Any], None], reply: Any) -> None:
        try:
            callback(reply)
        except Exception:
            log.exception("redis: reply callback failed")

    def _warn_limited(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d similar warnings suppressed)"
            args = (*args, self._suppressed)
        self._warned_at = now
        self._suppressed = 0
        log.warning(message, *args)

    async def _wait(self, waiters: set[asyncio.Future[bool]], timeout: float) -> bool:
        waiter: asyncio.Future[bool] = self._loop.create_future()
        waiters.add(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            waiters.discard(waiter)

    @staticmethod
    def _release(waiters: Iterable[asyncio.Future[bool]], value: bool) -> None:
        for waiter in list(waiters):
            if not waiter.done():
                waiter.set_result(value)


class RedisClient(_Connection):
    """The command connection: ``call`` with a callback, ``send`` and forget, or ``execute``."""

    def __init__(
        self,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_connect: Callable[[], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        connect_timeout: float = 2.0,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        name: str = "fastrelay",
    ) -> None:
        super().__init__(
            url,
            loop=loop,
            on_state=on_state,
            connect_timeout=connect_timeout,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            name=name,
        )
        self._on_connect = on_connect

    def call(self, callback: Callable[[Any], None], *args: Arg) -> None:
        """Send one command; ``callback(reply)`` runs later, never from inside this call.

        ``reply`` is the decoded reply (a :class:`RedisReplyError` for an error reply) or a
        :class:`RedisUnavailable` when there is no connection or it drops first.
        """
        if not self._connected:
            self._loop.call_soon(
                self._deliver, callback, RedisUnavailable("not connected to Redis")
            )
            return
        data = encode_command(*args)
        self._callbacks.append(callback)
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send(self, *args: Arg) -> None:
        """Fire and forget. Dropped when disconnected; an error reply is logged (rate-limited)."""
        if self._connected:
            self.call(self._check_reply, *args)

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply.

        Raises :class:`RedisReplyError` for an error reply and :class:`RedisUnavailable` when
        there is no connection or it drops before the reply.
        """
        if not self._connected:
            raise RedisUnavailable("not connected to Redis")
        reply: asyncio.Future[Any] = self._loop.create_future()
        self.call(lambda value: reply.done() or reply.set_result(value), *args)
        value = await reply
        if isinstance(value, (RedisReplyError, RedisUnavailable)):
            raise value
        return value

    def _check_reply(self, reply: Any) -> None:
        if isinstance(reply, RedisReplyError):
            self._warn_limited("redis: command failed: %s", reply)

    def _on_ready(self) -> None:
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception:
                log.exception("redis: on_connect callback failed")

    def _dispatch(self, protocol: _RespProtocol, replies: list[Reply]) -> None:
        if protocol is not self._protocol:
            return
        callbacks = self._callbacks
        for reply in replies:
            if not callbacks:
                if protocol is self._protocol:
                    self._protocol_error(protocol, RespProtocolError("a reply nobody asked for"))
                return
            callback = callbacks.popleft()
            try:
                callback(reply)
            except Exception:
                log.exception("redis: reply callback failed")


class RedisSubscriber(_Connection):
    """The pub/sub connection: keeps a desired set of channels subscribed across reconnects."""

    def __init__(
        self,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes, bytes], None],
        on_state: Callable[[bool], None] | None = None,
        connect_timeout: float = 2.0,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        name: str = "fastrelay-sub",
    ) -> None:
        super().__init__(
            url,
            loop=loop,
            on_state=on_state,
            connect_timeout=connect_timeout,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            name=name,
        )
        self._on_message = on_message
        self._desired: set[bytes] = set()
        # Changes of this loop iteration, sent as one SUBSCRIBE and one UNSUBSCRIBE (dicts
        # for a stable order).
        self._to_subscribe: dict[bytes, None] = {}
        self._to_unsubscribe: dict[bytes, None] = {}
        # Channels the server has confirmed on this connection, and how many desired ones
        # it has not (yet): wait_subscribed resolves when that reaches zero.
        self._confirmed: set[bytes] = set()
        self._unconfirmed = 0
        self._subscribed_count = 0
        self._subscribed_waiters: set[asyncio.Future[bool]] = set()
        # channel → callbacks waiting for the server's confirmation of its SUBSCRIBE
        self._confirm_waiters: dict[bytes, list[Callable[[], None]]] = {}

    @property
    def channels(self) -> frozenset[bytes]:
        """The desired set of channels (whether or not the server has confirmed them yet)."""
        return frozenset(self._desired)

    @property
    def subscribed_count(self) -> int:
        """Subscriptions on this connection, as the server's last confirmation counted them."""
        return self._subscribed_count

    def subscribed(self, channel: bytes) -> bool:
        """True when ``channel`` is in the desired set."""
        return channel in self._desired

    def subscribe(self, channel: bytes) -> None:
        """Add ``channel`` to the desired set (no-op if already there)."""
        if channel in self._desired:
            return
        if not isinstance(channel, bytes):
            # Confirmations and messages name channels in bytes: a str would never match.
            raise TypeError(f"channel names are bytes, not {type(channel).__name__}")
        self._desired.add(channel)
        if channel not in self._confirmed:
            self._unconfirmed += 1
        if not self._connected:
            return  # the whole set goes out on (re)connect
        if channel in self._to_unsubscribe:
            del self._to_unsubscribe[channel]  # left and re-joined this iteration: no change
        else:
            self._to_subscribe[channel] = None
        self._schedule_flush()

    def unsubscribe(self, channel: bytes) -> None:
        """Remove ``channel`` from the desired set (no-op if not there)."""
        if channel not in self._desired:
            return
        self._desired.discard(channel)
        if channel not in self._confirmed:
            self._unconfirmed -= 1
        if not self._connected:
            return
        if channel in self._to_subscribe:
            del self._to_subscribe[channel]  # joined and left this iteration: nothing to send
        else:
            self._to_unsubscribe[channel] = None
        self._schedule_flush()
        self._check_subscribed()

    def when_subscribed(self, channel: bytes, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the server has confirmed ``channel``'s SUBSCRIBE: from then
        on every message published to it reaches this connection. At once when it is already
        confirmed, not wanted, or the connection is down (nothing to wait for then)."""
        if not self._connected or channel in self._confirmed or channel not in self._desired:
            callback()
            return
        self._confirm_waiters.setdefault(channel, []).append(callback)

    def _release_confirm_waiters(self, channel: bytes | None = None) -> None:
        if channel is None:
            waiting = [cb for cbs in self._confirm_waiters.values() for cb in cbs]
            self._confirm_waiters.clear()
        else:
            waiting = self._confirm_waiters.pop(channel, [])
        for callback in waiting:
            try:
                callback()
            except Exception:
                log.exception("redis: subscription callback failed")

    async def wait_subscribed(self, timeout: float) -> bool:
        """True once connected with every desired channel's SUBSCRIBE confirmed."""
        if self._connected and self._unconfirmed == 0:
            return True
        if self._closed:
            return False
        return await self._wait(self._subscribed_waiters, timeout)

    async def close(self) -> None:
        await super().close()
        self._release(self._subscribed_waiters, False)
        self._release_confirm_waiters()

    def _flush(self) -> None:
        if self._to_subscribe:
            self._out.append(encode_command("SUBSCRIBE", *self._to_subscribe))
            self._to_subscribe.clear()
        if self._to_unsubscribe:
            self._out.append(encode_command("UNSUBSCRIBE", *self._to_unsubscribe))
            self._to_unsubscribe.clear()
        super()._flush()

    def _on_ready(self) -> None:
        self._forget()
        names = list(self._desired)
        for start in range(0, len(names), SUBSCRIBE_CHUNK):
            self._out.append(encode_command("SUBSCRIBE", *names[start : start + SUBSCRIBE_CHUNK]))
        if names:
            self._schedule_flush()
        self._check_subscribed()

    def _on_lost(self) -> None:
        self._forget()
        # Nobody is served by waiting for a connection that is gone.
        self._release_confirm_waiters()

    def _forget(self) -> None:
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()
        self._confirmed.clear()
        self._unconfirmed = len(self._desired)
        self._subscribed_count = 0

    def _check_subscribed(self) -> None:
        if self._connected and self._unconfirmed == 0 and self._subscribed_waiters:
            self._release(self._subscribed_waiters, True)

    def _dispatch(self, protocol: _RespProtocol, replies: list[Reply]) -> None:
        # The hot path: one call per read, one on_message per published message.
        if protocol is not self._protocol:
            return
        on_message = self._on_message
        for reply in replies:
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                try:
                    on_message(reply[1], reply[2])  # type: ignore[arg-type]
                except Exception:
                    log.exception("redis: on_message callback failed")
            else:
                self._other(reply)

    def _other(self, reply: Reply) -> None:
        if self._callbacks:
            # Only the handshake's replies are matched FIFO on this connection.
            self._deliver(self._callbacks.popleft(), reply)
            return
        if isinstance(reply, RedisReplyError):
            self._warn_limited("redis: pub/sub command failed: %s", reply)
            return
        if type(reply) is not list or len(reply) != 3:
            return
        kind, channel, count = reply
        if kind == b"subscribe" and isinstance(channel, bytes):
            if channel not in self._confirmed:
                self._confirmed.add(channel)
                if channel in self._desired:
                    self._unconfirmed -= 1
            if isinstance(count, int):
                self._subscribed_count = count
            if channel in self._confirm_waiters:
                self._release_confirm_waiters(channel)
            self._check_subscribed()
        elif kind == b"unsubscribe":
            if isinstance(channel, bytes) and channel in self._confirmed:
                self._confirmed.discard(channel)
                if channel in self._desired:
                    self._unconfirmed += 1
            if isinstance(count, int):
                self._subscribed_count = count
