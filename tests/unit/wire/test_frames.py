"""The WebSocket frame codec, run against both twins (``py`` and ``c``).

Frames under test are built by :func:`build`, written here from RFC 6455 §5.2, so a bug shared by
the codec's encoder and parser cannot hide itself; the encoder is tested against the same
builder.
"""

from __future__ import annotations

import importlib
import random
import struct
import tracemalloc
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from fastrelay import _accel
from fastrelay.errors import PayloadTooBig, WebSocketError

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
KEY = b"\x37\xfa\x21\x3d"
MAX = 1 << 17  # comfortably above the largest payload the tests send unless they test the limit
BIG = (65535, 65536)  # too long for every split point: see big_splits()
SIZES = [*range(9), 125, 126, 127, *BIG]


def _load(twin: str) -> ModuleType:
    try:
        return importlib.import_module(f"fastrelay.wire._frames_{twin}")
    except ImportError:
        pytest.skip(f"fastrelay.wire._frames_{twin} is not built")


@pytest.fixture(params=["py", "c"])
def frames(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


# The fixture hands out a module, which holds no per-test state, so sharing it across the
# examples of a hypothesis test is safe.
SHARED_FIXTURE = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


# --- helpers ------------------------------------------------------------------------------------


def xor(payload: bytes, key: bytes) -> bytes:
    """The obvious byte loop: the reference for both twins' fast masking."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def build(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    key: bytes | None = KEY,
    rsv: int = 0,
    form: int | None = None,
    length: int | None = None,
) -> bytes:
    """A frame as RFC 6455 §5.2 lays it out; ``form`` (7, 16, 64) and ``length`` may lie."""
    size = len(payload) if length is None else length
    if form is None:
        form = 7 if size < 126 else 16 if size < 65536 else 64
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if key is not None else 0
    if form == 7:
        header = bytes((first, mask_bit | size))
    elif form == 16:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if key is None:
        return header + payload
    return header + key + xor(payload, key)


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def text_of(size: int) -> bytes:
    """Valid UTF-8 of exactly ``size`` bytes, with multi-byte characters when it is long enough."""
    unit = "aé€😀".encode()  # 1 + 2 + 3 + 4 bytes
    body = unit * (size // len(unit))
    return body + b"z" * (size - len(body))


def feed_all(parser, chunks) -> list[tuple[int, bytes]]:
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def every_split(data: bytes) -> Iterator[list[bytes]]:
    """Whole, one byte at a time, and cut in two at every split point."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def big_splits(data: bytes) -> Iterator[list[bytes]]:
    """For 64 KiB payloads every split point would be quadratic: one byte at a time, every
    point in the first and last 24 bytes (the header and the mask tail), and a stride between."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    points = {*range(1, 24), *range(len(data) - 24, len(data)), *range(24, len(data), 1021)}
    for i in sorted(points):
        yield [data[:i], data[i:]]


def splits_for(data: bytes, payload_size: int) -> Iterator[list[bytes]]:
    return big_splits(data) if payload_size in BIG else every_split(data)


def error_of(parser, chunks) -> tuple[WebSocketError, int]:
    """Feed ``chunks`` until one raises; return the error and the index of that chunk."""
    for i, chunk in enumerate(chunks):
        try:
            parser.feed(chunk)
        except WebSocketError as exc:
            return exc, i
    raise AssertionError("no WebSocketError raised")


# --- whole frames, every chunking ---------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_data_frame_any_chunking(frames, opcode, size):
    payload = text_of(size) if opcode == OP_TEXT else payload_of(size)
    data = build(opcode, payload)
    for chunks in splits_for(data, size):
        parser = frames.FrameParser(MAX)
        messages = feed_all(parser, chunks)
        assert messages == [(opcode, payload)], [len(c) for c in chunks]
        assert type(messages[0][1]) is bytes


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 8, 124, 125])
@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_any_chunking(frames, opcode, size):
    payload = b"\x03\xe8" + text_of(size - 2) if opcode == OP_CLOSE and size >= 2 else b""
    if opcode != OP_CLOSE:
        payload = payload_of(size)
    data = build(opcode, payload)
    for chunks in every_split(data):
        assert feed_all(frames.FrameParser(MAX), chunks) == [(opcode, payload)]


@pytest.mark.parametrize("size", SIZES)
def test_mask_alignment(frames, size):
    # Every payload length against several keys: the word loop and its byte tail must agree
    # with the plain byte loop.
    keys = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", KEY, b"\x01\x02\x03\x04"]
    for seed, key in enumerate(keys):
        payload = payload_of(size, seed)
        parser = frames.FrameParser(MAX)
        assert parser.feed(build(OP_BINARY, payload, key=key)) == [(OP_BINARY, payload)]


def test_many_frames_in_one_call(frames):
    stream = []
    expected = []
    for i, size in enumerate([*range(9), 125, 126, 127, 1000, 65536]):
        opcode = (OP_TEXT, OP_BINARY, OP_PING)[i % 3]
        payload = text_of(size) if opcode == OP_TEXT else payload_of(min(size, 125), i)
        stream.append(build(opcode, payload, key=bytes((i, i + 1, i + 2, i + 3))))
        expected.append((opcode, payload))
    data = b"".join(stream)
    parser = frames.FrameParser(MAX)
    assert parser.feed(data) == expected
    # ...and the same parser keeps going, in odd-sized chunks.
    rng = random.Random(7)
    chunks, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 3000)
        chunks.append(data[pos : pos + step])
        pos += step
    assert feed_all(parser, chunks) == expected


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_bytes_like(frames, kind):
    data = build(OP_TEXT, b"hello") * 2
    parser = frames.FrameParser(MAX)
    assert parser.feed(kind(data[:3])) == []
    assert parser.feed(kind(data[3:])) == [(OP_TEXT, b"hello")] * 2


def test_feed_empty(frames):
    parser = frames.FrameParser(MAX)
    assert parser.feed(b"") == []
    data = build(OP_TEXT, b"x")
    assert parser.feed(data[:1]) == []
    assert parser.feed(b"") == []
    assert parser.feed(data[1:]) == [(OP_TEXT, b"x")]


def test_negative_max_message_size(frames):
    with pytest.raises(ValueError):
        frames.FrameParser(-1)


# --- fragmentation ------------------------------------------------------------------------------


def fragmented_stream() -> tuple[bytes, list[tuple[int, bytes]]]:
    """A text message in three fragments with a ping and a pong between them. The fragments cut
    through a 4-byte character, which is fine: UTF-8 is checked on the whole message."""
    text = "héllo 😀 wörld".encode()
    cut1, cut2 = 8, 10  # 😀 starts at byte 7
    data = b"".join(
        [
            build(OP_TEXT, text[:cut1], fin=False),
            build(OP_PING, b"are you there?"),
            build(OP_CONT, text[cut1:cut2], fin=False, key=b"\x01\x02\x03\x04"),
            build(OP_PONG, b""),
            build(OP_CONT, text[cut2:], fin=True),
        ]
    )
    return data, [(OP_PING, b"are you there?"), (OP_PONG, b""), (OP_TEXT, text)]


def test_fragmented_with_interleaved_control(frames):
    data, expected = fragmented_stream()
    for chunks in every_split(data):
        assert feed_all(frames.FrameParser(MAX), chunks) == expected


def test_fragmented_binary_then_next_message(frames):
    data = b"".join(
        [
            build(OP_BINARY, b"\xff\x00", fin=False),
            build(OP_CONT, b"", fin=False),
            build(OP_CONT, b"\xfe", fin=True),
            build(OP_TEXT, b"next"),
            build(OP_BINARY, b"", fin=False),
            build(OP_CONT, b"", fin=True),
        ]
    )
    expected = [(OP_BINARY, b"\xff\x00\xfe"), (OP_TEXT, b"next"), (OP_BINARY, b"")]
    for chunks in every_split(data):
        assert feed_all(frames.FrameParser(MAX), chunks) == expected


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 125, 126, 1000, 65536])
def test_max_message_size_single_frame(frames, limit):
    for size in (limit - 1, limit):
        if size >= 0:
            payload = payload_of(size)
            parser = frames.FrameParser(limit)
            assert parser.feed(build(OP_BINARY, payload)) == [(OP_BINARY, payload)]
    parser = frames.FrameParser(limit)
    with pytest.raises(PayloadTooBig) as info:
        parser.feed(build(OP_BINARY, payload_of(limit + 1)))
    assert info.value.close_code == 1009


@pytest.mark.parametrize("form", [7, 16, 64])
def test_too_big_decided_from_header_alone(frames, form):
    # Only the header arrives: the parser must refuse it without waiting for the payload.
    length = {7: 101, 16: 5000, 64: 1 << 62}[form]
    header = build(OP_TEXT, b"", form=form, length=length)
    parser = frames.FrameParser(100)
    with pytest.raises(PayloadTooBig):
        parser.feed(header)


def test_too_big_fragmented(frames):
    limit = 1000
    first = build(OP_BINARY, payload_of(400), fin=False)
    second = build(OP_CONT, payload_of(400, 1), fin=False)
    ok_last = build(OP_CONT, payload_of(200, 2), fin=True)
    parser = frames.FrameParser(limit)
    assert parser.feed(first + second + ok_last) == [
        (OP_BINARY, payload_of(400) + payload_of(400, 1) + payload_of(200, 2))
    ]
    parser = frames.FrameParser(limit)
    assert parser.feed(first + second) == []
    bad_last = build(OP_CONT, payload_of(201, 2), fin=True)
    with pytest.raises(PayloadTooBig):
        parser.feed(bad_last[:8])  # the header (16-bit length form) and the mask key only


def test_empty_fragments_cost_no_memory(frames):
    # A message may arrive as endless empty fragments; holding one object per fragment would
    # let a peer grow memory without ever nearing max_message_size.
    parser = frames.FrameParser(MAX)
    assert parser.feed(build(OP_BINARY, b"a", fin=False)) == []
    empties = build(OP_CONT, b"", fin=False) * 1000
    tracemalloc.start()
    try:
        for _ in range(50):
            assert parser.feed(empties) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000
    assert parser.feed(build(OP_CONT, b"z")) == [(OP_BINARY, b"az")]


def test_control_frames_do_not_count_against_the_limit(frames):
    parser = frames.FrameParser(0)
    payload = payload_of(125)
    assert parser.feed(build(OP_PING, payload)) == [(OP_PING, payload)]


# --- protocol errors ----------------------------------------------------------------------------

TEXT_START = build(OP_TEXT, b"he", fin=False)
BINARY_START = build(OP_BINARY, b"\x00", fin=False)

ERRORS = {
    "unmasked": (build(OP_TEXT, b"hello", key=None), 1002),
    "unmasked-empty": (build(OP_PING, b"", key=None), 1002),
    "rsv1": (build(OP_TEXT, b"hi", rsv=4), 1002),
    "rsv2": (build(OP_TEXT, b"hi", rsv=2), 1002),
    "rsv3": (build(OP_BINARY, b"hi", rsv=1), 1002),
    **{f"opcode-{op:#x}": (build(op, b"hi"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)},
    "fragmented-ping": (build(OP_PING, b"", fin=False), 1002),
    "fragmented-pong": (build(OP_PONG, b"x", fin=False), 1002),
    "fragmented-close": (build(OP_CLOSE, b"\x03\xe8", fin=False), 1002),
    "ping-126": (build(OP_PING, payload_of(126)), 1002),
    "close-126": (build(OP_CLOSE, b"\x03\xe8" + b"a" * 124), 1002),
    "ping-16-bit-form": (build(OP_PING, b"abc", form=16), 1002),
    "pong-64-bit-form": (build(OP_PONG, b"abc", form=64), 1002),
    "lone-continuation": (build(OP_CONT, b"abc"), 1002),
    "lone-continuation-no-fin": (build(OP_CONT, b"abc", fin=False), 1002),
    "text-in-text": (TEXT_START + build(OP_TEXT, b"llo"), 1002),
    "binary-in-text": (TEXT_START + build(OP_BINARY, b"llo"), 1002),
    "text-in-binary": (BINARY_START + build(OP_TEXT, b"x", fin=False), 1002),
    "length-top-bit": (build(OP_BINARY, b"", form=64, length=1 << 63), 1002),
    "length-all-ones": (build(OP_BINARY, b"", form=64, length=(1 << 64) - 1), 1002),
    "bad-utf8": (build(OP_TEXT, b"caf\xe9"), 1007),
    "bad-utf8-fragmented": (TEXT_START + build(OP_CONT, b"\xc3", fin=True), 1007),
    "surrogate": (build(OP_TEXT, b"\xed\xa0\x80"), 1007),
    "too-big": (build(OP_TEXT, payload_of(MAX + 1)), 1009),
}


@pytest.mark.parametrize("name", ERRORS)
def test_protocol_error(frames, name):
    data, code = ERRORS[name]
    for chunks in [[data], [data[i : i + 1] for i in range(len(data))]]:
        parser = frames.FrameParser(MAX)
        exc, _ = error_of(parser, chunks)
        assert exc.close_code == code
        assert isinstance(exc, PayloadTooBig) == (code == 1009)
        # Dead from now on: the same error, whatever comes next.
        for later in (b"", build(OP_TEXT, b"ok")):
            with pytest.raises(WebSocketError) as again:
                parser.feed(later)
            assert again.value is exc


@pytest.mark.parametrize("name", ERRORS)
def test_twins_fail_at_the_same_byte(name):
    data, _ = ERRORS[name]
    chunks = [data[i : i + 1] for i in range(len(data))]
    results = []
    for twin in ("py", "c"):
        exc, index = error_of(_load(twin).FrameParser(MAX), chunks)
        results.append((type(exc), exc.close_code, exc.reason, index))
    assert results[0] == results[1]


def test_binary_is_not_utf8_checked(frames):
    parser = frames.FrameParser(MAX)
    assert parser.feed(build(OP_BINARY, b"caf\xe9")) == [(OP_BINARY, b"caf\xe9")]


UTF8_ATOMS = [
    b"a",
    b"\x00",
    b"\x7f",
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf3\xbf\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",
    # invalid on their own
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xc2",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xe2\x82",
    b"\xf0\x8f\xbf\xbf",
    b"\xf0\x9f\x98",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
]
utf8ish = st.lists(
    st.one_of(st.sampled_from(UTF8_ATOMS), st.integers(0, 20).map(lambda n: b"x" * n)),
    max_size=12,
).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(data=st.one_of(utf8ish, st.binary(max_size=64)))
def test_utf8_check_matches_python(frames, data):
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    parser = frames.FrameParser(MAX)
    if valid:
        assert parser.feed(build(OP_TEXT, data)) == [(OP_TEXT, data)]
    else:
        with pytest.raises(WebSocketError) as info:
            parser.feed(build(OP_TEXT, data))
        assert info.value.close_code == 1007


@pytest.mark.parametrize("where", range(20))
def test_utf8_error_at_every_offset_of_an_ascii_run(frames, where):
    # The compiled twin skips ASCII 8 bytes at a time; a bad byte anywhere must still be found.
    data = bytearray(b"x" * 20)
    data[where] = 0xFF
    with pytest.raises(WebSocketError) as info:
        frames.FrameParser(MAX).feed(build(OP_TEXT, bytes(data)))
    assert info.value.close_code == 1007


# --- masking direction --------------------------------------------------------------------------


def test_client_side_parser_reads_unmasked_frames(frames):
    parser = frames.FrameParser(MAX, require_mask=False)
    data = build(OP_TEXT, b"from server", key=None) + build(OP_BINARY, payload_of(300), key=None)
    for chunks in every_split(data):
        parser = frames.FrameParser(MAX, require_mask=False)
        assert feed_all(parser, chunks) == [(OP_TEXT, b"from server"), (OP_BINARY, payload_of(300))]


def test_client_side_parser_also_unmasks_masked_frames(frames):
    parser = frames.FrameParser(MAX, require_mask=False)
    assert parser.feed(build(OP_TEXT, b"masked") + build(OP_TEXT, b"plain", key=None)) == [
        (OP_TEXT, b"masked"),
        (OP_TEXT, b"plain"),
    ]


# --- encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("key", [None, KEY])
def test_encode_frame_matches_the_rfc_layout(frames, size, key):
    payload = payload_of(size)
    encoded = frames.encode_frame(OP_BINARY, payload, key)
    assert type(encoded) is bytes
    assert encoded == build(OP_BINARY, payload, key=key)


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_encode_frame_length_forms(frames, size, header):
    assert frames.encode_frame(OP_TEXT, b"a" * size)[: len(header)] == header


def test_encode_frame_accepts_bytes_like(frames):
    assert frames.encode_frame(OP_BINARY, bytearray(b"ab")) == b"\x82\x02ab"
    assert frames.encode_frame(OP_BINARY, memoryview(b"ab"), bytearray(KEY)) == build(
        OP_BINARY, b"ab"
    )


@pytest.mark.parametrize(
    ("opcode", "payload", "key"),
    [
        (3, b"", None),
        (11, b"", None),
        (-1, b"", None),
        (OP_PING, b"x" * 126, None),
        (OP_CLOSE, b"x" * 126, None),
        (OP_TEXT, b"x", b"abc"),
        (OP_TEXT, b"x", b"abcde"),
    ],
)
def test_encode_frame_refuses(frames, opcode, payload, key):
    with pytest.raises(ValueError):
        frames.encode_frame(opcode, payload, key)


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(
    message=st.one_of(
        st.tuples(st.just(OP_TEXT), st.text(max_size=300).map(str.encode)),
        st.tuples(st.just(OP_BINARY), st.binary(max_size=300)),
        st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.binary(max_size=125)),
    ),
    key=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
)
def test_round_trip(frames, message, key):
    opcode, payload = message
    parser = frames.FrameParser(MAX, require_mask=key is not None)
    assert parser.feed(frames.encode_frame(opcode, payload, key)) == [message]


# --- close frames -------------------------------------------------------------------------------


def test_encode_close(frames):
    assert frames.encode_close(1000) == b"\x88\x02\x03\xe8"
    assert frames.encode_close(4200, "bye") == b"\x88\x05\x10\x68bye"
    assert frames.encode_close(1001, "é", KEY) == build(OP_CLOSE, b"\x03\xe9\xc3\xa9")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("a" * 123, "a" * 123),
        ("a" * 200, "a" * 123),
        ("é" * 100, "é" * 61),  # 2-byte characters: 123 would cut one in half
        ("a" + "é" * 100, "a" + "é" * 61),  # ...while here 123 bytes end on a character edge
        ("€" * 50, "€" * 41),  # 3-byte characters: exactly 123
        ("ab€" * 50, "ab€" * 24 + "ab"),
        ("😀" * 40, "😀" * 30),  # 4-byte characters: 120
        ("abc" + "😀" * 40, "abc" + "😀" * 30),
    ],
)
def test_encode_close_truncates_on_a_character_edge(frames, reason, expected):
    frame = frames.encode_close(1000, reason)
    payload = frame[2:]
    assert len(payload) <= 125
    assert frames.parse_close(payload) == (1000, expected)
    parser = frames.FrameParser(MAX)
    assert parser.feed(frames.encode_close(1000, reason, KEY)) == [(OP_CLOSE, payload)]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65536, -1])
def test_encode_close_refuses_codes_that_may_not_be_sent(frames, code):
    with pytest.raises(ValueError):
        frames.encode_close(code)


ALLOWED_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", ALLOWED_CODES)
def test_parse_close_allowed_codes(frames, code):
    assert frames.parse_close(code.to_bytes(2, "big")) == (code, "")
    assert frames.parse_close(code.to_bytes(2, "big") + "ça va".encode()) == (code, "ça va")
    assert frames.parse_close(frames.encode_close(code, "x")[2:]) == (code, "x")


@pytest.mark.parametrize(
    "code", [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_parse_close_refused_codes(frames, code):
    with pytest.raises(WebSocketError) as info:
        frames.parse_close(code.to_bytes(2, "big") + b"why")
    assert info.value.close_code == 1002


def test_parse_close_edge_payloads(frames):
    assert frames.parse_close(b"") == (1005, "")
    with pytest.raises(WebSocketError) as info:
        frames.parse_close(b"\x03")
    assert info.value.close_code == 1002
    for reason in (b"\xff", b"caf\xe9", b"\xed\xa0\x80", b"ok\xc3"):
        with pytest.raises(WebSocketError) as info:
            frames.parse_close(b"\x03\xe8" + reason)
        assert info.value.close_code == 1007
    assert frames.parse_close(bytearray(b"\x03\xe8ok")) == (1000, "ok")


# --- differential: wsproto's frame parser -------------------------------------------------------

ws_close_codes = [c for c in ALLOWED_CODES if c != 1014]  # wsproto 1.x does not know 1014
big_sizes = st.sampled_from([126, 127, 65535, 65536, 70001])


@st.composite
def payloads(draw, text: bool) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # now and then, a long one (16- and 64-bit lengths)
        size = draw(big_sizes)
        return text_of(size) if text else payload_of(size, draw(st.integers(0, 99)))
    return draw(st.text(max_size=40)).encode() if text else draw(st.binary(max_size=40))


@st.composite
def control_frame(draw) -> tuple[bytes, tuple[int, bytes]]:
    opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
    payload = draw(st.binary(max_size=125))
    return build(opcode, payload, key=draw(st.binary(min_size=4, max_size=4))), (opcode, payload)


@st.composite
def client_streams(draw) -> tuple[list[bytes], list[tuple[int, object]]]:
    """Valid client frames: messages, some fragmented with pings and pongs between fragments,
    perhaps a Close at the end; cut into arbitrary chunks."""
    parts: list[bytes] = []
    expected: list[tuple[int, object]] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["text", "binary", "control"]))
        if kind == "control":
            frame, message = draw(control_frame())
            parts.append(frame)
            expected.append(message)
            continue
        opcode = OP_TEXT if kind == "text" else OP_BINARY
        payload = draw(payloads(opcode == OP_TEXT))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            key = draw(st.binary(min_size=4, max_size=4))
            parts.append(build(OP_CONT if i else opcode, piece, fin=last, key=key))
            if not last and draw(st.booleans()):
                frame, message = draw(control_frame())
                parts.append(frame)
                expected.append(message)
        expected.append((opcode, payload))
    if draw(st.booleans()):
        code = draw(st.sampled_from(ws_close_codes))
        reason = draw(st.text(max_size=30))
        parts.append(build(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()))
        expected.append((OP_CLOSE, (code, reason)))
    data = b"".join(parts)
    points = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=8))))
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return chunks, expected


def wsproto_messages(chunks: list[bytes]) -> list[tuple[int, object]]:
    proto = FrameProtocol(client=False, extensions=[])
    out: list[tuple[int, object]] = []
    pending: list[object] = []
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
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=SHARED_FIXTURE)
@given(stream=client_streams())
def test_same_messages_as_wsproto(frames, stream):
    chunks, expected = stream
    reference = wsproto_messages(chunks)
    assert reference == expected  # the generator itself is sound
    ours = [
        (op, frames.parse_close(payload) if op == OP_CLOSE else payload)
        for op, payload in feed_all(frames.FrameParser(MAX), chunks)
    ]
    assert ours == reference


# --- the selector -------------------------------------------------------------------------------


def test_selector_exports_and_records_its_choice():
    from fastrelay.wire import _frames_py, frames

    try:
        from fastrelay.wire import _frames_c
    except ImportError:  # pragma: no cover
        _frames_c = _frames_py
    expected = "py" if _accel.NO_EXTENSIONS or _frames_c is _frames_py else "c"
    assert _accel.implementations()["frames"] == expected
    assert frames.FrameParser.__module__ == f"fastrelay.wire._frames_{expected}"
    assert frames.__all__ == _frames_py.__all__ == _frames_c.__all__
    for name in ("OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"):
        assert getattr(frames, name) == getattr(_frames_py, name) == getattr(_frames_c, name)
        assert globals()[name] == getattr(frames, name)
