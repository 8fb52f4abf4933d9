"""WebSocket frames (RFC 6455 §5), server side: stub of the compiled twin of ``_frames_py``."""

from typing import Final

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

OP_CONT: Final = 0
OP_TEXT: Final = 1
OP_BINARY: Final = 2
OP_CLOSE: Final = 8
OP_PING: Final = 9
OP_PONG: Final = 10

class FrameParser:
    """Incremental parser: bytes in, complete ``(opcode, payload)`` messages out.

    Data messages are reassembled from their fragments and reported with the opcode of the first
    fragment (``OP_TEXT`` or ``OP_BINARY``); control frames (``OP_CLOSE``, ``OP_PING``,
    ``OP_PONG``) are reported as they arrive, also between the fragments of a data message.

    ``require_mask=True`` (a server) rejects unmasked frames; ``False`` (a client-side parser for
    tests and load tools) accepts both and unmasks masked ones.

    Errors: :class:`~fastrelay.errors.WebSocketError` 1002 for a protocol violation (unmasked
    client frame, RSV bit set, unknown opcode, fragmented or >125-byte control frame, stray or
    missing continuation, 64-bit length with the top bit set), 1007 for a text message that is
    not UTF-8 (checked on the whole message), and :class:`~fastrelay.errors.PayloadTooBig` (1009)
    when a data message would exceed ``max_message_size``, decided from the frame header before
    any payload is buffered. After an error the parser is dead: every later :meth:`feed` raises
    the same error. Messages completed earlier in the chunk that held the violation are dropped
    with it: the connection is failing anyway.

    Raises ``ValueError`` if ``max_message_size`` is negative.
    """

    def __init__(self, max_message_size: int, require_mask: bool = True) -> None: ...
    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume ``data`` (any chunking; any bytes-like object) and return every message it
        completed, in order."""

def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final (FIN) frame carrying ``payload``, with the shortest length form.

    Unmasked by default (server to client); with a 4-byte ``mask_key`` the payload is masked
    (client to server, for tests and load tools). Raises ``ValueError`` for an unknown opcode, a
    control payload over 125 bytes or a mask key that is not 4 bytes long.
    """

def encode_close(code: int, reason: str = "", mask_key: bytes | None = None) -> bytes:
    """A Close frame with ``code`` and ``reason``.

    The reason is encoded as UTF-8 and cut to at most 123 bytes without splitting a character.
    Raises ``ValueError`` for a code that may not be sent (see :func:`parse_close`).
    """

def parse_close(payload: bytes) -> tuple[int, str]:
    """Read a Close frame's payload: ``(code, reason)``; ``(1005, "")`` when it is empty.

    Raises :class:`~fastrelay.errors.WebSocketError` 1002 for a 1-byte payload or a code not
    allowed on the wire (allowed: 1000-1003, 1007-1014, 3000-4999), 1007 for a reason that is
    not UTF-8.
    """
