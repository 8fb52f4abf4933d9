"""WebSocket frames, server side: parse client frames, build server frames (RFC 6455 §5).

Selects the compiled twin (``_frames_c``) unless ``FASTRELAY_NO_EXTENSIONS`` is set or it is not
built; type checkers always see the pure twin (``_frames_py``), which is the reference.
"""

from typing import TYPE_CHECKING

from .._accel import NO_EXTENSIONS, record

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._frames_py import FrameParser, encode_close, encode_frame, parse_close
else:
    try:
        from ._frames_c import FrameParser, encode_close, encode_frame, parse_close
    except ImportError:  # pragma: no cover
        from ._frames_py import FrameParser, encode_close, encode_frame, parse_close

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

record(__name__, FrameParser)

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
