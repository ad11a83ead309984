"""``sms-gateway db upgrade``: migrate the message store named by the config, without serving."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config
from gateway.serving import EXIT_CONFIG
from gateway.store import StoreError, upgrade
from gateway.store.urls import parse


def main(argv: list[str]) -> int:
    """0 with the revision reached; 2 with the reason on stderr."""
    parser = argparse.ArgumentParser(prog="sms-gateway db",
                                     description="Manage the message store's schema.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="migrate the store to this version's schema")
    up.add_argument("--config", default="config.yaml", help="config file (./config.yaml)")
    up.add_argument("--env", metavar="NAME", help="also load config.NAME.yaml over it")
    up.add_argument("--url", help="this storage URL instead of the config's storage.url")
    args = parser.parse_args(argv)
    try:
        if args.url:
            url, base = args.url, Path.cwd()
        else:
            from gateway.storage import make_default_folder

            storage = load_config(Path(args.config), profile=args.env).storage
            make_default_folder(storage)
            url, base = storage.url, storage.base or Path.cwd()
        revision = asyncio.run(upgrade(url, base=base))
        shown = parse(url, base).shown
    except ConfigError as exc:
        print(f"{args.config}: invalid\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"sms-gateway db: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{shown}: schema at revision {revision}")
    return 0
