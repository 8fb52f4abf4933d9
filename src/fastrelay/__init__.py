"""fastrelay: a fast Pusher Channels (protocol 7) server, a drop-in for Soketi and Reverb."""

from ._version import __version__
from .config import App, Config, WebhookTarget

__all__ = ["App", "Config", "WebhookTarget", "__version__"]
