"""``python -m fastrelay``: see :mod:`fastrelay.cli`."""

from fastrelay.cli import main

raise SystemExit(main())
