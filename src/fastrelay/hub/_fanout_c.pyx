# cython: language_level=3, freethreading_compatible=True
"""Deliver one encoded frame to many connections: the compiled twin of ``_fanout_py``.

Same names, signatures and behaviour as the pure twin (the reference). Per recipient the loop
costs a type check, a direct C call and the two transport calls: ``Outlet`` is a final cdef
class that keeps its transport's bound methods, so nothing is looked up by name.
"""

cimport cython

__all__ = ["Outlet", "fanout"]


@cython.final
cdef class Outlet:
    """One WebSocket connection's write end, as the fan-out sees it."""

    cdef readonly str socket_id
    cdef readonly bint closed
    cdef Py_ssize_t _high_water
    cdef object _transport
    cdef object _on_overflow
    # The transport's bound methods, fetched once instead of per send.
    cdef object _write
    cdef object _buffer_size

    def __init__(self, str socket_id not None, transport, Py_ssize_t high_water, on_overflow):
        self.socket_id = socket_id
        self._transport = transport
        self._high_water = high_water
        self._on_overflow = on_overflow
        self._write = transport.write
        self._buffer_size = transport.get_write_buffer_size
        self.closed = False

    cdef inline bint _send(self, object frame) except -1:
        cdef Py_ssize_t buffered
        if self.closed:
            return False
        self._write(frame)
        buffered = self._buffer_size()
        if buffered > self._high_water:
            # Closed first, so a send from inside on_overflow is already refused.
            self.closed = True
            self._on_overflow()
        return True

    def send(self, frame):
        """Write ``frame``; return False (writing nothing) if the outlet is closed."""
        return self._send(frame)

    def close(self):
        """Refuse every later send."""
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
