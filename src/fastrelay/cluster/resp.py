"""RESP2, the Redis wire protocol, as a sans-I/O codec: bytes in, replies out.

:func:`encode_command` builds one request (an array of bulk strings). :class:`RespParser` turns
a byte stream, cut anywhere, into replies: bulk strings as ``bytes``, simple strings as ``str``,
integers as ``int``, nil as ``None``, arrays as ``list`` and error replies as
:class:`RedisReplyError` *instances*, returned rather than raised so one failed command does
not stop the replies behind it. A stream that is not RESP raises :class:`RespProtocolError`.

The parser is on the pub/sub hot path (every message another node publishes goes through it),
so it scans one ``bytes`` buffer with ``find`` and an offset and copies bytes only to cut out
values; a partial reply's tail waits in a list of chunks until enough has arrived to finish it.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["RedisReplyError", "Reply", "RespParser", "RespProtocolError", "encode_command"]


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) to one command; ``str(error)`` is Redis's message."""

    @property
    def prefix(self) -> str:
        """The error's first word (``ERR``, ``WRONGTYPE``, ``NOAUTH``, ...)."""
        return str(self).split(" ", 1)[0]


class RespProtocolError(Exception):
    """The byte stream is not valid RESP2; the connection it came from cannot be trusted.

    ``replies`` holds the valid replies that came before the bad bytes in the same call, so
    their callers still get them before the connection is dropped.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.replies: list[Reply] = []


Reply: TypeAlias = "bytes | str | int | list[Reply] | RedisReplyError | None"

# Redis's own default proto-max-bulk-len: anything longer is a broken stream, not a value.
MAX_BULK = 512 * 1024 * 1024
# A type line (`$123`, `:42`, `+OK`, `-ERR ...`) longer than this without CRLF is garbage.
MAX_LINE = 64 * 1024

_BULK, _ARRAY, _SIMPLE, _ERROR, _INT = b"$*+-:"
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n"
_MESSAGE_LEN = len(_MESSAGE)


def _arg(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        # True would go out as "True": a mistake, never what Redis expects.
        raise TypeError("bool is not a Redis argument; pass 1/0 or a string")
    if isinstance(value, (int, float)):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One command as RESP: an array of bulk strings (``str`` is sent as UTF-8)."""
    if not args:
        raise ValueError("a Redis command needs at least a name")
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for value in args:
        data = value if type(value) is bytes else _arg(value)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


class RespParser:
    """Incremental RESP2 parser: :meth:`feed` bytes as they arrive, take :meth:`replies`.

    Partly received arrays are kept on a stack, so a long array that arrives over many reads is
    parsed once, not re-scanned from its start on every read.
    """

    __slots__ = ("_buf", "_chunks", "_chunks_len", "_need", "_pos", "_stack")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        # Data that arrived while part of a reply was still unparsed in _buf: joined to the
        # unparsed tail only once there are enough bytes (_need) to make progress.
        self._chunks: list[bytes] = []
        self._chunks_len = 0
        self._need = 0
        # One [items, remaining] pair per array still being filled, innermost last.
        self._stack: list[list] = []

    def feed(self, data: bytes) -> None:
        """Add bytes from the stream (any length, cut at any point)."""
        if not data:
            return
        if self._pos >= len(self._buf) and not self._chunks:
            # The usual case: everything before was consumed, so no copy at all.
            self._buf = bytes(data)
            self._pos = 0
        else:
            self._chunks.append(bytes(data))
            self._chunks_len += len(data)

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as part of a reply."""
        return len(self._buf) - self._pos + self._chunks_len

    def replies(self) -> list[Reply]:
        """Every reply completed by the bytes fed so far, in order (possibly none).

        Raises :class:`RespProtocolError` (with the replies before the fault attached) when
        the stream is not RESP; the parser is of no further use then.
        """
        out: list[Reply] = []
        try:
            self._parse(out)
        except RespProtocolError as exc:
            exc.replies = out
            raise
        return out

    def _parse(self, out: list[Reply]) -> None:
        if self._chunks:
            tail = len(self._buf) - self._pos
            if tail + self._chunks_len < self._need:
                return
            # The one compaction: the unparsed tail and what arrived since, in one buffer.
            self._buf = b"".join([memoryview(self._buf)[self._pos :], *self._chunks])
            self._pos = 0
            self._chunks.clear()
            self._chunks_len = 0
        buf = self._buf
        pos = self._pos
        end = len(buf)
        find = buf.find
        stack = self._stack
        value: Reply
        while pos < end:
            if not stack and buf.startswith(_MESSAGE, pos):
                # Fast path for a pub/sub push, built without the array stack. Anything unusual,
                # or not all here yet, falls through to the general path below.
                head = pos + _MESSAGE_LEN
                eol = find(b"\r\n", head)
                if eol > 0 and buf[head] == _BULK:
                    try:
                        start = eol + 2
                        stop = start + int(buf[head + 1 : eol])
                        eol = find(b"\r\n", stop + 2)
                        if (
                            start <= stop
                            and eol > 0
                            and buf[stop + 2] == _BULK
                            and buf[stop : stop + 2] == b"\r\n"
                        ):
                            start2 = eol + 2
                            stop2 = start2 + int(buf[stop + 3 : eol])
                            if start2 <= stop2 and buf[stop2 : stop2 + 2] == b"\r\n":
                                out.append([b"message", buf[start:stop], buf[start2:stop2]])
                                pos = stop2 + 2
                                continue
                    except ValueError:
                        pass
            kind = buf[pos]
            eol = find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_LINE:
                    raise RespProtocolError("no CRLF in a reply's first line")
                self._need = end - pos + 1
                break
            if kind == _BULK:
                size = _int(buf, pos, eol)
                if size >= 0:
                    start = eol + 2
                    stop = start + size
                    if stop + 2 > end:
                        if size > MAX_BULK:
                            raise RespProtocolError(f"bulk string of {size} bytes")
                        self._need = stop + 2 - pos
                        break
                    if buf[stop : stop + 2] != b"\r\n":
                        raise RespProtocolError("bulk string not followed by CRLF")
                    value = buf[start:stop]
                    pos = stop + 2
                elif size == -1:
                    value = None
                    pos = eol + 2
                else:
                    raise RespProtocolError(f"bulk string length {size}")
            elif kind == _ARRAY:
                size = _int(buf, pos, eol)
                pos = eol + 2
                if size > 0:
                    stack.append([[], size])
                    continue
                if size == 0:
                    value = []
                elif size == -1:
                    value = None
                else:
                    raise RespProtocolError(f"array length {size}")
            elif kind == _SIMPLE:
                value = buf[pos + 1 : eol].decode("utf-8", "replace")
                pos = eol + 2
            elif kind == _INT:
                value = _int(buf, pos, eol)
                pos = eol + 2
            elif kind == _ERROR:
                value = RedisReplyError(buf[pos + 1 : eol].decode("utf-8", "replace"))
                pos = eol + 2
            else:
                raise RespProtocolError(f"unexpected RESP type byte {bytes([kind])!r}")
            # Hang the value on the innermost open array; a filled array is itself a value.
            while stack:
                frame = stack[-1]
                frame[0].append(value)
                frame[1] -= 1
                if frame[1]:
                    break
                value = frame[0]
                stack.pop()
            else:
                out.append(value)
        else:
            self._need = 0
        self._pos = pos


def _int(buf: bytes, pos: int, eol: int) -> int:
    try:
        return int(buf[pos + 1 : eol])
    except ValueError:
        raise RespProtocolError(f"not an integer: {buf[pos + 1 : eol][:40]!r}") from None
