"""``python -m gateway.store upgrade --url URL``: migrate a store without starting the gateway."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.store.errors import StoreError
from gateway.store.store import upgrade


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 with the reason on stderr otherwise."""
    parser = argparse.ArgumentParser(prog="python -m gateway.store")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="migrate the store's schema to this version")
    up.add_argument("--url", required=True, help="storage URL (sqlite:///PATH, postgresql://…)")
    up.add_argument("--base", type=Path, default=Path.cwd(),
                    help="folder a relative sqlite path is read against (default: here)")
    args = parser.parse_args(argv)
    try:
        revision = asyncio.run(upgrade(args.url, base=args.base))
    except StoreError as exc:
        print(f"sms-gateway store: {exc}", file=sys.stderr)
        return 2
    print(f"schema at revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
