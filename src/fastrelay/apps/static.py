"""Apps from the configuration: the default manager and the one tests use."""

from __future__ import annotations

from collections.abc import Iterable

from ..config import App
from .base import AppManager

__all__ = ["StaticAppManager"]


class StaticAppManager(AppManager):
    """A fixed list of apps, indexed by key and by id."""

    def __init__(self, apps: Iterable[App]) -> None:
        self._apps = tuple(apps)
        self._by_key = {app.key: app for app in self._apps}
        self._by_id = {app.id: app for app in self._apps}

    def find_by_key(self, key: str) -> App | None:
        return self._by_key.get(key)

    def find_by_id(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    def all(self) -> tuple[App, ...]:
        return self._apps
