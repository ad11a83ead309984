"""``sms-gateway``: flags, logging first, config, then the server until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from functools import partial
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from gateway import __version__
from gateway.config import LEVELS, Config, ConfigError, load_config
from gateway.logs import reset_logging, setup_console
from gateway.serving import (  # re-exported: tests and bench import them from here
    EXIT_CONFIG,
    _loop_factory,
    emulated_loader,
    emulation_for,
    serve,
)
from gateway.workers import count as workers_count

__all__ = ["EXIT_CONFIG", "_loop_factory", "emulated_loader", "emulation_for", "main",
           "parse_args"]

log = logging.getLogger("gateway")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sms-gateway", description="Send SMS through prioritized providers with failover.",
        allow_abbrev=False)  # "--env" is its own flag, never short for --env-file
    parser.add_argument("--config", default="config.yaml", help="config file (./config.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    parser.add_argument("--env-file", help="KEY=VALUE lines loaded into the environment first")
    parser.add_argument("--env", type=_profile, metavar="NAME",
                        help="also load config.NAME.yaml (beside --config) over it, if present")
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, metavar="LEVEL",
                        help=f"overrides logging.level from the config ({', '.join(LEVELS)})")
    parser.add_argument("--emulate", action="store_true",
                        help="run the provider emulators in-process and use them")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print every problem, exit 0 or 2")
    parser.add_argument("--version", action="version", version=f"sms-gateway {__version__}")
    parser.add_argument("--workers", type=workers_count, metavar="N|auto",
                        help="run N processes on one port (SO_REUSEPORT), supervised; "
                             "auto: one per core")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers
    return parser.parse_args(argv)


def _profile(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise argparse.ArgumentTypeError(f"{name!r}: letters, digits, - and _ only")
    return name


def load_env_file(path: Path) -> None:
    """``--env-file``: dotenv ``KEY=VALUE`` lines into the environment, over what is set."""
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise ValueError(f"{path}:{binding.original.line}: expected KEY=VALUE")
    for key, value in dotenv_values(path, interpolate=False).items():
        if value is not None:
            os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sms-gateway`` and ``python -m gateway``."""
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in {"send", "status"}:  # the caller commands (gateway/callers.py)
        from gateway.callers import main as callers_main
        return callers_main(words)
    if words == ["schema"]:  # the JSON Schema of config.yaml, for editors (config.schema.json)
        from gateway.models_config import config_schema
        print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
        return 0
    if words and words[0] == "db":  # sms-gateway db upgrade (gateway/dbcommand.py)
        from gateway.dbcommand import main as db_main
        return db_main(words[1:])
    args = parse_args(argv)
    setup_console(args.log_level)
    try:
        return _main(args, words)
    finally:
        reset_logging()  # every queued line written before the process ends


def _main(args: argparse.Namespace, words: list[str]) -> int:
    if args.env_file:
        try:
            load_env_file(Path(args.env_file))
        except (OSError, ValueError) as exc:
            log.error("cannot read --env-file: %s", exc)
            return EXIT_CONFIG
    path = Path(args.config)
    if args.check:
        return check(path, args)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            if args.workers:  # the supervisor of N ordinary gateways (gateway/workers.py)
                from gateway.workers import supervise
                return runner.run(supervise(args.workers, words, partial(
                    load_config, path, profile=args.env,
                    emulation=emulation_for(_placeholders()) if args.emulate else None)))
            return runner.run(serve(args, path))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


def check(path: Path, args: argparse.Namespace) -> int:
    """``--check``: the config is valid and its log file can be written; exit 0 or 2."""
    try:
        config = load_config(path, emulation=emulation_for(_placeholders()) if args.emulate
                             else None, profile=args.env)
    except ConfigError as exc:
        print(f"{path}: invalid\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    unwritable = _unwritable(config)
    if unwritable:
        print(f"{path}: invalid\n{unwritable}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok")
    return 0


def _placeholders() -> dict[str, str]:
    """Emulator URLs for a config read without running the emulators (they are not called)."""
    from gateway.emulators.server import APPS

    return dict.fromkeys(APPS, "http://127.0.0.1:1")


def _unwritable(config: Config) -> str | None:
    """Why logging.file could not be written, without creating anything."""
    if not config.logging.file:
        return None
    target = Path(config.logging.file)
    if target.exists():
        ok = target.is_file() and os.access(target, os.W_OK)
        return None if ok else f"logging.file: {target} is not a writable file"
    folder = target.parent
    while not folder.exists():  # the gateway creates missing folders: the first existing one
        folder = folder.parent
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return None
    return f"logging.file: cannot create {target}: {folder} is not a writable folder"
