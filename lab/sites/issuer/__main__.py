import sys

from lab.sites.issuer.server import main

sys.exit(main())
