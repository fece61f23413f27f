"""``python -m pyserf`` runs the CLI."""

import sys

from pyserf.cli import main

sys.exit(main())
