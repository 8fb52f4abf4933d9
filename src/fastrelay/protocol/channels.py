"""Channel types and name rules (PROTOCOL.md §5.1, §5.2)."""

from __future__ import annotations

import enum
import re

__all__ = ["USER_CHANNEL_PREFIX", "ChannelKind", "channel_kind", "validate_channel_name"]

USER_CHANNEL_PREFIX = "#server-to-user-"
_NAME_CHARS = re.compile(r"[-a-zA-Z0-9_=@,.;]+")


class ChannelKind(enum.Enum):
    """What a channel name's prefix makes it; the flags drive every rule that differs."""

    USER = ("user", False, False, False, False, False)
    PRIVATE_ENCRYPTED_CACHE = ("private-encrypted-cache", True, False, True, True, False)
    PRIVATE_ENCRYPTED = ("private-encrypted", True, False, True, False, False)
    PRIVATE_CACHE = ("private-cache", True, False, False, True, True)
    PRIVATE = ("private", True, False, False, False, True)
    PRESENCE_CACHE = ("presence-cache", True, True, False, True, True)
    PRESENCE = ("presence", True, True, False, False, True)
    CACHE = ("cache", False, False, False, True, False)
    PUBLIC = ("public", False, False, False, False, False)

    def __init__(
        self,
        label: str,
        needs_auth: bool,
        is_presence: bool,
        is_encrypted: bool,
        is_cache: bool,
        allows_client_events: bool,
    ) -> None:
        self.label = label
        self.needs_auth = needs_auth
        self.is_presence = is_presence
        self.is_encrypted = is_encrypted
        self.is_cache = is_cache
        self.allows_client_events = allows_client_events


# Longest prefix first: the first match wins (PROTOCOL.md §5.1).
_PREFIXES: tuple[tuple[str, ChannelKind], ...] = (
    (USER_CHANNEL_PREFIX, ChannelKind.USER),
    ("private-encrypted-cache-", ChannelKind.PRIVATE_ENCRYPTED_CACHE),
    ("private-encrypted-", ChannelKind.PRIVATE_ENCRYPTED),
    ("private-cache-", ChannelKind.PRIVATE_CACHE),
    ("private-", ChannelKind.PRIVATE),
    ("presence-cache-", ChannelKind.PRESENCE_CACHE),
    ("presence-", ChannelKind.PRESENCE),
    ("cache-", ChannelKind.CACHE),
)


def channel_kind(name: str) -> ChannelKind:
    """Classify a channel by the start of its name."""
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return ChannelKind.PUBLIC


def validate_channel_name(name: str, max_length: int) -> str | None:
    """Return ``None`` for a valid name, else ``"too_long"`` or ``"invalid"``.

    Characters: ``^[-a-zA-Z0-9_=@,.;]+$``; ``#`` only as the ``#server-to-user-`` prefix.
    """
    if not name:
        return "invalid"
    if len(name) > max_length:
        return "too_long"
    body = name[len(USER_CHANNEL_PREFIX) :] if name.startswith(USER_CHANNEL_PREFIX) else name
    if not _NAME_CHARS.fullmatch(body):
        return "invalid"
    return None
