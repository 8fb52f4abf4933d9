# cython: language_level=3, freethreading_compatible=True
"""HMAC-SHA256 signatures for Pusher tokens and signed HTTP requests: the compiled twin.

Same API and same results as ``_signing_py.py`` (the readable reference); see its docstring for
the shared rules. What this twin does differently, and why it is faster:

- Each check is one C-level call. The string to sign is written straight into one ``bytes``
  buffer from the UTF-8 of the inputs (for a query: a C array of the parameters, sorted in
  place), with no joined ``str``, sorted list or encoded copy in between.
- HMAC is composed from two SHA-256 calls (RFC 2104): ``H(K^opad || H(K^ipad || m))``. The
  buffer above reserves its first 64 bytes for ``K^ipad``, so the inner hash takes it as is.
  ``hmac.digest`` reaches OpenSSL 3's one-shot ``HMAC()``, which looks the algorithm up again on
  every call and costs more than both SHA-256 calls together on short messages. The hash itself
  is still OpenSSL's, through ``hashlib.sha256``.
- The received hex is compared with the digest bytes in one branch-free loop over all 64
  characters, so no hex string is produced and the time does not depend on where they differ.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_Size
from cpython.exc cimport PyErr_Clear
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from libc.string cimport memchr, memcmp, memcpy, memset

from hashlib import md5 as _md5, sha256 as _sha256

__all__ = ["check_request", "sign", "string_to_sign", "verify_request", "verify_token"]


cdef extern from "Python.h":
    # Both take a borrowed pointer, so walking a dict takes no references. The UTF-8 stays
    # cached in the str object: for ASCII text it is the object's own data, never a copy.
    const char* _utf8_or_raise "PyUnicode_AsUTF8AndSize"(PyObject* text, Py_ssize_t* size) except NULL
    const char* _utf8_or_null "PyUnicode_AsUTF8AndSize"(PyObject* text, Py_ssize_t* size)
    bint _is_str "PyUnicode_Check"(PyObject* obj)
    bint _is_ascii "PyUnicode_IS_ASCII"(PyObject* text)
    str _ascii_str "PyUnicode_FromStringAndSize"(const char* data, Py_ssize_t size)


cdef enum:
    _BLOCK = 64         # SHA-256 block size: the HMAC key pad
    _DIGEST = 32        # SHA-256 digest size
    _HEX = 64           # the digest as hex
    _STACK_PARAMS = 16  # query parameters sorted without a heap allocation
    _MAX_TIMESTAMP_DIGITS = 30

_EMPTY_BODY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


cdef struct _Param:
    const char* name
    Py_ssize_t name_len
    const char* value
    Py_ssize_t value_len


# -- HMAC-SHA256 --------------------------------------------------------------------------------


cdef int _load_key(object secret, unsigned char* block) except -1:
    """Write the HMAC key block: ``secret`` (hashed first if longer than a block), zero-padded."""
    cdef bytes key
    if type(secret) is bytes:
        key = <bytes>secret
    else:
        key = memoryview(secret).tobytes()  # any bytes-like object, as hmac.digest takes
    cdef Py_ssize_t size = PyBytes_GET_SIZE(key)
    if size > _BLOCK:
        key = _sha256(key).digest()
        size = _DIGEST
    memset(block, 0, _BLOCK)
    memcpy(block, PyBytes_AS_STRING(key), size)
    return 0


cdef bytes _pad(const unsigned char* block, unsigned char pad, Py_ssize_t extra):
    """A new bytes object: ``block ^ pad`` followed by ``extra`` bytes for the caller to fill."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _BLOCK + extra)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(_BLOCK):
        p[i] = block[i] ^ pad
    return out


cdef bytes _outer(const unsigned char* block, bytes inner):
    """The outer hash ``H(K^opad || inner)``: the finished HMAC digest."""
    cdef bytes buf = _pad(block, 0x5C, _DIGEST)
    memcpy(PyBytes_AS_STRING(buf) + _BLOCK, PyBytes_AS_STRING(inner), _DIGEST)
    return _sha256(buf).digest()


cdef bytes _hmac_reserved(const unsigned char* block, bytes buf):
    """HMAC of ``buf[64:]``; ``buf`` is new and unshared, and its first 64 bytes are overwritten."""
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t i
    for i in range(_BLOCK):
        p[i] = block[i] ^ 0x36
    return _outer(block, _sha256(buf).digest())


cdef bytes _reserved_utf8(object text):
    """A new bytes object: 64 spare bytes, then ``text`` as UTF-8 (UnicodeEncodeError if it can't)."""
    cdef Py_ssize_t size
    cdef const char* data = _utf8_or_raise(<PyObject*>text, &size)
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, _BLOCK + size)
    memcpy(PyBytes_AS_STRING(buf) + _BLOCK, data, size)
    return buf


cdef bytes _hmac(object secret, object message):
    """HMAC-SHA256 digest (32 bytes) of a str (as UTF-8) or bytes-like ``message``."""
    cdef unsigned char block[_BLOCK]
    _load_key(secret, block)
    if _is_str(<PyObject*>message):
        return _hmac_reserved(block, _reserved_utf8(message))
    # Bytes (a webhook body can be large): feed it to the hash as is, without a copy.
    inner = _sha256(_pad(block, 0x36, 0))
    inner.update(message)
    return _outer(block, inner.digest())


# -- comparison ---------------------------------------------------------------------------------


cdef const char* _text(object obj, Py_ssize_t* size) noexcept:
    """UTF-8 of ``obj``, or NULL (no exception) if it is not a str or cannot be encoded."""
    if not _is_str(<PyObject*>obj):
        return NULL
    cdef const char* data = _utf8_or_null(<PyObject*>obj, size)
    if data == NULL:
        PyErr_Clear()
    return data


cdef bint _hex_equal(const unsigned char* received, const unsigned char* digest) noexcept nogil:
    """Whether 64 hex characters (either case) spell ``digest``; the time is the same for any input."""
    cdef unsigned int bad = 0
    cdef int c, digit, letter, is_digit, is_letter, value, i
    for i in range(_HEX):
        c = received[i]
        digit = c - 0x30                 # '0'
        letter = (c | 0x20) - 0x61       # 'a', after folding 'A'..'F' down
        is_digit = (digit >= 0) & (digit <= 9)
        is_letter = (letter >= 0) & (letter <= 5)
        value = (digit & -is_digit) | ((letter + 10) & -is_letter)
        # high nibble for even i, low nibble for odd i
        bad |= <unsigned int>(
            (1 - (is_digit | is_letter)) | (value ^ ((digest[i >> 1] >> (4 - 4 * (i & 1))) & 0x0F))
        )
    return bad == 0


# -- string to sign -----------------------------------------------------------------------------


cdef inline int _compare(const _Param* a, const _Param* b) noexcept nogil:
    """Byte order of two names (UTF-8 byte order is code-point order, as ``sorted`` uses)."""
    cdef Py_ssize_t n = a.name_len if a.name_len < b.name_len else b.name_len
    cdef int r = memcmp(a.name, b.name, n)
    if r != 0:
        return r
    return (a.name_len > b.name_len) - (a.name_len < b.name_len)


cdef object _fill_reserved(object method, object path, dict params, _Param* items):
    """Collect, sort and write the string to sign after 64 spare bytes; None if a name or value
    is not a str (then the caller takes the generic path, which formats it as the twin does)."""
    cdef Py_ssize_t method_len, path_len, count = 0, pos = 0, total, i, j
    cdef const char* method_data = _utf8_or_raise(<PyObject*>method, &method_len)
    cdef const char* path_data = _utf8_or_raise(<PyObject*>path, &path_len)
    cdef PyObject* key
    cdef PyObject* value
    cdef _Param item
    total = _BLOCK + method_len + 1 + path_len + 1
    while PyDict_Next(params, &pos, &key, &value):
        if not _is_str(key) or not _is_str(value):
            return None
        item.name = _utf8_or_raise(key, &item.name_len)
        if item.name_len == 14 and memcmp(item.name, b"auth_signature", 14) == 0:
            continue
        item.value = _utf8_or_raise(value, &item.value_len)
        # insertion sort: a request has a handful of parameters
        j = count
        while j > 0 and _compare(&items[j - 1], &item) > 0:
            items[j] = items[j - 1]
            j -= 1
        items[j] = item
        total += (1 if count else 0) + item.name_len + 1 + item.value_len
        count += 1

    cdef bytes buf = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(buf) + _BLOCK
    memcpy(p, method_data, method_len)
    p += method_len
    p[0] = b"\n"
    p += 1
    memcpy(p, path_data, path_len)
    p += path_len
    p[0] = b"\n"
    p += 1
    for i in range(count):
        if i:
            p[0] = b"&"
            p += 1
        memcpy(p, items[i].name, items[i].name_len)
        p += items[i].name_len
        p[0] = b"="
        p += 1
        memcpy(p, items[i].value, items[i].value_len)
        p += items[i].value_len
    return buf


cdef bytes _request_reserved(object method, object path, object params):
    """64 spare bytes, then the UTF-8 string to sign (UnicodeEncodeError if it has none)."""
    cdef _Param stack[_STACK_PARAMS]
    cdef _Param* items = stack
    cdef Py_ssize_t count
    cdef object buf = None
    if type(params) is dict and _is_str(<PyObject*>method) and _is_str(<PyObject*>path):
        count = PyDict_Size(params)
        if count > _STACK_PARAMS:
            items = <_Param*>PyMem_Malloc(count * sizeof(_Param))
            if items == NULL:
                raise MemoryError()
        try:
            buf = _fill_reserved(method, path, <dict>params, items)
        finally:
            if items != stack:
                PyMem_Free(items)
    if buf is None:
        buf = _reserved_utf8(string_to_sign(method, path, params))
    return <bytes>buf


# -- public API ---------------------------------------------------------------------------------


def sign(secret, message):
    """Lowercase hex HMAC-SHA256 of ``message`` (UTF-8 if text) keyed with ``secret``."""
    return _hmac(secret, message).hex()


def verify_token(secret, app_key, auth, message):
    """Check a token ``"{app_key}:{hex}"`` against ``message`` (PROTOCOL.md §7.2).

    The part before the first ``:`` must equal ``app_key``; the rest must be the 64-digit hex
    HMAC-SHA256 of ``message``, in either case.
    """
    cdef Py_ssize_t auth_len, key_len, name_len
    cdef const char* auth_data = _text(auth, &auth_len)
    if auth_data == NULL:
        return False
    cdef const char* colon = <const char*>memchr(auth_data, 0x3A, auth_len)  # ':'
    if colon == NULL:
        return False
    name_len = colon - auth_data
    cdef const char* key_data = _text(app_key, &key_len)
    if key_data == NULL or name_len != key_len or memcmp(auth_data, key_data, key_len) != 0:
        return False
    if auth_len - name_len - 1 != _HEX:
        return False
    cdef bytes digest
    try:
        digest = _hmac(secret, message)
    except UnicodeEncodeError:
        return False
    return _hex_equal(<const unsigned char*>colon + 1, <const unsigned char*>PyBytes_AS_STRING(digest))


def string_to_sign(method, path, params):
    """The string a signed HTTP API request covers (HTTP_API.md §2.2).

    ``METHOD\\nPATH\\nQUERY``, where QUERY is every parameter but ``auth_signature``, sorted by
    name, as ``name=value`` joined by ``&``. Names must already be lowercase and values decoded;
    nothing is re-escaped.
    """
    query = "&".join(
        [f"{name}={params[name]}" for name in sorted(params) if name != "auth_signature"]
    )
    return f"{method}\n{path}\n{query}"


def verify_request(secret, method, path, params, signature):
    """Check ``signature`` (hex, any case) against the HMAC of :func:`string_to_sign`."""
    cdef Py_ssize_t signature_len
    cdef const char* signature_data = _text(signature, &signature_len)
    if signature_data == NULL or signature_len != _HEX:
        return False
    cdef unsigned char block[_BLOCK]
    cdef bytes buf
    try:
        buf = _request_reserved(method, path, params)
    except UnicodeEncodeError:
        return False
    _load_key(secret, block)
    cdef bytes digest = _hmac_reserved(block, buf)
    return _hex_equal(
        <const unsigned char*>signature_data, <const unsigned char*>PyBytes_AS_STRING(digest)
    )


# -- the fast path of a signed request --------------------------------------------------------


cdef str _name(const char* data, Py_ssize_t size):
    """A query parameter's name, lowercased (ASCII)."""
    cdef Py_ssize_t i
    for i in range(size):
        if 0x41 <= data[i] <= 0x5A:  # 'A'..'Z'
            return _ascii_str(data, size).lower()
    return _ascii_str(data, size)


cdef dict _plain_query(object raw_query):
    """``auth.parse_query(raw_query)`` for a query with nothing to decode (ASCII, no ``%``);
    None for any other. Splits in C, creating only the names and values."""
    cdef Py_ssize_t size, start = 0, end, eq
    if not _is_str(<PyObject*>raw_query) or not _is_ascii(<PyObject*>raw_query):
        return None
    cdef const char* data = _utf8_or_raise(<PyObject*>raw_query, &size)
    if memchr(data, 0x25, size) != NULL:  # '%'
        return None
    cdef dict params = {}
    while start < size:
        end = start
        while end < size and data[end] != 0x26:  # '&'
            end += 1
        if end > start:
            eq = start
            while eq < end and data[eq] != 0x3D:  # '='
                eq += 1
            if eq < end:
                params[_name(data + start, eq - start)] = _ascii_str(data + eq + 1, end - eq - 1)
            else:
                params[_name(data + start, eq - start)] = ""
        start = end + 1
    return params


cdef bint _timestamp_ok(str value, object now, object tolerance) except -1:
    """``-?[0-9]{1,30}``, and within ``tolerance`` seconds of ``int(now)`` unless it is <= 0.
    ``value`` comes from :func:`_plain_query`, so it is ASCII."""
    cdef Py_ssize_t size, i, first = 0
    cdef const char* data = _utf8_or_raise(<PyObject*>value, &size)
    if size and data[0] == 0x2D:  # '-'
        first = 1
    if size - first < 1 or size - first > _MAX_TIMESTAMP_DIGITS:
        return False
    for i in range(first, size):
        if not 0x30 <= data[i] <= 0x39:
            return False
    return tolerance <= 0 or abs(int(now) - int(value)) <= tolerance


def check_request(secret, app_key, method, path, raw_query, body, now, tolerance):
    """The fast path of a signed HTTP API request (HTTP_API.md §2): its query parameters if it
    passes every check, else None; the same rules as the twin's (see ``_signing_py``)."""
    cdef dict params = _plain_query(raw_query)
    if params is None:
        return None
    key = params.get("auth_key")
    timestamp = params.get("auth_timestamp")
    signature = params.get("auth_signature")
    if key is None or timestamp is None or signature is None or "auth_version" not in params:
        return None
    if key != app_key or not _timestamp_ok(timestamp, now, tolerance):
        return None
    body_md5 = params.get("body_md5")
    if body_md5 is None:
        if body:
            return None
    else:
        body_hash = _EMPTY_BODY_MD5
        if body:
            body_hash = _md5(body, usedforsecurity=False).hexdigest()
        # Not secret: the client sent it with the request.
        if body_md5.lower() != body_hash:
            return None
    if not verify_request(secret, method, path, params, signature):
        return None
    return params
