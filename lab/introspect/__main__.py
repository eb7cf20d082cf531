"""Entry point: ``python -m lab.introspect --config FILE.json`` (see ``server``)."""

import sys

from lab.introspect.server import main

sys.exit(main())
