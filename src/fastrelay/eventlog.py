"""The server event log: a bounded, per-app ring buffer of what this node did (RELAY_EXTRAS.md §5).

Pure Python, no I/O and no clock reads: every entry's ``time_ms`` comes from the caller.

Entry types and the fields each may carry besides ``id``, ``time_ms`` and ``type`` (§5.1; a field
whose value is None is left out):

=============================================  ===================================================
type                                           fields
=============================================  ===================================================
``connection_established``                     ``socket_id``, ``client``, ``version``,
                                               ``protocol``, ``remote_addr``
``connection_refused``                         ``code``, ``message``, ``remote_addr`` (known apps
                                               only: an unknown key has no log to write to)
``disconnected``                               ``socket_id``, ``code``, ``reason``,
                                               ``duration_ms``
``subscribed`` / ``unsubscribed``              ``socket_id``, ``channel``, ``user_id`` (presence)
``subscription_failed``                        ``socket_id``, ``channel``, ``error_type``,
                                               ``status``
``member_added`` / ``member_removed``          ``channel``, ``user_id``
``client_event``                               ``socket_id``, ``channel``, ``event``,
                                               ``data_size``
``client_event_rejected``                      ``socket_id``, ``channel``, ``event``, ``message``
``api_publish``                                ``event``, ``channels`` (list), ``data_size``,
                                               ``excluded_socket_id``, ``endpoint``
``api_rejected``                               ``endpoint``, ``status``, ``message``
``signin`` / ``signin_failed``                 ``socket_id``, ``user_id``
``error_sent``                                 ``socket_id``, ``code``, ``message`` (any
                                               ``pusher:error`` the server sent)
``terminated``                                 ``user_id``, ``connections``
``webhook_sent`` / ``webhook_failed``          ``url``, ``status``, ``attempt``, ``events``
                                               (names)
=============================================  ===================================================

The same table is :data:`ENTRY_FIELDS`. Never stored (§5.1): secrets, ``auth`` strings,
signatures, ``channel_data`` / ``user_data`` / event ``data`` contents — only ``data_size`` in
bytes. :meth:`EventLog.record` refuses the field names in :data:`FORBIDDEN_FIELDS` with
:class:`ValueError`: passing one is a programming error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from types import MappingProxyType
from typing import Any

from .errors import RestError
from .protocol.auth import query_integer

__all__ = [
    "DEFAULT_LIMIT",
    "ENTRY_FIELDS",
    "FORBIDDEN_FIELDS",
    "MAX_LIMIT",
    "EventLog",
    "redact_message",
]

DEFAULT_LIMIT = 100
"""``limit`` when the query gives none (§5.2)."""

MAX_LIMIT = 1000
"""Larger ``limit`` values are clamped to this (§5.2)."""

ENTRY_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "connection_established": frozenset(
            {"socket_id", "client", "version", "protocol", "remote_addr"}
        ),
        "connection_refused": frozenset({"code", "message", "remote_addr"}),
        "disconnected": frozenset({"socket_id", "code", "reason", "duration_ms"}),
        "subscribed": frozenset({"socket_id", "channel", "user_id"}),
        "unsubscribed": frozenset({"socket_id", "channel", "user_id"}),
        "subscription_failed": frozenset({"socket_id", "channel", "error_type", "status"}),
        "member_added": frozenset({"channel", "user_id"}),
        "member_removed": frozenset({"channel", "user_id"}),
        "client_event": frozenset({"socket_id", "channel", "event", "data_size"}),
        "client_event_rejected": frozenset({"socket_id", "channel", "event", "message"}),
        "api_publish": frozenset(
            {"event", "channels", "data_size", "excluded_socket_id", "endpoint"}
        ),
        "api_rejected": frozenset({"endpoint", "status", "message"}),
        "signin": frozenset({"socket_id", "user_id"}),
        "signin_failed": frozenset({"socket_id", "user_id"}),
        "error_sent": frozenset({"socket_id", "code", "message"}),
        "terminated": frozenset({"user_id", "connections"}),
        "webhook_sent": frozenset({"url", "status", "attempt", "events"}),
        "webhook_failed": frozenset({"url", "status", "attempt", "events"}),
    }
)
"""Entry type → the extra fields §5.1 documents for it (informative; :meth:`EventLog.record`
enforces only :data:`FORBIDDEN_FIELDS` and :data:`RESERVED_FIELDS`)."""

FORBIDDEN_FIELDS = frozenset(
    {
        "auth",
        "auth_signature",
        "channel_data",
        "data",
        "secret",
        "shared_secret",
        "signature",
        "user_data",
        "user_info",
    }
)
"""Field names that would carry secrets or payload contents (§5.1); :meth:`EventLog.record`
raises :class:`ValueError` for them."""

RESERVED_FIELDS = frozenset({"id", "time_ms", "type"})
"""Set by the log itself; passing them as extra fields is a programming error."""

_FILTERS = ("channel", "socket_id", "user_id")
_SIGNATURE_ERROR = "Invalid signature"


def redact_message(message: str) -> str:
    """``message`` as the log keeps it: a signature error without its details.

    The signature errors the protocol requires echo what was signed and what was sent: for a
    channel, ``Expected HMAC SHA256 hex digest of <socket_id:channel[:channel_data]>, but got
    <auth>`` (PROTOCOL.md §5.4); for the HTTP API, ``you should have sent HmacSHA256Hex("<string
    to sign>", …), but you sent "<auth_signature>"`` (HTTP_API.md §2.2). The client gets them in
    full; the log keeps only ``Invalid signature`` (§5.1: no auth strings, signatures or
    ``channel_data``). Every other message is kept as it is.
    """
    if message.startswith(_SIGNATURE_ERROR):
        return _SIGNATURE_ERROR
    return message


# An api_publish entry as record_publish keeps it, a dict only once queried: (id, time_ms,
# event, channels, data_size, excluded_socket_id, endpoint).
_PublishTuple = tuple[int, int, str, tuple[str, ...], int, str | None, str]
_Entry = dict[str, Any] | _PublishTuple


class _AppLog:
    """One app's ring buffer; entry ids are consecutive, so ``entries[i]["id"] == first + i``.

    An entry is a dict, or a tuple from :meth:`EventLog.record_publish` that :func:`_as_dict`
    turns into one when it is read.
    """

    __slots__ = ("entries", "last_id")

    def __init__(self, size: int) -> None:
        self.entries: deque[_Entry] = deque(maxlen=size)
        self.last_id = 0


def _as_dict(entry: _Entry) -> dict[str, Any]:
    """The dict of a stored entry: the same keys, in the same order, as :meth:`EventLog.record`
    would have stored for it."""
    if type(entry) is not tuple:
        return entry  # type: ignore[return-value]
    id_, time_ms, event, channels, data_size, excluded_socket_id, endpoint = entry
    out: dict[str, Any] = {
        "id": id_,
        "time_ms": time_ms,
        "type": "api_publish",
        "event": event,
        "channels": channels,
        "data_size": data_size,
    }
    if excluded_socket_id is not None:
        out["excluded_socket_id"] = excluded_socket_id
    out["endpoint"] = endpoint
    return out


def _entry_id(entry: _Entry) -> int:
    return entry[0] if type(entry) is tuple else entry["id"]  # type: ignore[call-overload]


def _to_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if type(value) is tuple else value for key, value in entry.items()}


class EventLog:
    """Per-app ring buffers of server events (§5), ``size`` entries each, oldest overwritten.

    ``id`` increases by 1 per entry per app and is never reused while the log lives. When
    ``enabled`` is false, :meth:`record` stores nothing and :meth:`query` raises
    ``RestError(404, "Event log is disabled")``.

    Memory bound: ``size`` entries per app (a dict of ``id``, ``time_ms``, ``type`` and the
    extra fields, whose values are small scalars or short name lists); apps are keyed by the
    configured app ids.
    """

    def __init__(self, size: int = 1000, *, enabled: bool = True) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._size = size
        self._enabled = enabled
        self._apps: dict[str, _AppLog] = {}

    @property
    def size(self) -> int:
        """Entries kept per app."""
        return self._size

    @property
    def enabled(self) -> bool:
        """Whether entries are kept and the log can be queried."""
        return self._enabled

    def record(self, app_id: str, type_: str, time_ms: int, **fields: Any) -> None:
        """Append one entry of ``type_`` at ``time_ms`` to ``app_id``'s log (§5.1).

        Fields whose value is None are dropped; lists and tuples are stored as tuples (a snapshot
        the caller cannot change afterwards); a ``message`` goes through :func:`redact_message`.
        A field named in :data:`FORBIDDEN_FIELDS` or :data:`RESERVED_FIELDS` raises
        :class:`ValueError`, enabled or not, so the mistake shows in every configuration.
        """
        bad = FORBIDDEN_FIELDS.intersection(fields) or RESERVED_FIELDS.intersection(fields)
        if bad:
            raise ValueError(
                f"event log entries must not carry {', '.join(sorted(bad))} (RELAY_EXTRAS.md §5.1)"
            )
        if not self._enabled:
            return
        log = self._apps.get(app_id)
        if log is None:
            log = self._apps[app_id] = _AppLog(self._size)
        log.last_id += 1
        entry: dict[str, Any] = {"id": log.last_id, "time_ms": time_ms, "type": type_}
        for name, value in fields.items():
            if value is None:
                continue
            if name == "message" and isinstance(value, str):
                value = redact_message(value)
            entry[name] = tuple(value) if isinstance(value, (list, tuple)) else value
        log.entries.append(entry)

    def record_publish(
        self,
        app_id: str,
        time_ms: int,
        event: str,
        channels: tuple[str, ...],
        data_size: int,
        excluded_socket_id: str | None,
        endpoint: str,
    ) -> None:
        """``record(app_id, "api_publish", time_ms, event=…, channels=…, …)``, for the HTTP
        API's hot path: the entry is kept as a tuple and becomes a dict only when queried."""
        if not self._enabled:
            return
        log = self._apps.get(app_id)
        if log is None:
            log = self._apps[app_id] = _AppLog(self._size)
        log.last_id = id_ = log.last_id + 1
        log.entries.append(
            (id_, time_ms, event, channels, data_size, excluded_socket_id, endpoint)
        )

    def query(self, app_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The §5.3 body for the decoded query ``params`` (§5.2).

        ``limit`` defaults to 100 and is clamped to 1000; ``limit`` below 1 or not an integer,
        or ``after`` not an integer, raises ``RestError(400)``. Filters, all optional and
        combined with AND: ``type`` (comma list), ``channel`` (exact, or contained in an
        ``api_publish`` entry's ``channels``), ``socket_id``, ``user_id`` (exact, compared as
        strings). An empty filter value counts as absent. With ``after``: the oldest ``limit``
        matching entries with ``id > after`` (polling); without: the newest ``limit`` matching.
        Entries are always in ascending ``id`` order; ``has_more`` says matching entries were
        left out; ``oldest_id``/``newest_id`` bound the app's whole buffer (null when empty).
        """
        if not self._enabled:
            raise RestError(404, "Event log is disabled")
        limit = query_integer(params, "limit")
        if limit is None:
            limit = DEFAULT_LIMIT
        elif limit < 1:
            raise RestError(400, "limit must be an integer of at least 1")
        limit = min(limit, MAX_LIMIT)
        after = query_integer(params, "after")
        types = frozenset(filter(None, (t.strip() for t in params.get("type", "").split(","))))
        exact = {name: params[name] for name in _FILTERS if params.get(name)}

        log = self._apps.get(app_id)
        if log is None or not log.entries:
            return {"events": [], "has_more": False, "oldest_id": None, "newest_id": None}
        entries = log.entries
        oldest_id = _entry_id(entries[0])
        newest_id = _entry_id(entries[-1])

        stored: Iterable[_Entry] = entries
        if after is not None:
            if after >= newest_id:
                stored = ()
            elif after >= oldest_id:
                stored = islice(entries, after - oldest_id + 1, None)
        candidates: Iterable[dict[str, Any]] = map(_as_dict, stored)
        if types or exact:
            candidates = (e for e in candidates if _matches(e, types, exact))
        matching = list(candidates)

        page = matching[:limit] if after is not None else matching[-limit:]
        return {
            "events": [_to_json(entry) for entry in page],
            "has_more": len(matching) > len(page),
            "oldest_id": oldest_id,
            "newest_id": newest_id,
        }


def _matches(entry: dict[str, Any], types: frozenset[str], exact: dict[str, str]) -> bool:
    if types and entry["type"] not in types:
        return False
    channel = exact.get("channel")
    if channel is not None and entry.get("channel") != channel:
        channels = entry.get("channels") if entry["type"] == "api_publish" else None
        if not channels or channel not in channels:
            return False
    socket_id = exact.get("socket_id")
    if socket_id is not None and entry.get("socket_id") != socket_id:
        return False
    user_id = exact.get("user_id")
    if user_id is not None:
        value = entry.get("user_id")
        if value is None or str(value) != user_id:
            return False
    return True
