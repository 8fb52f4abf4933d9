"""The ``packaging`` marker, and a summary section with the numbers the packaging test measured."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_REPORT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "packaging: builds the sdist and wheel and installs them into fresh virtual environments "
        "(slow, needs a C compiler and the package index; deselect with -m 'not packaging')",
    )
    config.stash[_REPORT] = []


@pytest.fixture(scope="session")
def packaging_report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Print a measurement now (seen with ``-s``) and again in the end-of-run summary."""

    def note(line: str) -> None:
        print(f"\npackaging: {line}")
        pytestconfig.stash[_REPORT].append(line)

    return note


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("packaging")
        for line in lines:
            terminalreporter.write_line(line)
