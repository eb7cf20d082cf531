"""Entry point: ``python -m lab.sites.introspect --config FILE.json`` (see ``server``)."""

import sys

from lab.sites.introspect.server import main

sys.exit(main())
