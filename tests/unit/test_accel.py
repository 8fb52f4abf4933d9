"""fastrelay._accel.check_required: FASTRELAY_REQUIRE_EXTENSIONS=1 turns a pure fallback fatal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fastrelay import _accel

ALL_C = {"fanout": "c", "frames": "c", "signing": "c"}


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private, editable copy of what the selectors recorded; the real one is left alone."""
    for selector in _accel.HOT_PATH.values():
        __import__(selector)  # record before swapping, so check_required's imports change nothing
    fake = dict(ALL_C)
    monkeypatch.setattr(_accel, "_chosen", fake)
    monkeypatch.setattr(_accel, "NO_EXTENSIONS", False)
    monkeypatch.setenv("FASTRELAY_REQUIRE_EXTENSIONS", "1")
    return fake


def test_all_compiled_passes(chosen: dict[str, str]) -> None:
    _accel.check_required()


def test_fallback_raises_naming_the_pure_modules(chosen: dict[str, str]) -> None:
    chosen.update(signing="py", frames="py")
    with pytest.raises(RuntimeError, match="FASTRELAY_REQUIRE_EXTENSIONS") as info:
        _accel.check_required()
    message = str(info.value)
    assert "frames, signing" in message
    assert "fanout" not in message


def test_a_hot_path_module_that_recorded_nothing_counts_as_a_fallback(
    chosen: dict[str, str],
) -> None:
    del chosen["fanout"]
    with pytest.raises(RuntimeError, match="fanout"):
        _accel.check_required()


@pytest.mark.parametrize("value", ["", "0", "no", "false"])
def test_off_unless_the_variable_is_truthy(
    chosen: dict[str, str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    chosen.update(frames="py")
    monkeypatch.setenv("FASTRELAY_REQUIRE_EXTENSIONS", value)
    _accel.check_required()


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_truthy_spellings(
    chosen: dict[str, str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    chosen.update(frames="py")
    monkeypatch.setenv("FASTRELAY_REQUIRE_EXTENSIONS", value)
    with pytest.raises(RuntimeError, match="frames"):
        _accel.check_required()


def test_no_extensions_wins(chosen: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    chosen.update(fanout="py", frames="py", signing="py")
    monkeypatch.setattr(_accel, "NO_EXTENSIONS", True)
    _accel.check_required()


def test_agrees_with_this_process() -> None:
    """In the compiled run of scripts/test (REQUIRE=1) this passes; with NO_EXTENSIONS it is off."""
    for selector in _accel.HOT_PATH.values():
        __import__(selector)
    slow = {name for name, impl in _accel.implementations().items() if impl != "c"}
    required = os.environ.get("FASTRELAY_REQUIRE_EXTENSIONS") == "1"
    if required and slow and not _accel.NO_EXTENSIONS:
        with pytest.raises(RuntimeError):
            _accel.check_required()
    else:
        _accel.check_required()


def test_a_real_fallback_in_a_fresh_process() -> None:
    """Block the compiled frame codec's import: the selector falls back, the check names it."""
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "fastrelay.wire._frames_c":
                    raise ImportError("blocked by the test")
                return None

        sys.meta_path.insert(0, Block())
        from fastrelay import _accel
        from fastrelay.wire import frames

        assert _accel.implementations()["frames"] == "py"
        _accel.check_required()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRELAY_")}
    env["FASTRELAY_REQUIRE_EXTENSIONS"] = "1"
    # The child imports the same fastrelay as this process (checkout, editable or installed).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: FASTRELAY_REQUIRE_EXTENSIONS=1"), result.stderr
    assert "frames" in last, last
