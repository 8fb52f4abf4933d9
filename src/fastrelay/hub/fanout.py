"""Deliver one encoded frame to many connections' transports.

Selects the compiled twin (``_fanout_c``) unless ``FASTRELAY_NO_EXTENSIONS`` is set or it is not
built; type checkers always see the pure twin (``_fanout_py``), which is the reference.
"""

from typing import TYPE_CHECKING

from .._accel import NO_EXTENSIONS, record

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._fanout_py import Corker, Outlet, fanout
else:
    try:
        from ._fanout_c import Corker, Outlet, fanout
    except ImportError:  # pragma: no cover
        from ._fanout_py import Corker, Outlet, fanout

record(__name__, fanout)

__all__ = ["Corker", "Outlet", "fanout"]
