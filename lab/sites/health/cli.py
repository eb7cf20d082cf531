"""Command line of the health daemon (`anycast-healthd`, `python -m lab.sites.health`).

    anycast-healthd --config FILE.json                 run
    anycast-healthd --config FILE.json --check-config  validate and exit

Exit codes: 0 done (stopped by SIGTERM/SIGINT, or the config is valid), 1 cannot start
(e.g. the metrics address cannot be bound), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lab.sites.health.config import ConfigError, load_config
from lab.sites.health.daemon import Daemon


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="anycast-healthd",
        description="Site health checks that announce or withdraw the anycast route "
                    "through lab.sites.speaker.api in watchdog mode.")
    parser.add_argument("--config", required=True, help="the daemon's JSON config")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print a summary and exit (0 valid, 2 not)")
    parser.add_argument("more", nargs="*", metavar="CONFIG",
                        help="with --check-config: more config files to validate")
    args = parser.parse_args(argv)
    if args.more and not args.check_config:
        parser.error("extra config files are only accepted with --check-config")
    try:
        config = load_config(args.config)
        if args.check_config:
            for path, cfg in [(args.config, config),
                              *((p, load_config(p)) for p in args.more)]:
                checks = ", ".join(f"{c.name} ({c.type}{'' if c.required else ', optional'})"
                                   for c in cfg.checks)
                print(f"{path}: valid: site {cfg.site}, checks: {checks}")
            return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s healthd[{config.site}] %(levelname)s: %(message)s")
    daemon = Daemon(config)
    try:
        daemon.start()
    except OSError as exc:
        logging.getLogger("lab.sites.health").error("cannot start: %s", exc)
        return 1
    daemon.loop()
    return 0
