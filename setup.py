"""Build the Cython hot-path modules.

FASTRELAY_BUILD_EXTENSIONS: ``auto`` (default) builds them and falls back to a pure wheel with a
warning when no compiler or Cython is available; ``yes`` makes any failure fatal (CI, wheels);
``no`` builds a pure-Python package.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = [
    ("fastrelay.wire._frames_c", "src/fastrelay/wire/_frames_c.pyx"),
    ("fastrelay.protocol._signing_c", "src/fastrelay/protocol/_signing_c.pyx"),
    ("fastrelay.hub._fanout_c", "src/fastrelay/hub/_fanout_c.pyx"),
]

MODE = os.environ.get("FASTRELAY_BUILD_EXTENSIONS", "auto").strip().lower()
if MODE not in ("auto", "yes", "no"):
    sys.exit(f"FASTRELAY_BUILD_EXTENSIONS={MODE!r}: expected auto, yes or no")


class OptionalBuildExt(build_ext):
    """In ``auto`` mode a failed compile leaves the pure-Python twins in charge, loudly."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._give_up(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if MODE == "yes":
            raise
        print(
            f"WARNING: fastrelay's compiled modules were not built ({exc}); "
            "the pure-Python twins will be used (slower).",
            file=sys.stderr,
        )


def extensions() -> list:
    if MODE == "no":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if MODE == "yes":
            sys.exit("FASTRELAY_BUILD_EXTENSIONS=yes but Cython is not installed")
        print("WARNING: Cython not found; building a pure-Python fastrelay", file=sys.stderr)
        return []
    modules = [Extension(name, [path]) for name, path in EXTENSIONS]
    return cythonize(
        modules,
        compiler_directives={"language_level": "3", "embedsignature": True},
        annotate=os.environ.get("FASTRELAY_CYTHON_ANNOTATE") == "1",
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
