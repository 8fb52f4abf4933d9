"""A live progress line on stderr while a scenario runs.

On a terminal the line is rewritten in place (at most 4 times a second); otherwise (a log file,
a CI job) a status line is printed every 5 seconds, so the output stays readable. Permanent
lines (:meth:`Progress.say`, :meth:`Progress.warn`) clear the live line first.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.warnings: list[str] = []
        self._shown = False
        self._last = 0.0
        self._interval = 0.25 if self.tty else 5.0

    def status(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` as the live line (rate-limited unless ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + text[:200])
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def say(self, text: str) -> None:
        """A permanent line."""
        if not self.enabled:
            return
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def warn(self, text: str) -> None:
        """A warning: printed (even when quiet is off only for status) and kept for the report."""
        if text not in self.warnings:
            self.warnings.append(text)
        self.clear()
        self.stream.write(f"warning: {text}\n")
        self.stream.flush()
