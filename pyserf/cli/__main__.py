"""``python -m pyserf.cli`` runs the CLI, like ``python -m pyserf``."""

import sys

from pyserf.cli import main

sys.exit(main())
