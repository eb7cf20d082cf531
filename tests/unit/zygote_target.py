"""A stand-in daemon for the launcher's protocol test: says it ran, then exits (with the
code given as its second argument, if any; after sleeping as many seconds as its third
says, if any)."""

import sys
import time

time.sleep(0.05)
print(f"ran {sys.argv[1]}", flush=True)
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
