"""WebSocket frames (RFC 6455 §5), server side: the pure-Python reference twin of ``_frames_c``.

:class:`FrameParser` turns a byte stream into complete messages; :func:`encode_frame`,
:func:`encode_close` and :func:`parse_close` build and read frames. The compiled twin has the
same names, signatures and behaviour, down to the byte at which an error is raised.
"""

from __future__ import annotations

import struct

from ..errors import PayloadTooBig, WebSocketError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "encode_close",
    "encode_frame",
    "parse_close",
]

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_UNPACK_16 = struct.Struct("!H").unpack_from
_UNPACK_64 = struct.Struct("!Q").unpack_from


def _apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` as one big-integer XOR, not a byte loop."""
    size = len(data)
    if not size:
        return b""
    whole, rest = divmod(size, 4)
    key_stream = key * whole + key[:rest]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key_stream, "little")
    return value.to_bytes(size, "little")


def _close_code_allowed(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire (RFC 6455 §7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameParser:
    """Incremental parser: bytes in, complete ``(opcode, payload)`` messages out.

    Data messages are reassembled from their fragments and reported with the opcode of the first
    fragment (``OP_TEXT`` or ``OP_BINARY``); control frames (``OP_CLOSE``, ``OP_PING``,
    ``OP_PONG``) are reported as they arrive, also between the fragments of a data message.
    Protocol violations raise :class:`~fastrelay.errors.WebSocketError` (1002, or 1007 for a text
    message that is not UTF-8) or :class:`~fastrelay.errors.PayloadTooBig` (1009); after that the
    parser is dead and every later :meth:`feed` raises the same error. Messages completed earlier
    in the chunk that held the violation are dropped with it: the connection is failing anyway.
    A Close frame ends the stream: whatever follows it is dropped unparsed (RFC 6455 §5.5.1:
    nothing may follow a Close; wsproto stops there too), so a peer's close is always seen.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_error",
        "_f_fin",
        "_f_len",
        "_f_mask",
        "_f_opcode",
        "_m_buf",
        "_m_opcode",
        "_max_size",
        "_require_mask",
    )

    def __init__(self, max_message_size: int, require_mask: bool = True) -> None:
        if max_message_size < 0:
            raise ValueError(f"max_message_size must be >= 0, got {max_message_size}")
        self._max_size = max_message_size
        # False only for a client-side parser (tests, load tools): masked frames are then
        # accepted too, and unmasked.
        self._require_mask = bool(require_mask)
        # Received, not yet consumed (compacted after every feed); None when empty, as is
        # _m_buf: an idle connection keeps no buffers at all.
        self._buf: bytearray | None = None
        self._error: WebSocketError | None = None
        self._closed = False  # a Close frame was delivered
        # The frame whose header has been read; _f_len < 0 while waiting for a header.
        self._f_len = -1
        self._f_fin = False
        self._f_opcode = 0
        self._f_mask: bytes | None = None
        # The fragmented data message in progress; _m_opcode == 0 when there is none. One
        # bytearray, not a list of fragments: a flood of tiny fragments costs only its payload.
        self._m_opcode = 0
        self._m_buf: bytearray | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume ``data`` (any chunking) and return every message it completed, in order."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            return []
        buf = self._buf
        if buf is None:
            buf = bytearray(data)
        else:
            buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        try:
            while True:
                if self._f_len < 0:
                    consumed = self._parse_header(buf, pos)
                    if not consumed:
                        break
                    pos += consumed
                end = pos + self._f_len
                if len(buf) < end:
                    break
                if self._f_mask is None:
                    payload = bytes(buf[pos:end])
                else:
                    payload = _apply_mask(buf[pos:end], self._f_mask)
                pos = end
                self._f_len = -1
                self._deliver(payload, out)
                if self._closed:
                    pos = len(buf)
                    break
        except WebSocketError as exc:
            self._error = exc
            raise
        finally:
            # One compaction per call, not per frame; CPython drops a bytearray prefix cheaply.
            del buf[:pos]
            self._buf = buf if buf else None
        return out

    def _fail(self, reason: str) -> WebSocketError:
        return WebSocketError(1002, reason)

    def _parse_header(self, buf: bytearray, pos: int) -> int:
        """Read the frame header at ``pos``; return its length, or 0 if it is incomplete."""
        avail = len(buf) - pos
        if avail < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        if b0 & 0x70:
            raise self._fail("Reserved bits must be 0")
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise self._fail(f"Unknown opcode {opcode:#x}")
            if not fin:
                raise self._fail("Control frames must not be fragmented")
        elif opcode > OP_BINARY:
            raise self._fail(f"Unknown opcode {opcode:#x}")
        masked = bool(b1 & 0x80)
        if self._require_mask and not masked:
            raise self._fail("Client frames must be masked")
        length = b1 & 0x7F
        if opcode >= OP_CLOSE:
            if length > 125:
                raise self._fail("Control frame payload longer than 125 bytes")
        elif opcode == OP_CONT:
            if not self._m_opcode:
                raise self._fail("Continuation frame without a message in progress")
        elif self._m_opcode:
            raise self._fail("New data frame while a fragmented message is in progress")

        size = 2
        if length == 126:
            size = 4
        elif length == 127:
            size = 10
        if masked:
            size += 4
        if avail < size:
            return 0
        if length == 126:
            (length,) = _UNPACK_16(buf, pos + 2)
            if length < 126:
                raise self._fail("Payload length not in its shortest form")
        elif length == 127:
            (length,) = _UNPACK_64(buf, pos + 2)
            if length >> 63:
                raise self._fail("Payload length with the most significant bit set")
            if length < 0x10000:
                # RFC 6455 §5.2: "the minimal number of bytes MUST be used" (wsproto agrees).
                raise self._fail("Payload length not in its shortest form")
        if opcode < OP_CLOSE:
            total = length + len(self._m_buf or b"") if opcode == OP_CONT else length
            if total > self._max_size:
                # Decided from the header alone: the payload is never buffered.
                raise PayloadTooBig(f"Message longer than {self._max_size} bytes")
        self._f_mask = bytes(buf[pos + size - 4 : pos + size]) if masked else None
        self._f_opcode = opcode
        self._f_fin = fin
        self._f_len = length
        return size

    def _deliver(self, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        opcode = self._f_opcode
        if opcode >= OP_CLOSE:
            out.append((opcode, payload))
            self._closed = opcode == OP_CLOSE
            return
        if opcode != OP_CONT:
            if self._f_fin:
                if opcode == OP_TEXT:
                    _check_utf8(payload)
                out.append((opcode, payload))
            else:
                self._m_opcode = opcode
                self._m_buf = bytearray(payload)
            return
        assert self._m_buf is not None  # _parse_header refuses a continuation without a start
        self._m_buf += payload
        if self._f_fin:
            message = bytes(self._m_buf)
            opcode = self._m_opcode
            self._m_opcode = 0
            self._m_buf = None  # do not keep a large buffer alive
            if opcode == OP_TEXT:
                _check_utf8(message)
            out.append((opcode, message))


def _check_utf8(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(1007, "Text message is not valid UTF-8") from None


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final (FIN) frame carrying ``payload``; masked with ``mask_key`` when it is given.

    Servers send unmasked frames; pass a 4-byte ``mask_key`` to build client frames (tests, load
    tools). Raises ``ValueError`` for an unknown opcode, a control payload over 125 bytes or a
    mask key that is not 4 bytes long.
    """
    if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
        raise ValueError(f"Unknown opcode {opcode!r}")
    size = len(payload)
    if opcode >= OP_CLOSE and size > 125:
        raise ValueError("Control frame payload longer than 125 bytes")
    mask_bit = 0
    if mask_key is not None:
        if len(mask_key) != 4:
            raise ValueError("mask_key must be 4 bytes")
        mask_bit = 0x80
    first = 0x80 | opcode
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 0x10000:
        header = _PACK_16(first, mask_bit | 126, size)
    else:
        header = _PACK_64(first, mask_bit | 127, size)
    if mask_key is None:
        return header + payload
    key = bytes(mask_key)
    return header + key + _apply_mask(payload, key)


def _close_payload(code: int, reason: str) -> bytes:
    if not _close_code_allowed(code):
        raise ValueError(f"Close code {code} may not be sent")
    encoded = reason.encode("utf-8")
    if len(encoded) > 123:
        cut = 123
        # Back up over continuation bytes (0b10xxxxxx) so no character is split.
        while encoded[cut] & 0xC0 == 0x80:
            cut -= 1
        encoded = encoded[:cut]
    return code.to_bytes(2, "big") + encoded


def encode_close(code: int, reason: str = "", mask_key: bytes | None = None) -> bytes:
    """A Close frame with ``code`` and ``reason`` (UTF-8, cut to 123 bytes on a character edge).

    Raises ``ValueError`` for a code that may not be sent (see :func:`parse_close`).
    """
    return encode_frame(OP_CLOSE, _close_payload(code, reason), mask_key)


def parse_close(payload: bytes) -> tuple[int, str]:
    """Read a Close frame's payload: ``(code, reason)``; ``(1005, "")`` when it is empty.

    Raises :class:`~fastrelay.errors.WebSocketError` 1002 for a 1-byte payload or a code not
    allowed on the wire (allowed: 1000-1003, 1007-1014, 3000-4999), 1007 for a reason that is
    not UTF-8.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise WebSocketError(1002, "Close frame payload of 1 byte")
    code = (payload[0] << 8) | payload[1]
    if not _close_code_allowed(code):
        raise WebSocketError(1002, f"Invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(1007, "Close reason is not valid UTF-8") from None
    return code, reason
