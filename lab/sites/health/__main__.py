"""Entry point: ``python -m lab.sites.health --config FILE.json [--check-config]``."""

import sys

from lab.sites.health.cli import main

sys.exit(main())
