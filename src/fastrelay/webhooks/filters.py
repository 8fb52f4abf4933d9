"""Which webhook targets want an event: ``event_types`` and channel filters (HTTP_API.md §5.1)."""

from __future__ import annotations

from typing import Any

from ..config import WebhookTarget

__all__ = ["channel_passes", "target_wants"]


def channel_passes(target: WebhookTarget, channel: Any) -> bool:
    """True when ``channel`` passes both of the target's filters (an unset filter passes all).

    An empty filter string counts as unset, as in soketi (it tests the value's truthiness).
    """
    starts = target.channel_name_starts_with
    ends = target.channel_name_ends_with
    if not starts and not ends:
        return True
    if not isinstance(channel, str):
        # A filtered target never gets an event without a channel name to test.
        return False
    if starts and not channel.startswith(starts):
        return False
    return not ends or channel.endswith(ends)


def target_wants(target: WebhookTarget, name: Any, channel: Any) -> bool:
    """True when the target lists the event's ``name`` and its filters pass on ``channel``."""
    return name in target.event_types and channel_passes(target, channel)
