"""Process runner of the issuer: load its config, check it (`--check-config`), serve it."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from lab.shared.jsonconfig import read_object, resolve_paths
from lab.sites.introspect import server
from lab.sites.issuer.app import IssuerConfig, create_issuer_app

_PATH_FIELDS = ("clients_path", "revocation_path", "tls_cert", "tls_key", "log_file",
                "signing_key", "tokens_path")


def load_config(path: str | os.PathLike[str]) -> IssuerConfig:
    path = Path(path)
    raw = read_object(path)
    resolve_paths(raw, _PATH_FIELDS, path.parent)
    key_file = raw.pop("public_key_file", None)
    if key_file is not None:
        raw["public_key_pem"] = (path.parent / key_file).read_text(encoding="ascii")
    try:
        return IssuerConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.sites.issuer",
                                     description="the lab's token issuer over TLS")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config")
    mode.add_argument("--check-config", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        if args.check_config:
            for path in args.check_config:
                config = load_config(path)
                create_issuer_app(config)
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    config.tls_cert, config.tls_key)
                print(f"{path}: ok")
            return 0
        config = load_config(args.config)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server._setup_logging(config.log_file)
    try:
        server.serve(config, app=create_issuer_app(config))
    except (OSError, ValueError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
