"""Deliver one encoded frame to many connections: the pure-Python reference twin of ``_fanout_c``.

The caller encodes the message and builds the frame once (server frames are unmasked, so the
bytes are the same for every recipient); :func:`fanout` then hands that one ``bytes`` object to
each :class:`Outlet`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Outlet", "fanout"]


class Outlet:
    """One WebSocket connection's write end, as the fan-out sees it.

    ``transport`` is an asyncio write transport (``write`` and ``get_write_buffer_size``). When a
    write leaves more than ``high_water`` bytes buffered, the outlet closes itself and calls
    ``on_overflow()`` once. ``on_overflow`` runs in the middle of a fan-out: it must only
    schedule the disconnect (for example with ``loop.call_soon``) and must not add to or remove
    from the collection being iterated.
    """

    __slots__ = ("_closed", "_high_water", "_on_overflow", "_socket_id", "_transport")

    def __init__(
        self, socket_id: str, transport: Any, high_water: int, on_overflow: Callable[[], None]
    ) -> None:
        self._socket_id = socket_id
        self._transport = transport
        self._high_water = high_water
        self._on_overflow = on_overflow
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
        """Write ``frame``; return False (writing nothing) if the outlet is closed."""
        if self._closed:
            return False
        transport = self._transport
        transport.write(frame)
        if transport.get_write_buffer_size() > self._high_water:
            # Closed first, so a send from inside on_overflow is already refused.
            self._closed = True
            self._on_overflow()
        return True

    def close(self) -> None:
        """Refuse every later send."""
        self._closed = True


def fanout(frame: bytes, outlets: Iterable[Outlet], except_socket_id: str | None) -> int:
    """Send ``frame`` to every outlet but the one whose ``socket_id`` is ``except_socket_id``.

    Returns how many outlets wrote it (closed outlets are skipped). Exceptions from a transport
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
