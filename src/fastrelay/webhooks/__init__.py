"""Webhooks (HTTP_API.md §5): the sender the hub's ``emit_webhook`` feeds.

:mod:`.sender` queues, signs, batches, posts and retries; :mod:`.filters` decides which targets
want an event; :mod:`.grace` holds ``channel_vacated``/``member_removed`` for the grace period.
"""

from .sender import USER_AGENT, EventLogSink, Poster, WebhookSender

__all__ = ["USER_AGENT", "EventLogSink", "Poster", "WebhookSender"]
