"""One TCP connection speaking HTTP/1.1 (httptools): the REST API, or an upgrade to WebSocket.

Keep-alive and pipelining: requests are answered in the order they arrived; a handler may
return an awaitable, and requests behind it wait. A request body over the limit gets 413 and
the connection closes; a malformed request gets 400 and closes. Closing never resets a peer
that is still sending (see :meth:`HttpConnection._shutdown`).

Hostile clients: a request head (request line and headers) over MAX_HEAD_BYTES gets 431, as
do more than MAX_HEADERS headers; a request must arrive whole within ``request_timeout``
seconds of its first byte (a new connection: of connecting), else 408 (or, with nothing sent
yet, a silent close), so a client trickling bytes (slowloris) holds a connection only that
long. An idle keep-alive connection between requests is not timed. A client that does not
read its answers stops being read (``pause_writing``), so pipelining cannot pile them up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import httptools

from ..errors import HandshakeError
from ..wire.handshake import accept_response, validate_upgrade
from .routes import Request, Response, Router, error_response

__all__ = ["HttpConnection"]

log = logging.getLogger("fastrelay.http")

MAX_HEADERS = 100
MAX_HEAD_BYTES = 65536  # request line + headers; httptools itself buffers them without a limit
REQUEST_TIMEOUT = 10.0  # Config.http_request_timeout's default
MAX_PIPELINED = 64  # requests queued behind a slow one before reading pauses
LINGER_SECONDS = 5.0  # how long a closing connection keeps reading (and dropping) input

# Called with (transport, request, bytes after the request); returns the protocol taking over.
UpgradeHandler = Callable[[asyncio.Transport, Request, bytes], asyncio.Protocol]
# Called after each answered request (metrics); must be cheap and must not raise.
ResponseHook = Callable[[Request, Response], None]


class HttpConnection(asyncio.Protocol):
    """Parses requests with httptools and answers them through the router."""

    def __init__(
        self,
        router: Router,
        *,
        max_body: int,
        is_websocket_path: Callable[[str], bool],
        upgrade: UpgradeHandler,
        on_response: ResponseHook | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._router = router
        self._on_response = on_response
        self._max_body = max_body
        self._is_websocket_path = is_websocket_path
        self._upgrade = upgrade
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._remote = ""
        # (request, keep-alive, HTTP/1.0) in arrival order
        self._queue: deque[tuple[Request, bool, bool]] = deque()
        self._busy = False  # an awaitable handler is running
        self._closing = False
        self._pending_upgrade: Request | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None  # the awaitable handler running
        self._request_timeout = request_timeout
        # One timer at a time, re-armed lazily: it fires at most request_timeout after the
        # start of the request being received, which it then checks (see _deadline_passed).
        self._deadline: asyncio.TimerHandle | None = None
        self._started = 0.0  # loop time of the current request's first byte
        self._seen_request = False  # a request has begun on this connection
        self._reading_paused = False  # we paused the transport's reading
        self._in_request = False  # between a request's first byte and its end
        self._in_head = False  # ...and before the end of its headers
        self._head_began_now = False  # the head started in the chunk being parsed
        self._head_bytes = 0  # bytes of the head received after its first chunk
        self._write_paused = False  # the client is not reading its answers
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._header_count = 0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TCPTransport does not subclass asyncio.Transport.
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._arm_deadline(self._request_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._head_began_now = False
        try:
            self._parser.feed_data(data)
            if self._in_head and not self._head_began_now:
                # The whole chunk belongs to an unfinished head; a head's first chunk is not
                # counted, which bounds the buffered head at MAX_HEAD_BYTES plus one read.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._fail(431, "Request header fields too large")
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._start_upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            # Our own callbacks' refusals come back wrapped, as the exception's context.
            cause = exc.__context__
            if isinstance(cause, _BodyTooLarge):
                self._fail(413, "The payload size is too big.")
            elif isinstance(cause, _TooManyHeaders):
                self._fail(431, "Too many headers")
            else:
                log.info("bad HTTP request from %s: %s", self._remote, exc)
                self._fail(400, "Bad request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._queue.clear()
        if self._linger is not None:
            self._linger.cancel()
        self._cancel_deadline()

    def pause_writing(self) -> None:
        # The client does not read its answers: read no more requests until it does.
        self._write_paused = True
        if self._transport is not None and not self._closing:
            self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._drain()  # resumes reading unless queued requests or a handler still hold it

    # -- request deadline (slowloris) --------------------------------------------------------

    def _arm_deadline(self, delay: float) -> None:
        if self._deadline is None:
            self._deadline = self._loop.call_later(delay, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._closing or self._transport is None:
            return
        if not self._in_request:
            if self._seen_request:
                return  # idle between requests: not timed; the next request re-arms
            # Connected and sent nothing: no request to answer, so no 408 to misread later.
            self._closing = True
            self._transport.close()
            return
        if self._busy or self._queue or self._write_paused:
            # Reading is held up on our side: not the client's delay.
            self._arm_deadline(self._request_timeout)
            return
        remaining = self._started + self._request_timeout - self._loop.time()
        if remaining > 0:
            # Armed for an earlier request; this one began later and still has time.
            self._arm_deadline(remaining)
            return
        log.info("request from %s incomplete after %gs", self._remote, self._request_timeout)
        self._fail(408, "Request timeout")

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = self._header_count = self._head_bytes = 0
        self._in_request = self._in_head = self._head_began_now = True
        if self._seen_request:
            self._started = self._loop.time()
        else:  # a new connection's first request is timed from connecting
            self._seen_request = True
        if self._deadline is None:
            self._deadline = self._loop.call_later(self._request_timeout, self._deadline_passed)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise _TooManyHeaders
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers = self._headers
        # A declared length over the limit is refused now, not after reading the body.
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise _BodyTooLarge
        # curl sends "Expect: 100-continue" with bigger bodies and waits a second for this
        # before sending them. Earlier requests are all answered unless a handler is running.
        expect = headers.get("expect")
        expects = expect is not None and expect.lower() == "100-continue"
        if expects and not self._busy and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise _BodyTooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        # The deadline timer stays armed: when it fires it finds no request in progress.
        self._in_request = False
        parser = self._parser
        raw = self._url
        if raw[:1] == b"/" and b"#" not in raw:
            # Origin form, the usual case: what parse_url would return, without its objects.
            path, _, query = raw.partition(b"?")
            url_path = path.decode("latin-1")
            url_query = query.decode("latin-1")
        else:
            url = httptools.parse_url(raw)
            url_path = url.path.decode("latin-1") if url.path else "/"
            url_query = url.query.decode("latin-1") if url.query else ""
        method = parser.get_method()
        body = self._body
        request = Request(
            _METHODS.get(method) or method.decode("ascii", "replace"),
            url_path,
            url_query,
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            self._remote,
        )
        if parser.should_upgrade():
            # httptools raises HttpParserUpgrade right after this; the request waits there.
            # The timer would keep this object alive after the WebSocket takes over.
            self._cancel_deadline()
            self._pending_upgrade = request
            return
        keep_alive = parser.should_keep_alive()
        http10 = parser.get_http_version() == "1.0"
        if self._queue or self._busy or self._closing:
            self._queue.append((request, keep_alive, http10))
            self._drain()
            return
        # Nothing ahead of it: answered now, without the trip through the queue.
        result = self._dispatch(request)
        if result.__class__ is not Response and inspect.isawaitable(result):
            self._wait_for(result, request, keep_alive, http10)
            return
        self._write(result, request, keep_alive, http10)
        if self._reading_paused and not self._closing and not self._write_paused:
            self._resume_reading()

    # -- answering ---------------------------------------------------------------------------

    def _drain(self) -> None:
        while self._queue and not self._busy and not self._closing:
            request, keep_alive, http10 = self._queue.popleft()
            result = self._dispatch(request)
            if result.__class__ is not Response and inspect.isawaitable(result):
                self._wait_for(result, request, keep_alive, http10)
                return
            self._write(result, request, keep_alive, http10)
        if self._transport is not None and not self._closing:
            if len(self._queue) > MAX_PIPELINED:
                self._pause_reading()
            elif not self._busy and not self._write_paused and self._reading_paused:
                self._resume_reading()

    def _wait_for(
        self, pending: Awaitable[Response], request: Request, keep_alive: bool, http10: bool
    ) -> None:
        self._busy = True
        # Kept: the loop holds tasks only weakly, so an unreferenced one may vanish.
        self._task = asyncio.ensure_future(self._finish(pending, request, keep_alive, http10))

    def _pause_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = True
        self._transport.pause_reading()

    def _resume_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = False
        self._transport.resume_reading()

    async def _finish(
        self, pending: Awaitable[Response], request: Request, keep_alive: bool, http10: bool
    ) -> None:
        try:
            response = await pending
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = error_response(500, "Internal server error")
        self._busy = False
        self._write(response, request, keep_alive, http10)
        self._drain()

    def _dispatch(self, request: Request) -> Response | Awaitable[Response]:
        if request.method == "OPTIONS":
            return Response(204)
        if self._is_websocket_path(request.path):
            return error_response(426, "Upgrade Required", (("Upgrade", "websocket"),))
        handler, params, allowed = self._router.resolve(request.method, request.path)
        if handler is None:
            if allowed:
                return error_response(405, "Method not allowed", (("Allow", allowed),))
            return error_response(404, "Not found")
        request.params = params
        try:
            return handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            return error_response(500, "Internal server error")

    def _write(self, response: Response, request: Request, keep_alive: bool, http10: bool) -> None:
        if self._transport is None or self._closing:
            return
        self._transport.write(
            response.encode(keep_alive=keep_alive, head=request.method == "HEAD", http10=http10)
        )
        if self._on_response is not None:
            self._on_response(request, response)
        if not keep_alive:
            self._shutdown()

    def _fail(self, status: int, message: str) -> None:
        if self._transport is None or self._closing:
            return
        self._transport.write(error_response(status, message).encode(keep_alive=False))
        self._shutdown()

    def _shutdown(self) -> None:
        """Close once the response is out, without resetting a peer that is still sending.

        Closing a socket with unread input makes the kernel answer with RST, which can destroy
        the response before the client reads it (e.g. a 413 while the client is still uploading
        the body). So: send FIN after the response, keep reading and dropping input, and close
        on the peer's EOF or after LINGER_SECONDS ("lingering close", as nginx does).
        """
        transport = self._transport
        assert transport is not None
        self._closing = True
        self._cancel_deadline()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._resume_reading()  # pipelining may have paused it; input must drain
        self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    # -- WebSocket upgrade -------------------------------------------------------------------

    def _start_upgrade(self, rest: bytes) -> None:
        request = self._pending_upgrade
        transport = self._transport
        if request is None or transport is None:
            self._fail(400, "Bad request")
            return
        if self._queue or self._busy:
            self._fail(400, "Upgrade after pipelined requests is not supported")
            return
        try:
            key = validate_upgrade(request.method, request.headers)
        except HandshakeError as exc:
            response = error_response(exc.status, exc.message)
            if exc.status == 426:
                response.headers = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))
            self._closing = True
            transport.write(response.encode(keep_alive=False))
            transport.close()
            return
        transport.write(accept_response(key))
        self._closing = True
        protocol = self._upgrade(transport, request, rest)
        transport.set_protocol(protocol)


_METHODS = {
    name.encode(): name
    for name in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
}


class _BodyTooLarge(Exception):
    pass


class _TooManyHeaders(Exception):
    pass
