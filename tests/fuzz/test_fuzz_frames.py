"""Hostile input for the frame codec: both twins against wsproto's parser, on random bytes and on
valid client streams broken on purpose (bit flips, truncation, length fields that lie, wrong
forms, cleared mask bits, reserved bits, stray opcodes, spliced and inserted bytes).

Every input must end in one of two ways, and only these:

- accepted: the same messages as wsproto's ``FrameProtocol`` (server side), cut into any chunks;
- rejected: a ``WebSocketError`` carrying a documented close code (1002 protocol error, 1007
  bad UTF-8, 1009 too big), the code wsproto fails with, and only messages wsproto also gave.

Anything else (another exception, a different code, a message wsproto does not produce) fails.
The differences from wsproto that are fastrelay's documented choices are applied explicitly:

1. UTF-8 is checked when a text message is complete (RFC 6455 §8.1 allows that or failing
   fast); the reference runs wsproto with a decoder that checks at the same point.
2. A message over the size limit is refused from its header alone (1009); wsproto has no limit
   and waits for the payload.
3. A header problem may be seen a few bytes earlier by one side: fastrelay checks the first two
   bytes at once, wsproto waits for the extended length before the RSV and mask bits; wsproto
   checks an extended length at once, fastrelay once the mask key is in too. When only one side
   failed, the other must fail the same way once the header is complete (14 more bytes).
4. Close code 1014 (IANA: Bad Gateway) is accepted; wsproto 1.x predates it, so the reference
   runs with 1014 added to wsproto's table of codes.
5. Messages completed in the chunk that broke the stream are dropped with the error.

FASTRELAY_FUZZ_EXAMPLES=<n> runs n examples per test instead of the CI count.
"""

from __future__ import annotations

import importlib
import os
import random
import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import frame_protocol
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from fastrelay import _accel
from fastrelay.errors import PayloadTooBig, WebSocketError

# Both twins are loaded by name whatever the selection, so the pure-Python pass of the suite
# (FASTRELAY_NO_EXTENSIONS=1) would only repeat the compiled pass's work.
pytestmark = [
    pytest.mark.skipif(_accel.NO_EXTENSIONS, reason="both twins are fuzzed in the compiled pass"),
    # A long run (FASTRELAY_FUZZ_EXAMPLES) takes what it takes: no per-test timeout then.
    pytest.mark.timeout(0 if os.environ.get("FASTRELAY_FUZZ_EXAMPLES") else 120),
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX = 1 << 17  # above every honest payload below, far below most lying lengths
DOCUMENTED_CODES = {1002, 1007, 1009}
Outcome = tuple[list[tuple[int, Any]], int | None]
PADDING = b"\x00" * 14  # completes any header (difference 3)


def examples(ci: int) -> int:
    """The CI count, or FASTRELAY_FUZZ_EXAMPLES for a longer run."""
    return int(os.environ.get("FASTRELAY_FUZZ_EXAMPLES") or ci)


def fuzz_settings(ci: int) -> settings:
    return settings(
        max_examples=examples(ci),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _load(twin: str) -> ModuleType:
    try:
        return importlib.import_module(f"fastrelay.wire._frames_{twin}")
    except ImportError:
        pytest.skip(f"fastrelay.wire._frames_{twin} is not built")


@pytest.fixture(params=["py", "c"])
def frames(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


# --- frames as the RFC lays them out, with room for lies -------------------------------------


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    key: bytes | None = b"\x37\xfa\x21\x3d"
    form: int | None = None  # 7, 16 or 64: the length encoding (None: the shortest)
    length: int | None = None  # the length field's value (None: the truth)

    def encode(self) -> bytes:
        size = len(self.payload) if self.length is None else self.length
        form = self.form or (7 if size < 126 else 16 if size < 65536 else 64)
        first = (0x80 if self.fin else 0) | self.rsv << 4 | self.opcode
        mask_bit = 0x80 if self.key is not None else 0
        if form == 7:
            header = bytes((first, mask_bit | (size & 0x7F)))
        elif form == 16:
            header = bytes((first, mask_bit | 126)) + struct.pack("!H", size & 0xFFFF)
        else:
            header = bytes((first, mask_bit | 127)) + struct.pack("!Q", size % (1 << 64))
        if self.key is None:
            return header + self.payload
        size = len(self.payload)
        stream = (self.key * (size // 4 + 1))[:size]
        masked = int.from_bytes(self.payload, "big") ^ int.from_bytes(stream, "big")
        return header + self.key + masked.to_bytes(size, "big")


keys = st.binary(min_size=4, max_size=4)
close_codes = st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 3000, 4000, 4999])


@st.composite
def payloads(draw: Any, text: bool) -> bytes:
    if draw(st.integers(0, 14)) == 0:  # now and then, 16- and 64-bit lengths
        size = draw(st.sampled_from([126, 200, 65535, 65536, 70000]))
        return ("é" * (size // 2) + "x" * (size % 2)).encode() if text else b"\xab" * size
    if text:
        return draw(st.text(max_size=40)).encode()
    return draw(st.binary(max_size=40))


@st.composite
def valid_streams(draw: Any) -> list[Frame]:
    """Valid client frames: messages (some fragmented, with pings between the fragments),
    control frames, perhaps a Close at the end."""
    frames: list[Frame] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            opcode = OP_PING if kind == "ping" else OP_PONG
            frames.append(Frame(opcode, draw(st.binary(max_size=125)), key=draw(keys)))
            continue
        opcode = OP_TEXT if kind == "text" else OP_BINARY
        payload = draw(payloads(opcode == OP_TEXT))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=2)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            frames.append(Frame(OP_CONT if i else opcode, piece, fin=last, key=draw(keys)))
            if not last and draw(st.booleans()):
                frames.append(Frame(OP_PING, draw(st.binary(max_size=20)), key=draw(keys)))
    if draw(st.booleans()):
        reason = draw(st.text(max_size=20)).encode()[:123]
        code = draw(close_codes)
        frames.append(Frame(OP_CLOSE, code.to_bytes(2, "big") + reason, key=draw(keys)))
    return frames


@st.composite
def frame_lies(draw: Any) -> list[Frame]:
    """A valid stream with one to three frames changed into something they should not be."""
    frames = draw(valid_streams())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(frames) - 1))
        frame = frames[i]
        how = draw(
            st.sampled_from(
                ["length", "form", "unmask", "rsv", "opcode", "fin", "control-size", "splice"]
            )
        )
        if how == "length":
            lie = draw(
                st.one_of(
                    st.integers(0, 300),
                    st.integers(0, 1 << 17),
                    st.integers(0, (1 << 64) - 1),
                    st.sampled_from([125, 126, 127, 65535, 65536, 1 << 63, (1 << 64) - 1]),
                )
            )
            frames[i] = replace(frame, length=lie, form=draw(st.sampled_from([None, 7, 16, 64])))
        elif how == "form":
            frames[i] = replace(frame, form=draw(st.sampled_from([7, 16, 64])))
        elif how == "unmask":
            frames[i] = replace(frame, key=None)
        elif how == "rsv":
            frames[i] = replace(frame, rsv=draw(st.integers(1, 7)))
        elif how == "opcode":
            frames[i] = replace(frame, opcode=draw(st.integers(0, 15)))
        elif how == "fin":
            frames[i] = replace(frame, fin=not frame.fin)
        elif how == "control-size":
            frames[i] = Frame(draw(st.sampled_from([OP_PING, OP_CLOSE])), b"\x03\xe8" * 63)
        else:
            j = draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
    return frames


def encode_all(frames: list[Frame]) -> bytes:
    return b"".join(frame.encode() for frame in frames)


@st.composite
def byte_damage(draw: Any) -> bytes:
    """A valid stream's bytes with bits flipped, bytes inserted or deleted, or cut short."""
    data = bytearray(encode_all(draw(valid_streams())))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


@st.composite
def chunkings(draw: Any, data: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if a < b]


# --- the two sides ---------------------------------------------------------------------------


class _WholeMessageDecoder:
    """Stands in for wsproto's incremental UTF-8 decoder: checks once, at the message end
    (difference 1). Everything else in the reference is wsproto's own code."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def decode(self, data: bytes, final: bool = False) -> str:
        self._parts.append(bytes(data))
        if not final:
            return ""
        return b"".join(self._parts).decode("utf-8")


# wsproto's close codes plus 1014 (difference 4).
_CloseReason = IntEnum(  # type: ignore[misc]
    "_CloseReason", {**{reason.name: int(reason) for reason in CloseReason}, "BAD_GATEWAY": 1014}
)


def reference(chunks: list[bytes]) -> Outcome:
    """wsproto's reading of the stream: (messages, close code it failed with, or None)."""
    proto = FrameProtocol(client=False, extensions=[])
    out: list[tuple[int, Any]] = []
    pending: list[Any] = []
    with (
        mock.patch.object(
            frame_protocol, "getincrementaldecoder", lambda _name: _WholeMessageDecoder
        ),
        mock.patch.object(frame_protocol, "CloseReason", _CloseReason),
    ):
        try:
            for chunk in chunks:
                proto.receive_bytes(chunk)
                for frame in proto.received_frames():
                    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                        pending.append(frame.payload)
                        if frame.message_finished:
                            if frame.opcode is Opcode.TEXT:
                                out.append((OP_TEXT, "".join(pending).encode()))
                            else:
                                out.append((OP_BINARY, b"".join(pending)))
                            pending = []
                    elif frame.opcode is Opcode.CLOSE:
                        code, reason = frame.payload
                        out.append((OP_CLOSE, (int(code), reason)))
                    else:
                        out.append((int(frame.opcode), bytes(frame.payload)))
        except ParseFailed as exc:
            return out, int(exc.code)
    return out, None


def ours(frames: ModuleType, chunks: list[bytes]) -> Outcome:
    """The twin's reading, as the server uses it: Close payloads go through parse_close."""
    parser = frames.FrameParser(MAX)
    out: list[tuple[int, Any]] = []
    closed = False
    for chunk in chunks:
        try:
            messages = parser.feed(chunk)
        except WebSocketError as exc:
            assert not closed, "nothing after a Close may be parsed"
            assert exc.close_code in DOCUMENTED_CODES, exc.close_code
            assert isinstance(exc, PayloadTooBig) == (exc.close_code == 1009)
            return out, exc.close_code
        assert not (closed and messages), "nothing after a Close may be reported"
        for opcode, payload in messages:
            assert type(payload) is bytes
            if opcode == OP_CLOSE:
                closed = True
                try:
                    out.append((opcode, frames.parse_close(payload)))
                except WebSocketError as exc:
                    assert exc.close_code in (1002, 1007), exc.close_code
                    return out, exc.close_code
            else:
                out.append((opcode, payload))
    return out, None


def check(frames: ModuleType, chunks: list[bytes]) -> Outcome:
    """Compare the twin with wsproto on one chunking; return the twin's outcome."""
    mine, my_code = ours(frames, chunks)
    ref, ref_code = reference(chunks)
    if my_code is None and ref_code is None:
        assert mine == ref
        return mine, my_code
    if my_code is None:  # difference 3: fastrelay is waiting for the rest of the header
        assert mine == ref
        padded, padded_code = ours(frames, [*chunks, PADDING])
        assert padded_code == ref_code and padded[: len(ref)] == ref, (ref_code, padded_code)
        return mine, my_code
    assert mine == ref[: len(mine)], (mine, ref)  # difference 5: a prefix
    if my_code == 1009:  # difference 2: wsproto, without a limit, is still reading
        assert ref_code is None, (my_code, ref_code)
    elif ref_code is None:  # difference 3: wsproto is waiting for the rest of the header
        _, padded_code = reference([*chunks, PADDING])
        assert padded_code == my_code, (my_code, padded_code)
    else:
        assert my_code == ref_code, (my_code, ref_code, mine, ref)
    return mine, my_code


def check_all_ways(frames: ModuleType, data: bytes, chunks: list[bytes]) -> None:
    """Whole, in the given chunks and one byte at a time: one outcome."""
    whole = check(frames, [data])
    for cut in (chunks, [data[i : i + 1] for i in range(len(data))] if len(data) < 600 else []):
        if cut:
            assert check(frames, cut)[1] == whole[1]


# --- the properties --------------------------------------------------------------------------


@fuzz_settings(100)
@given(data=st.data())
def test_valid_streams_read_like_wsproto(frames, data):
    stream = encode_all(data.draw(valid_streams()))
    chunks = data.draw(chunkings(stream))
    messages, code = check(frames, chunks)
    assert code is None and messages  # a generator check: these are all valid
    check_all_ways(frames, stream, chunks)


@fuzz_settings(250)
@given(data=st.data())
def test_lying_frames(frames, data):
    stream = encode_all(data.draw(frame_lies()))
    check_all_ways(frames, stream, data.draw(chunkings(stream)))


@fuzz_settings(250)
@given(data=st.data())
def test_damaged_bytes(frames, data):
    stream = data.draw(byte_damage())
    check_all_ways(frames, stream, data.draw(chunkings(stream)))


@fuzz_settings(150)
@given(data=st.data())
def test_random_bytes(frames, data):
    # Mostly refused at the first header; the masked-header prefix gets further in.
    prefix = data.draw(st.sampled_from([b"", b"\x81\x85", b"\x82\xfe", b"\x01\xff", b"\x88\x82"]))
    stream = prefix + data.draw(st.binary(max_size=200))
    check_all_ways(frames, stream, data.draw(chunkings(stream)))


@fuzz_settings(100)
@given(data=st.data())
def test_twins_agree_to_the_byte(data):
    """Same messages, same error, same reason, raised by the same chunk, in both twins."""
    twins = [_load("py"), _load("c")]
    stream = data.draw(st.one_of(byte_damage(), frame_lies().map(encode_all)))
    chunks = data.draw(chunkings(stream))
    results = []
    for twin in twins:
        parser = twin.FrameParser(MAX)
        got: list[Any] = []
        for index, chunk in enumerate(chunks):
            try:
                got.append(parser.feed(chunk))
            except WebSocketError as exc:
                got.append((type(exc), exc.close_code, exc.reason, index))
                break
        results.append(got)
    assert results[0] == results[1]


# --- the fixes these properties asked for, pinned ---------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Frame(OP_BINARY, b"abc", form=16),
        Frame(OP_TEXT, b"x" * 125, form=16),
        Frame(OP_BINARY, b"abc", form=64),
        Frame(OP_BINARY, b"y" * 65535, form=64),
    ],
    ids=["3-in-16", "125-in-16", "3-in-64", "65535-in-64"],
)
def test_length_not_in_shortest_form_is_1002(frames, frame):
    # RFC 6455 §5.2: the minimal number of bytes MUST be used; wsproto refuses it too.
    with pytest.raises(WebSocketError) as info:
        frames.FrameParser(MAX).feed(frame.encode())
    assert info.value.close_code == 1002
    assert reference([frame.encode()])[1] == 1002


def test_nothing_after_a_close_is_parsed(frames):
    # A close followed, in the same read, by garbage: the close is still reported (and echoed
    # by the server) instead of the garbage turning it into a 1002.
    close = Frame(OP_CLOSE, b"\x03\xe8bye").encode()
    parser = frames.FrameParser(MAX)
    assert parser.feed(close + b"\xff\xff\xff\xff garbage") == [(OP_CLOSE, b"\x03\xe8bye")]
    assert parser.feed(b"\x00" * 100) == []
    assert parser.feed(Frame(OP_TEXT, b"late").encode()) == []


def test_close_then_data_across_reads(frames):
    close = Frame(OP_CLOSE, b"\x03\xe8").encode()
    text = Frame(OP_TEXT, b"after").encode()
    parser = frames.FrameParser(MAX)
    stream = close + text
    messages = []
    for i in range(len(stream)):  # one byte at a time: the close ends it all the same
        messages += parser.feed(stream[i : i + 1])
    assert messages == [(OP_CLOSE, b"\x03\xe8")]


def test_reference_is_wsproto_on_a_fixed_sample():
    # The reference itself: a seeded sample of damaged streams, checked against plain wsproto
    # where UTF-8 timing and close codes (differences 1 and 4) cannot matter.
    rng = random.Random(6455)
    for _ in range(200):
        frames = [Frame(OP_BINARY, rng.randbytes(rng.randint(0, 30))) for _ in range(3)]
        data = bytearray(encode_all(frames))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        plain = FrameProtocol(client=False, extensions=[])
        plain.receive_bytes(bytes(data))
        try:
            plain_count = sum(1 for _ in plain.received_frames())
            plain_code = None
        except ParseFailed as exc:
            plain_code = int(exc.code)
        else:
            assert plain_count >= 0
        assert reference([bytes(data)])[1] == plain_code
