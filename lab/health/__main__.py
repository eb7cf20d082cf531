"""Entry point: ``python -m lab.health --config FILE.json [--check-config]``."""

import sys

from lab.health.cli import main

sys.exit(main())
