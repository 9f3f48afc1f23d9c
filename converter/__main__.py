"""Entry point for `python -m converter`."""

import sys

from .cli import main

sys.exit(main())
