"""``python -m fastrelay.bench``: the same as ``fastrelay bench``."""

import sys

from . import main

sys.exit(main())
