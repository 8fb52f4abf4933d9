"""Guards on the shape of the code: import direction, the error tree, no silent fallback."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest

import fastrelay
from fastrelay import _accel, errors

SRC = pathlib.Path(fastrelay.__file__).parent

# wire/ and protocol/ are sans-I/O: they never reach up into the shell or the hub's owners.
FORBIDDEN = {
    "wire": {"asyncio", "uvloop", "fastrelay.server", "fastrelay.hub", "fastrelay.apps"},
    "protocol": {"asyncio", "uvloop", "fastrelay.server", "fastrelay.apps"},
    "hub": {"asyncio", "uvloop", "fastrelay.server"},
    # Adapters serve the hub through the Receiver protocol; they never reach into it.
    "cluster": {"fastrelay.server", "fastrelay.hub", "fastrelay.apps"},
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = "fastrelay." + ".".join(path.relative_to(SRC).parent.parts)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downward(layer):
    for path in (SRC / layer).glob("*.py"):
        for name in _imports(path):
            for forbidden in FORBIDDEN[layer]:
                assert not (name == forbidden or name.startswith(forbidden + ".")), (
                    f"{path.name} imports {name}"
                )


@pytest.mark.parametrize("module", ["base.py", "local.py", "resp.py", "scripts.py"])
def test_the_adapter_seam_and_the_local_adapter_do_no_io(module):
    # The hub imports these; the Redis transport lives apart from them.
    for name in _imports(SRC / "cluster" / module):
        assert name.split(".")[0] not in {"asyncio", "uvloop", "socket"}, f"{module}: {name}"


def test_every_error_class_is_in_the_docstring_tree():
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), name


def test_pusher_error_codes_drive_reconnection():
    assert errors.AppNotFound("x").reconnect == "never"
    assert errors.OverCapacity().reconnect == "backoff"
    assert errors.ReconnectNow().reconnect == "now"
    assert errors.PongTimeout().reconnect == "now"
    assert errors.ClientEventRejected("x").reconnect == "never"


def test_selected_implementations_are_recorded():
    import fastrelay.hub.fanout
    import fastrelay.protocol.signing
    import fastrelay.wire.frames  # noqa: F401

    chosen = _accel.implementations()
    assert set(chosen) >= {"frames", "fanout", "signing"}
    if os.environ.get("FASTRELAY_NO_EXTENSIONS") == "1":
        assert set(chosen.values()) == {"py"}
    if os.environ.get("FASTRELAY_REQUIRE_EXTENSIONS") == "1":
        # No silent fallback to the slow twins where the compiled build is required.
        assert set(chosen.values()) == {"c"}, dict(chosen)
