"""ExaBGP's run line for the API process: `python -I -S .../lab/sites/speaker/run.py ARGS`.

The interpreter starts isolated and without site-packages (no editable-install hooks, no
environment), this file puts the checkout that holds it on sys.path and runs
lab.sites.speaker.api from its cached bytecode. Kept this short on purpose: a script is
compiled at every start, and compiling api.py itself would leave ~1.2 MiB of heap in
each API process.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

from lab.sites.speaker.api import main  # (after the path above)

main()
