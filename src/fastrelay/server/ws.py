"""WebSocket connections: frames in, Pusher session, frames out.

The :class:`Gateway` owns this node's live connections: it runs the Pusher handshake checks
after the HTTP 101 (PROTOCOL.md §1.2), pings idle clients and drops those that stop answering
(§4), and closes everyone on shutdown (§12). Each :class:`WebSocketConnection` turns errors
into ``pusher:error`` + close frame in exactly one method,
:meth:`WebSocketConnection.close_with_error`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
from urllib.parse import parse_qsl, urlsplit

from ..apps.base import AppManager
from ..config import App, Config
from ..errors import (
    AppDisabled,
    AppNotFound,
    InvalidVersion,
    NoVersion,
    OverCapacity,
    PathNotFound,
    PusherError,
    ReconnectNow,
    Unauthorized,
    UnsupportedVersion,
    WebSocketError,
)
from ..hub.fanout import Corker, Outlet
from ..hub.hub import Hub
from ..hub.state import Client
from ..protocol.session import Session
from ..wire import codec
from ..wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_close,
    encode_frame,
    parse_close,
)
from .metrics import CountingClient, Metrics
from .routes import Request

__all__ = ["Gateway", "WebSocketConnection"]

log = logging.getLogger("fastrelay.ws")

CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame before dropping TCP
# Backpressure (config.write_buffer_high_water = H): a connection whose send buffer passes H is
# too slow to keep up; it leaves the hub (its Outlet refuses every later frame), gets 4100 and
# a close frame, and its TCP is aborted if that close is not flushed within SLOW_CLIENT_GRACE.
# Reading from a connection pauses while its send buffer is over H/2 and resumes under H/8.
SLOW_CLIENT_CODE = 4100  # Pusher's back-off-then-reconnect range: pusher-js waits >= 1 s
SLOW_CLIENT_MESSAGE = "Client is too slow: outgoing buffer over the limit"
SLOW_CLIENT_GRACE = 1.0
SOCKET_ID_MAX = 10**10  # socket_id parts: 1–10 digits, no leading zeros (PROTOCOL.md §1.3)
_OPEN, _CLOSING, _CLOSED = 0, 1, 2


class Gateway:
    """Accepts upgraded connections for every app and keeps the live ones."""

    def __init__(
        self,
        config: Config,
        apps: AppManager,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.apps = apps
        self.metrics = metrics if metrics is not None else Metrics()
        self.hub = hub
        self.loop = loop
        self.connections: dict[str, WebSocketConnection] = {}  # socket_id → live connection
        # Upgraded transports not (or no longer) in `connections`, refused and closing ones,
        # until TCP is gone: the hub forgets a connection when its close starts, shutdown waits
        # for its close to end. The two together hold every upgraded transport; live ones are
        # not kept here too (a set entry per idle connection is about 50 bytes).
        self._closing: set[WebSocketConnection] = set()
        self.closing = False
        self._random = random.Random()
        # One write per socket per loop iteration, however many frames it got (see fanout).
        self.corker = Corker(loop.call_soon)
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Future[None] | None = None
        self._prefix = config.path_prefix.rstrip("/")
        # One bound method shared by every session (each loop.time access makes a new one).
        self.clock = loop.time

    # -- accepting ---------------------------------------------------------------------------

    def is_websocket_path(self, path: str) -> bool:
        return path.startswith(self._prefix + "/app/")

    def upgrade(
        self, transport: asyncio.Transport, request: Request, rest: bytes
    ) -> WebSocketConnection:
        """Called by the HTTP layer after the 101; the returned protocol takes the transport."""
        connection = WebSocketConnection(self, transport, request.remote_addr)
        try:
            connection.start(request, rest)
        finally:
            if self.connections.get(connection.socket_id) is not connection:
                self._closing.add(connection)  # refused, or closed while it started
        return connection

    def new_socket_id(self) -> str:
        while True:
            left = self._random.randrange(1, SOCKET_ID_MAX)
            socket_id = f"{left}.{self._random.randrange(1, SOCKET_ID_MAX)}"
            if socket_id not in self.connections:
                return socket_id

    def admit(self, request: Request) -> App:
        """The handshake checks, in the order of PROTOCOL.md §1.2.

        Raises:
            PusherError: the first check that failed.
        """
        if self.closing:
            raise ReconnectNow()
        path = request.path
        # The prefix must really be there: "/xx/app/k" is not "/ws" + "/app/k".
        if self._prefix and not path.startswith(self._prefix + "/"):
            raise PathNotFound()
        parts = path[len(self._prefix) :].split("/")
        if len(parts) != 3 or parts[0] or parts[1] != "app" or not parts[2]:
            raise PathNotFound()
        query = dict(parse_qsl(request.raw_query, keep_blank_values=True))
        protocol = query.get("protocol")
        if protocol is not None:
            # ASCII digits only: str.isdigit() accepts "²" (int() then raises) and "٧".
            if not (protocol.isascii() and protocol.isdigit()) or int(protocol) < 1:
                raise InvalidVersion()
            if not 4 <= int(protocol) <= 7:
                raise UnsupportedVersion(f"Unsupported protocol version: {protocol}")
        elif self.config.require_protocol:
            raise NoVersion()
        key = parts[2]
        app = self.apps.find_by_key(key)
        if app is None:
            raise AppNotFound(f"App key {key} does not exist.")
        if not app.enabled:
            raise AppDisabled()
        if not _origin_allowed(app.allowed_origins, request.headers.get("origin")):
            raise Unauthorized("Origin not allowed")
        if 0 <= self.config.max_node_connections <= len(self.connections):
            raise OverCapacity("The server has reached its maximum number of connections.")
        if 0 <= app.max_connections <= self.hub.cluster_connection_count(app.id):
            raise OverCapacity()
        return app

    def known_app(self, request: Request) -> App | None:
        """The app a refused upgrade asked for, if it exists (for its event log)."""
        key = request.path.rsplit("/", 1)[-1]
        return self.apps.find_by_key(key) if key else None

    # -- liveness (PROTOCOL.md §4) -----------------------------------------------------------

    def start(self) -> None:
        self._schedule_sweep()

    def _sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.config.ping_interval / 4, self.config.pong_timeout / 4))

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        ping_interval = self.config.ping_interval
        pong_timeout = self.config.pong_timeout
        for connection in list(self.connections.values()):
            connection.check_liveness(now, ping_interval, pong_timeout)
        self._schedule_sweep()

    # -- shutdown (PROTOCOL.md §12) ----------------------------------------------------------

    async def close_all(self, timeout: float) -> None:
        """Refuse new connections, send 4200 to everyone, wait for them to go."""
        self.begin_close()
        await self.wait_closed(timeout)

    def begin_close(self) -> None:
        """Refuse new connections and send 4200 to everyone; their disconnect paths run now."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in [*self.connections.values(), *self._closing]:
            connection.close_with_error(ReconnectNow.code, ReconnectNow.message)

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every connection's TCP stream to end, then abort the rest."""
        # Wait for the close handshakes (each one drops TCP after CLOSE_TIMEOUT at the latest),
        # not just for the hub to forget them: exiting earlier cuts clients off mid-close.
        if self.connections or self._closing:
            self._all_closed = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
            except asyncio.TimeoutError:
                for connection in [*self.connections.values(), *self._closing]:
                    connection.abort()

    def close_app(self, app_id: str, code: int, message: str) -> int:
        """Close every live connection of one app (a reload removed or disabled it)."""
        doomed = [c for c in self.connections.values() if c.app_id == app_id]
        for connection in doomed:
            connection.close_with_error(code, message)
        return len(doomed)

    def forget(self, connection: WebSocketConnection) -> None:
        """The connection left the hub (its close has started)."""
        if self.connections.get(connection.socket_id) is connection:
            del self.connections[connection.socket_id]
            self._closing.add(connection)

    def closed(self, connection: WebSocketConnection) -> None:
        """The connection's TCP stream is gone."""
        self._closing.discard(connection)
        if (
            not self._closing
            and not self.connections
            and self._all_closed is not None
            and not self._all_closed.done()
        ):
            self._all_closed.set_result(None)


def _origin_allowed(allowed: tuple[str, ...], origin: str | None) -> bool:
    """Reverb's ``allowed_origins``: ``*`` or host patterns with wildcards."""
    if "*" in allowed:
        return True
    if not origin:
        return False
    host = urlsplit(origin).hostname or origin
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed)


class WebSocketConnection(asyncio.Protocol):
    """One client: parses frames, feeds the session, answers control frames, closes cleanly."""

    # Fixed attributes, no per-instance dict: idle connections are most of a server's memory.
    __slots__ = (
        "_auth_timer",
        "_client",
        "_close_code",
        "_close_reason",
        "_close_timer",
        "_counters",
        "_gateway",
        "_parser",
        "_ping_sent_at",
        "_remote_addr",
        "_session",
        "_started_at",
        "_state",
        "_transport",
        "last_seen",
        "socket_id",
    )

    def __init__(self, gateway: Gateway, transport: asyncio.Transport, remote_addr: str) -> None:
        self._gateway = gateway
        self._transport = transport
        # Only the handshake (start) reads the upgrade request; after it, the address is all we
        # keep (its decoded headers would cost every idle connection about 600 bytes).
        self._remote_addr = remote_addr
        self._parser = FrameParser(gateway.config.max_message_size)
        self._state = _OPEN
        self.socket_id = ""
        self._client: Client | None = None
        self._session: Session | None = None
        self.last_seen = gateway.loop.time()
        self._ping_sent_at: float | None = None
        # Kept apart: signing in cancels the auth deadline, never the close-handshake timeout.
        self._auth_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._started_at = gateway.loop.time()
        # Why the connection ended, for the event log: 1006 unless a close frame says otherwise.
        self._close_code = 1006
        self._close_reason = ""
        # Plain integers bumped per frame; the app's own once the handshake admits it.
        self._counters = gateway.metrics.unattributed

    # -- start -------------------------------------------------------------------------------

    def start(self, request: Request, rest: bytes) -> None:
        gateway = self._gateway
        try:
            app = gateway.admit(request)
        except PusherError as exc:
            log.info(
                "refused connection from %s: %s %s",
                self._remote_addr,
                exc.code,
                exc.message,
            )
            refused_app = gateway.known_app(request)
            if refused_app is not None:
                gateway.hub.record(
                    refused_app,
                    "connection_refused",
                    code=exc.code,
                    message=exc.message,
                    remote_addr=self._remote_addr,
                )
            self.close_with_error(exc.code, exc.message)
            return
        self.socket_id = gateway.new_socket_id()
        self._counters = counters = gateway.metrics.for_app(app.id)
        counters.new_connections += 1
        high_water = gateway.config.write_buffer_high_water
        outlet = Outlet(
            self.socket_id, self._transport, high_water, self._overflowed, gateway.corker
        )
        # pause_writing() above H/2, resume_writing() under H/8 (see SLOW_CLIENT_GRACE).
        self._transport.set_write_buffer_limits(high=max(1, high_water // 2), low=high_water // 8)
        self._client = CountingClient(
            app, self.socket_id, outlet, self.close_with_error, counters=counters
        )
        # on_authorized only cancels the sign-in deadline: without one, no bound method to keep.
        self._session = Session(
            self._client,
            gateway.hub,
            clock=gateway.clock,
            on_authorized=self._authorized if app.enable_user_authentication else None,
        )
        gateway.connections[self.socket_id] = self
        gateway.hub.add_client(self._client)
        self._client.send(
            codec.encode_connection_established(self.socket_id, gateway.config.activity_timeout)
        )
        query = dict(parse_qsl(request.raw_query))
        gateway.hub.record(
            app,
            "connection_established",
            socket_id=self.socket_id,
            client=query.get("client"),
            version=query.get("version"),
            protocol=query.get("protocol"),
            remote_addr=self._remote_addr,
        )
        if app.enable_user_authentication:
            self._auth_timer = gateway.loop.call_later(
                gateway.config.user_authentication_timeout, self._authorization_expired
            )
        if rest:
            self.data_received(rest)

    def _authorized(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _authorization_expired(self) -> None:
        self.close_with_error(Unauthorized.code, "Connection not authorized within timeout.")

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The transport arrives already connected (set_protocol after the upgrade).
        pass

    @property
    def app_id(self) -> str | None:
        client = self._client
        return client.app.id if client is not None else None

    def data_received(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        counters = self._counters
        counters.socket_received_bytes += len(data)
        try:
            messages = self._parser.feed(data)
        except WebSocketError as exc:
            log.info(
                "closing %s: %s (%d)",
                self.socket_id or self._remote_addr,
                exc.reason,
                exc.close_code,
            )
            # Fail the connection (RFC 6455 §7.1.7): the stream can no longer be parsed, so
            # the peer's close reply could not be read anyway; drop TCP once the frame is out.
            self._close(exc.close_code, exc.reason)
            self._transport.close()
            return
        self.last_seen = self._gateway.loop.time()
        self._ping_sent_at = None
        for opcode, payload in messages:
            if opcode in (OP_TEXT, OP_BINARY):
                counters.ws_messages_received += 1
                if self._state == _OPEN and self._session is not None:
                    self._handle_message(payload)
            elif opcode == OP_PING:
                self._write(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._peer_closed(payload)
                return
        client = self._client
        if messages and client is not None:
            # Replies to this read go out now, not with the corked end-of-iteration batch: their
            # write is what pauses reading (pause_writing over H/2) before the next read lands,
            # so a client that sends but never reads is paused, never cut off.
            client.outlet.flush()

    def _handle_message(self, payload: bytes) -> None:
        assert self._session is not None
        try:
            self._session.receive_message(payload)
        except PusherError as exc:
            self.close_with_error(exc.code, exc.message)
        except Exception:
            # A bug of ours: log it, tell the client nothing about it, let it reconnect.
            log.exception("unexpected error handling a message from %s", self.socket_id)
            self.close_with_error(ReconnectNow.code, "Internal server error")

    def _peer_closed(self, payload: bytes) -> None:
        try:
            code, _reason = parse_close(payload)
        except WebSocketError as exc:
            self._close(exc.close_code, exc.reason)
            return
        if self._state == _OPEN:
            # Echo the close (RFC 6455 §5.5.1), then the server drops TCP first.
            self._write(encode_close(code) if code != 1005 else encode_frame(OP_CLOSE, b""))
            self._close_code, self._close_reason = code, _reason
        self._leave()
        self._state = _CLOSED
        self._transport.close()
        if self._close_timer is None and self._transport.get_write_buffer_size():
            # close() waits for the send buffer to drain: a peer that reads no more would
            # hold this connection forever.
            self._close_timer = self._gateway.loop.call_later(CLOSE_TIMEOUT, self._drop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._leave()
        for timer in (self._auth_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._auth_timer = self._close_timer = None
        self._gateway.closed(self)

    def pause_writing(self) -> None:
        # Our replies to this client pile up (buffer over H/2): take no more work from it.
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    # -- closing -----------------------------------------------------------------------------

    def close_with_error(
        self, code: int | None, message: str, *, grace: float = CLOSE_TIMEOUT
    ) -> None:
        """Send ``pusher:error`` then a close frame with the same code (PROTOCOL.md §1.2);
        TCP is dropped if the peer has not answered the close within ``grace`` seconds."""
        if self._state != _OPEN:
            return
        self._write(encode_frame(OP_TEXT, codec.encode_error(code, message)))
        if self._client is not None:
            self._gateway.hub.record(
                self._client.app, "error_sent", socket_id=self.socket_id, code=code, message=message
            )
        self._close(code or 4000, message, grace)

    def _close(self, code: int, reason: str, grace: float = CLOSE_TIMEOUT) -> None:
        """Start the closing handshake: leave the hub now, drop TCP if the peer stays silent."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._close_code, self._close_reason = code, reason
        self._leave()
        self._write(encode_close(code, reason))
        self._close_timer = self._gateway.loop.call_later(grace, self._drop)

    def _drop(self) -> None:
        """The close did not complete in time: drop TCP, at once if output is still queued."""
        self._close_timer = None
        unsent = self._transport.get_write_buffer_size()
        if unsent:
            # close() would wait for a peer that does not read; abort frees the buffer now.
            log.info("aborting %s: %d bytes not flushed", self.socket_id or "-", unsent)
            self._transport.abort()
        else:
            self._transport.close()

    def abort(self) -> None:
        self._state = _CLOSED
        self._leave()
        self._transport.abort()

    def _leave(self) -> None:
        """Run the disconnect path once: unsubscribe everything, forget the connection."""
        client = self._client
        if client is None:
            return
        self._client = None
        self._counters.new_disconnections += 1
        client.outlet.close()
        hub = self._gateway.hub
        hub.remove_client(client)
        hub.record(
            client.app,
            "disconnected",
            socket_id=self.socket_id,
            code=self._close_code,
            reason=self._close_reason,
            duration_ms=int((self._gateway.loop.time() - self._started_at) * 1000),
        )
        self._gateway.forget(self)

    def _overflowed(self) -> None:
        # Called from inside a fan-out loop, after the Outlet closed itself: only schedule.
        self._gateway.loop.call_soon(self._too_slow)

    def _too_slow(self) -> None:
        """The client cannot keep up (send buffer over the high-water mark): cut it off."""
        if self._state != _OPEN:
            return
        log.warning(
            "closing %s: too slow, %d bytes buffered (%d)",
            self.socket_id,
            self._transport.get_write_buffer_size(),
            SLOW_CLIENT_CODE,
        )
        self.close_with_error(SLOW_CLIENT_CODE, SLOW_CLIENT_MESSAGE, grace=SLOW_CLIENT_GRACE)

    def _write(self, frame: bytes) -> None:
        if self._client is not None:
            # Frames the hub queued for this socket go first: order is the protocol's.
            self._client.outlet.flush()
        if not self._transport.is_closing():
            self._transport.write(frame)
            counters = self._counters
            counters.socket_transmitted_bytes += len(frame)
            if frame[0] == 0x81:  # a text message (FIN + text), not a control frame
                counters.ws_messages_sent += 1

    # -- liveness ----------------------------------------------------------------------------

    def check_liveness(self, now: float, ping_interval: float, pong_timeout: float) -> None:
        if self._state != _OPEN:
            return
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at >= pong_timeout:
                self.close_with_error(4201, "Pong reply not received in time")
        elif now - self.last_seen >= ping_interval:
            self._ping_sent_at = now
            self._write(encode_frame(OP_TEXT, codec.PING))
