# cython: language_level=3, freethreading_compatible=True
"""Deliver one encoded frame to many connections: the compiled twin of ``_fanout_py``.

Same names, signatures and behaviour as the pure twin (the reference). Per recipient the loop
costs a type check, a direct C call and either the two transport calls or, corked, a list
append: ``Outlet`` is a final cdef class, so nothing about it is looked up by name.
"""

cimport cython

__all__ = ["Corker", "Outlet", "fanout"]


@cython.final
cdef class Corker:
    """Collects the outlets with queued frames and flushes them once per loop iteration."""

    cdef list _dirty
    cdef object _schedule
    cdef bint _scheduled

    def __init__(self, schedule):
        self._schedule = schedule
        self._dirty = []
        self._scheduled = False

    cdef inline int _add(self, Outlet outlet) except -1:
        self._dirty.append(outlet)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)
        return 0

    def add(self, Outlet outlet not None):
        """``outlet`` has just queued its first frame since its last flush."""
        self._add(outlet)

    def flush(self):
        """Write every queued frame, one ``write`` per outlet."""
        cdef list dirty = self._dirty
        cdef Outlet outlet
        self._dirty = []
        self._scheduled = False
        for item in dirty:
            outlet = <Outlet>item
            outlet._flush()


@cython.final
cdef class Outlet:
    """One WebSocket connection's write end, as the fan-out sees it."""

    cdef readonly str socket_id
    cdef readonly bint closed
    cdef Py_ssize_t _high_water
    cdef object _transport
    cdef object _on_overflow
    cdef Corker _corker
    cdef list _pending

    def __init__(
        self, str socket_id not None, transport, Py_ssize_t high_water, on_overflow,
        Corker corker=None,
    ):
        self.socket_id = socket_id
        self._transport = transport
        self._high_water = high_water
        self._on_overflow = on_overflow
        self._corker = corker
        self._pending = None
        self.closed = False

    cdef inline int _write(self, object data) except -1:
        cdef Py_ssize_t buffered
        # Looked up per call, not kept as bound methods: two of those would cost every idle
        # connection about 140 bytes, and with corking this runs once per socket per batch.
        self._transport.write(data)
        buffered = self._transport.get_write_buffer_size()
        if buffered > self._high_water:
            # Closed first, so a send from inside on_overflow is already refused.
            self.closed = True
            self._on_overflow()
        return 0

    cdef inline bint _send(self, object frame) except -1:
        if self.closed:
            return False
        if self._corker is None:
            self._write(frame)
            return True
        if self._pending is None:
            self._pending = [frame]
            self._corker._add(self)
        else:
            self._pending.append(frame)
        return True

    cdef int _flush(self) except -1:
        cdef list pending = self._pending
        if pending is None:
            return 0
        self._pending = None
        if not self.closed:
            self._write(pending[0] if len(pending) == 1 else b"".join(pending))
        return 0

    def send(self, frame):
        """Write (or queue) ``frame``; return False, doing nothing, if the outlet is closed."""
        return self._send(frame)

    def flush(self):
        """Write the queued frames now, as one ``write`` (the corker calls this)."""
        self._flush()

    def close(self):
        """Write what is queued, then refuse every later send."""
        self._flush()
        self.closed = True


def fanout(frame, outlets, str except_socket_id=None):
    """Send ``frame`` to every outlet but the one whose ``socket_id`` is ``except_socket_id``."""
    cdef Py_ssize_t count = 0
    cdef Outlet outlet
    for item in outlets:
        # Exact type test: Outlet is final, and it keeps None out of the C call below.
        if type(item) is not Outlet:
            raise TypeError(f"fanout() expects Outlet objects, got {type(item).__name__}")
        outlet = <Outlet>item
        if except_socket_id is not None and outlet.socket_id == except_socket_id:
            continue
        if outlet._send(frame):
            count += 1
    return count
