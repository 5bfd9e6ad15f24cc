"""``python -m simulator``: the same as ``acs sim``."""

import sys

from .cli import main

sys.exit(main())
