"""Deliver one encoded frame to many connections: the pure-Python reference twin of ``_fanout_c``.

The caller encodes the message and builds the frame once (server frames are unmasked, so the
bytes are the same for every recipient); :func:`fanout` then hands that one ``bytes`` object to
each :class:`Outlet`.

Corking: on a busy channel most of a server's time goes to one ``write`` system call per frame
per socket. An outlet given a :class:`Corker` queues its frames instead and the corker writes
each socket's queue as one ``write`` at the end of the event-loop iteration, so N messages
published in one iteration cost one system call per socket, not N. Frames keep their order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Corker", "Outlet", "fanout"]


class Corker:
    """Collects the outlets with queued frames and flushes them once per loop iteration.

    ``schedule`` runs a callback soon, once: ``loop.call_soon`` in the server.
    """

    __slots__ = ("_dirty", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None:
        self._schedule = schedule
        self._dirty: list[Outlet] = []
        self._scheduled = False

    def add(self, outlet: Outlet) -> None:
        """``outlet`` has just queued its first frame since its last flush."""
        self._dirty.append(outlet)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Write every queued frame, one ``write`` per outlet."""
        dirty = self._dirty
        self._dirty = []
        self._scheduled = False
        for outlet in dirty:
            outlet.flush()


class Outlet:
    """One WebSocket connection's write end, as the fan-out sees it.

    ``transport`` is an asyncio write transport (``write`` and ``get_write_buffer_size``). When a
    write leaves more than ``high_water`` bytes buffered, the outlet closes itself and calls
    ``on_overflow()`` once. ``on_overflow`` runs in the middle of a fan-out or a flush: it must
    only schedule the disconnect (for example with ``loop.call_soon``) and must not add to or
    remove from the collection being iterated. With a ``corker``, frames are queued and written
    when it flushes; without one, each frame is written at once.
    """

    __slots__ = (
        "_closed",
        "_corker",
        "_high_water",
        "_on_overflow",
        "_pending",
        "_socket_id",
        "_transport",
    )

    def __init__(
        self,
        socket_id: str,
        transport: Any,
        high_water: int,
        on_overflow: Callable[[], None],
        corker: Corker | None = None,
    ) -> None:
        self._socket_id = socket_id
        self._transport = transport
        self._high_water = high_water
        self._on_overflow = on_overflow
        self._corker = corker
        self._pending: list[bytes] | None = None
        self._closed = False

    @property
    def socket_id(self) -> str:
        """The Pusher ``socket_id`` of the connection."""
        return self._socket_id

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or an overflow; sends are then refused."""
        return self._closed

    def send(self, frame: bytes) -> bool:
        """Write (or queue) ``frame``; return False, doing nothing, if the outlet is closed."""
        if self._closed:
            return False
        if self._corker is None:
            self._write(frame)
            return True
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            self._corker.add(self)
        else:
            pending.append(frame)
        return True

    def flush(self) -> None:
        """Write the queued frames now, as one ``write`` (the corker calls this)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if not self._closed:
            self._write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _write(self, data: bytes) -> None:
        transport = self._transport
        transport.write(data)
        if transport.get_write_buffer_size() > self._high_water:
            # Closed first, so a send from inside on_overflow is already refused.
            self._closed = True
            self._on_overflow()

    def close(self) -> None:
        """Write what is queued, then refuse every later send."""
        self.flush()
        self._closed = True


def fanout(frame: bytes, outlets: Iterable[Outlet], except_socket_id: str | None) -> int:
    """Send ``frame`` to every outlet but the one whose ``socket_id`` is ``except_socket_id``.

    Returns how many outlets took it (closed outlets are skipped). Exceptions from a transport
    or an ``on_overflow`` callback propagate and end the loop.
    """
    count = 0
    if except_socket_id is None:
        for outlet in outlets:
            if outlet.send(frame):
                count += 1
    else:
        for outlet in outlets:
            if outlet.socket_id != except_socket_id and outlet.send(frame):
                count += 1
    return count
