# cython: language_level=3, freethreading_compatible=True
"""WebSocket frames (RFC 6455 §5), server side: the compiled twin of ``_frames_py``.

Same names, signatures and behaviour as the pure twin (which is the reference; read it first).
What differs is how bytes move: a chunk that arrives with nothing buffered is parsed in place,
payloads are unmasked while they are copied out (8 bytes per step), and text is validated as
UTF-8 without building a ``str``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

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

cdef enum:
    _CONT = 0
    _TEXT = 1
    _BINARY = 2
    _CLOSE = 8
    _PING = 9
    _PONG = 10


cdef inline void _xor_copy(uint8_t* dst, const uint8_t* src, Py_ssize_t n,
                           const uint8_t* key) noexcept nogil:
    """dst[i] = src[i] ^ key[i % 4]; dst may equal src."""
    cdef uint64_t key8, word
    cdef Py_ssize_t i = 0
    # The key repeated twice in memory order, so the XOR is right on any endianness.
    memcpy(&key8, key, 4)
    memcpy((<uint8_t*>&key8) + 4, key, 4)
    # memcpy keeps unaligned loads and stores legal; compilers turn it into plain moves.
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= key8
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ key[i & 3]
        i += 1


cdef bytes _copy_payload(const uint8_t* src, Py_ssize_t n, const uint8_t* key):
    """A new bytes object holding ``src[:n]``, unmasked with ``key`` unless it is NULL."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(out)
    if key == NULL:
        memcpy(dst, src, n)
    else:
        _xor_copy(dst, src, n, key)
    return out


cdef bint _utf8_valid(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing above U+10FFFF."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef uint8_t c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            # JSON is mostly ASCII: skip it 8 bytes at a time.
            while i + 8 <= n:
                memcpy(&word, s + i, 8)
                if word & 0x8080808080808080ULL:
                    break
                i += 8
            while i < n and s[i] < 0x80:
                i += 1
            continue
        if c < 0xC2:  # a stray continuation byte, or an overlong 2-byte lead (C0, C1)
            return False
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:  # overlong
                    return False
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:  # UTF-16 surrogates
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:  # overlong
                    return False
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:  # above U+10FFFF
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            i += 4
        else:
            return False
    return True


cdef inline bint _close_code_allowed(long code) noexcept:
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef inline object _check_utf8(bytes data):
    if not _utf8_valid(<const uint8_t*>PyBytes_AS_STRING(data), len(data)):
        raise WebSocketError(1007, "Text message is not valid UTF-8")


cdef class FrameParser:
    """Incremental parser: bytes in, complete ``(opcode, payload)`` messages out."""

    cdef Py_ssize_t _max_size
    cdef bint _require_mask
    # Received, not yet consumed; only ever a partial frame between feed calls. None when
    # empty, as is _m_buf: an idle connection keeps no buffers at all.
    cdef bytearray _buf
    cdef object _error
    cdef bint _closed  # a Close frame was delivered: the rest of the stream is dropped
    # The frame whose header has been read (valid while _f_active).
    cdef bint _f_active
    cdef bint _f_fin
    cdef bint _f_masked
    cdef int _f_opcode
    cdef Py_ssize_t _f_len
    cdef uint8_t _f_mask[4]
    # The fragmented data message in progress; _m_opcode == 0 when there is none. One
    # bytearray, not a list of fragments: a flood of tiny fragments costs only its payload.
    cdef int _m_opcode
    cdef bytearray _m_buf

    def __init__(self, Py_ssize_t max_message_size, bint require_mask=True):
        if max_message_size < 0:
            raise ValueError(f"max_message_size must be >= 0, got {max_message_size}")
        self._max_size = max_message_size
        self._require_mask = require_mask

    def feed(self, data):
        """Consume ``data`` (any chunking) and return every message it completed, in order."""
        cdef Py_buffer view
        cdef Py_ssize_t have, used, rest
        cdef list out = []
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            return []
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._buf is None:
                # Nothing buffered (the common case): parse the caller's bytes in place and
                # keep only an unfinished tail.
                used = self._parse(<const uint8_t*>view.buf, view.len, out)
                rest = view.len - used
                if rest:
                    self._buf = PyByteArray_FromStringAndSize(<char*>view.buf + used, rest)
            else:
                have = PyByteArray_GET_SIZE(self._buf)
                self._buf.extend(data)
                used = self._parse(<const uint8_t*>PyByteArray_AS_STRING(self._buf),
                                   have + view.len, out)
                if used == have + view.len:
                    self._buf = None
                else:
                    # One compaction per call; CPython drops a bytearray prefix cheaply.
                    del self._buf[:used]
        except WebSocketError as exc:
            self._error = exc
            raise
        finally:
            PyBuffer_Release(&view)
        return out

    cdef Py_ssize_t _parse(self, const uint8_t* p, Py_ssize_t n, list out) except -1:
        """Consume whole frames from ``p[:n]``; return how many bytes were consumed."""
        # p may point into self._buf: nothing here may resize it.
        cdef Py_ssize_t pos = 0, size, have
        cdef const uint8_t* key
        cdef uint8_t* dst
        cdef bytes payload
        cdef int opcode
        while True:
            if not self._f_active:
                size = self._parse_header(p + pos, n - pos)
                if size == 0:
                    break
                pos += size
            if n - pos < self._f_len:
                break
            key = self._f_mask if self._f_masked else NULL
            opcode = self._f_opcode
            self._f_active = False
            if opcode >= _CLOSE or (self._f_fin and opcode != _CONT):
                # A whole message in one frame: unmask it straight into its bytes object.
                payload = _copy_payload(p + pos, self._f_len, key)
                pos += self._f_len
                if opcode == _TEXT:
                    _check_utf8(payload)
                out.append((opcode, payload))
                if opcode == _CLOSE:
                    self._closed = True
                    return n  # consumed: nothing after a Close is parsed
                continue
            # A fragment: unmask it onto the end of the message buffer.
            if opcode != _CONT:
                self._m_opcode = opcode
            if self._m_buf is None:
                self._m_buf = bytearray()
            have = PyByteArray_GET_SIZE(self._m_buf)
            PyByteArray_Resize(self._m_buf, have + self._f_len)
            dst = <uint8_t*>PyByteArray_AS_STRING(self._m_buf) + have
            if key == NULL:
                memcpy(dst, p + pos, self._f_len)
            else:
                _xor_copy(dst, p + pos, self._f_len, key)
            pos += self._f_len
            if self._f_fin:
                payload = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._m_buf),
                                                    PyByteArray_GET_SIZE(self._m_buf))
                opcode = self._m_opcode
                self._m_opcode = 0
                self._m_buf = None  # do not keep a large buffer alive
                if opcode == _TEXT:
                    _check_utf8(payload)
                out.append((opcode, payload))
        return pos

    cdef Py_ssize_t _parse_header(self, const uint8_t* p, Py_ssize_t avail) except -1:
        """Read the frame header at ``p``; return its length, or 0 if it is incomplete."""
        # The checks and their order mirror _frames_py, so both twins fail at the same byte.
        cdef uint8_t b0, b1
        cdef int opcode
        cdef bint fin, masked
        cdef uint64_t length, total
        cdef Py_ssize_t size, i
        if avail < 2:
            return 0
        b0 = p[0]
        b1 = p[1]
        if b0 & 0x70:
            raise WebSocketError(1002, "Reserved bits must be 0")
        opcode = b0 & 0x0F
        fin = (b0 & 0x80) != 0
        if opcode >= _CLOSE:
            if opcode > _PONG:
                raise WebSocketError(1002, f"Unknown opcode {opcode:#x}")
            if not fin:
                raise WebSocketError(1002, "Control frames must not be fragmented")
        elif opcode > _BINARY:
            raise WebSocketError(1002, f"Unknown opcode {opcode:#x}")
        masked = (b1 & 0x80) != 0
        if self._require_mask and not masked:
            raise WebSocketError(1002, "Client frames must be masked")
        length = b1 & 0x7F
        if opcode >= _CLOSE:
            if length > 125:
                raise WebSocketError(1002, "Control frame payload longer than 125 bytes")
        elif opcode == _CONT:
            if not self._m_opcode:
                raise WebSocketError(1002, "Continuation frame without a message in progress")
        elif self._m_opcode:
            raise WebSocketError(1002, "New data frame while a fragmented message is in progress")

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
            length = (<uint64_t>p[2] << 8) | p[3]
            if length < 126:
                raise WebSocketError(1002, "Payload length not in its shortest form")
        elif length == 127:
            length = 0
            for i in range(2, 10):
                length = (length << 8) | p[i]
            if length >> 63:
                raise WebSocketError(1002, "Payload length with the most significant bit set")
            if length < 0x10000:
                raise WebSocketError(1002, "Payload length not in its shortest form")
        if opcode < _CLOSE:
            total = length
            if opcode == _CONT and self._m_buf is not None:
                # Both terms are below 2**63, so the sum cannot wrap.
                total += <uint64_t>PyByteArray_GET_SIZE(self._m_buf)
            if total > <uint64_t>self._max_size:
                # Decided from the header alone: the payload is never buffered.
                raise PayloadTooBig(f"Message longer than {self._max_size} bytes")
        if masked:
            memcpy(self._f_mask, p + size - 4, 4)
        self._f_masked = masked
        self._f_opcode = opcode
        self._f_fin = fin
        self._f_len = <Py_ssize_t>length  # <= 125 or <= _max_size: fits
        self._f_active = True
        return size


cdef bytes _encode(int opcode, const uint8_t* payload, Py_ssize_t n, object mask_key):
    cdef Py_buffer key_view
    cdef Py_ssize_t size = 2
    cdef uint8_t* dst
    cdef uint8_t key[4]
    cdef bint masked = mask_key is not None
    cdef int i
    cdef bytes out
    if not (0 <= opcode <= _BINARY or _CLOSE <= opcode <= _PONG):
        raise ValueError(f"Unknown opcode {opcode!r}")
    if opcode >= _CLOSE and n > 125:
        raise ValueError("Control frame payload longer than 125 bytes")
    if masked:
        PyObject_GetBuffer(mask_key, &key_view, PyBUF_SIMPLE)
        try:
            if key_view.len != 4:
                raise ValueError("mask_key must be 4 bytes")
            memcpy(key, key_view.buf, 4)
        finally:
            PyBuffer_Release(&key_view)
        size += 4
    if n >= 0x10000:
        size += 8
    elif n >= 126:
        size += 2
    out = PyBytes_FromStringAndSize(NULL, size + n)
    dst = <uint8_t*>PyBytes_AS_STRING(out)
    dst[0] = 0x80 | opcode
    if n < 126:
        dst[1] = <uint8_t>n
    elif n < 0x10000:
        dst[1] = 126
        dst[2] = <uint8_t>(n >> 8)
        dst[3] = <uint8_t>n
    else:
        dst[1] = 127
        for i in range(8):
            dst[9 - i] = <uint8_t>((<uint64_t>n) >> (8 * i))
    if masked:
        dst[1] |= 0x80
        memcpy(dst + size - 4, key, 4)
        _xor_copy(dst + size, payload, n, key)
    else:
        memcpy(dst + size, payload, n)
    return out


def encode_frame(int opcode, payload, mask_key=None):
    """One final (FIN) frame carrying ``payload``; masked with ``mask_key`` when it is given."""
    cdef Py_buffer view
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        return _encode(opcode, <const uint8_t*>view.buf, view.len, mask_key)
    finally:
        PyBuffer_Release(&view)


def encode_close(code, str reason not None="", mask_key=None):
    """A Close frame with ``code`` and ``reason`` (UTF-8, cut to 123 bytes on a character edge)."""
    cdef bytes encoded
    cdef bytearray payload
    cdef Py_ssize_t cut
    # Compared as Python ints so an absurd code is a ValueError, as in the pure twin.
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(f"Close code {code} may not be sent")
    encoded = reason.encode("utf-8")
    cut = len(encoded)
    if cut > 123:
        cut = 123
        # Back up over continuation bytes (0b10xxxxxx) so no character is split.
        while (encoded[cut] & 0xC0) == 0x80:
            cut -= 1
    payload = bytearray(2 + cut)
    payload[0] = (code >> 8) & 0xFF
    payload[1] = code & 0xFF
    memcpy(PyByteArray_AS_STRING(payload) + 2, PyBytes_AS_STRING(encoded), cut)
    return _encode(_CLOSE, <const uint8_t*>PyByteArray_AS_STRING(payload), 2 + cut, mask_key)


def parse_close(payload):
    """Read a Close frame's payload: ``(code, reason)``; ``(1005, "")`` when it is empty."""
    cdef Py_buffer view
    cdef const uint8_t* p
    cdef int code
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        if view.len == 0:
            return 1005, ""
        if view.len == 1:
            raise WebSocketError(1002, "Close frame payload of 1 byte")
        code = (p[0] << 8) | p[1]
        if not _close_code_allowed(code):
            raise WebSocketError(1002, f"Invalid close code {code}")
        if not _utf8_valid(p + 2, view.len - 2):
            raise WebSocketError(1007, "Close reason is not valid UTF-8")
        return code, (<const char*>p)[2:view.len].decode("utf-8")
    finally:
        PyBuffer_Release(&view)
