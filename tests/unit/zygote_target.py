"""A stand-in daemon for the launcher's protocol test: says it ran, then exits."""

import sys
import time

time.sleep(0.05)
print(f"ran {sys.argv[1]}", flush=True)
