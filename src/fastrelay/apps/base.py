"""The AppManager interface."""

from __future__ import annotations

import abc

from ..config import App

__all__ = ["AppManager"]


class AppManager(abc.ABC):
    """Finds apps. "Not found" is an ordinary ``None``; "could not ask" is an exception."""

    @abc.abstractmethod
    def find_by_key(self, key: str) -> App | None:
        """Return the app whose key is ``key``, or ``None``."""

    @abc.abstractmethod
    def find_by_id(self, app_id: str) -> App | None:
        """Return the app whose id is ``app_id``, or ``None``."""

    @abc.abstractmethod
    def all(self) -> tuple[App, ...]:
        """Every app this manager knows."""
