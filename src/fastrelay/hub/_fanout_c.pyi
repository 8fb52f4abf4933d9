"""Deliver one encoded frame to many connections: stub of the compiled twin of ``_fanout_py``."""

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Corker", "Outlet", "fanout"]

class Corker:
    """Collects the outlets with queued frames and flushes them once per loop iteration.

    ``schedule`` runs a callback soon, once: ``loop.call_soon`` in the server. The class is final.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None: ...
    def add(self, outlet: Outlet) -> None:
        """``outlet`` has just queued its first frame since its last flush."""

    def flush(self) -> None:
        """Write every queued frame, one ``write`` per outlet."""

class Outlet:
    """One WebSocket connection's write end, as the fan-out sees it.

    ``transport`` is an asyncio write transport (``write`` and ``get_write_buffer_size``). When
    a write leaves more than ``high_water`` bytes buffered, the outlet closes itself and calls
    ``on_overflow()`` once.
    ``on_overflow`` runs in the middle of a fan-out: it must only schedule the disconnect (for
    example with ``loop.call_soon``) and must not add to or remove from the collection being
    iterated. The class is final (not subclassable).
    """

    @property
    def socket_id(self) -> str:
        """The Pusher ``socket_id`` of the connection."""

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or an overflow; sends are then refused."""

    def __init__(
        self,
        socket_id: str,
        transport: Any,
        high_water: int,
        on_overflow: Callable[[], None],
        corker: Corker | None = None,
    ) -> None: ...
    def send(self, frame: bytes) -> bool:
        """Write (or queue) ``frame``; return False, doing nothing, if the outlet is closed."""

    def flush(self) -> None:
        """Write the queued frames now, as one ``write`` (the corker calls this)."""

    def close(self) -> None:
        """Write what is queued, then refuse every later send."""

def fanout(frame: bytes, outlets: Iterable[Outlet], except_socket_id: str | None) -> int:
    """Send ``frame`` to every outlet but the one whose ``socket_id`` is ``except_socket_id``.

    Returns how many outlets wrote it (closed outlets are skipped). Every item must be an
    :class:`Outlet` of this module (``TypeError`` otherwise). Exceptions from a transport or an
    ``on_overflow`` callback propagate and end the loop.
    """
