"""The AppManager seam: which apps exist, found by key (WebSocket) or id (HTTP API)."""

from .base import AppManager
from .static import StaticAppManager

__all__ = ["AppManager", "StaticAppManager"]
