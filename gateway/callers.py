"""``sms-gateway send`` and ``sms-gateway status``: the gateway's API from a shell.

Exit codes: 0 sent (or queued, or the status shown), 1 the gateway said no (its problem detail
goes to stderr), 2 usage, 3 the outcome is unknown (it may have been sent: do not resend blindly),
4 the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# The asyncio client: aiohttp is in the base install, requests (SmsClient) only in the extra.
from gateway.client.aio import AsyncSmsClient
from gateway.client.errors import SmsError, TransportError

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN, EXIT_UNREACHABLE = 1, 2, 3, 4
_COLOURS = {"closed": "32", "half_open": "33", "open": "31", "disabled": "90"}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("SMS_GATEWAY_URL", DEFAULT_URL),
                        help=f"the gateway (default {DEFAULT_URL}, or $SMS_GATEWAY_URL)")
    common.add_argument("--api-key", default=os.environ.get("SMS_GATEWAY_API_KEY"),
                        help="API key (default $SMS_GATEWAY_API_KEY)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    common.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
    parser = argparse.ArgumentParser(prog="sms-gateway", description="Talk to a running gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", parents=[common], help="send one message")
    send.add_argument("--to", action="append", required=True,
                      help="a number (repeat, or comma-separate, for several)")
    send.add_argument("--template", required=True)
    send.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    send.add_argument("--async", dest="mode", action="store_const", const="async",
                      default=None, help="queue it and return at once (202 queued)")
    send.add_argument("--sync", dest="mode", action="store_const", const="sync",
                      help="wait for the provider even when the template says async")
    send.add_argument("--ttl", help="async: give up if not sent within it (10m, 2h, seconds)")
    send.add_argument("--callback-url", help="POSTed the record when sending is over "
                      "(its host must be in server.callback_hosts)")
    send.add_argument("--idempotency-key", help="repeating the command with it never resends")
    status = commands.add_parser("status", parents=[common],
                                 help="providers and breakers, or one message's record")
    status.add_argument("id", nargs="?", help="a message id: show its record and deliveries")
    status.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    return parser


def main(argv: list[str]) -> int:
    """Run ``send`` or ``status``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    params = _params(parser, args.param) if args.command == "send" else {}
    return asyncio.run(_run(args, params))


async def _run(args: argparse.Namespace, params: dict[str, str]) -> int:
    async with AsyncSmsClient(args.url, args.api_key, timeout=args.timeout) as client:
        try:
            if args.command == "send":
                return await _send(client, args, params)
            return await _status(client, args)
        except TransportError as exc:
            print(f"sms-gateway: cannot reach {args.url}: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN if exc.maybe_sent and args.command == "send" \
                else EXIT_UNREACHABLE
        except SmsError as exc:
            return _refused(exc, args.json)


def _params(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--param {pair!r}: expected NAME=VALUE")
        params[name] = value
    return params


async def _send(client: AsyncSmsClient, args: argparse.Namespace,
                params: dict[str, str]) -> int:
    to = [number.strip() for item in args.to for number in item.split(",") if number.strip()]
    answer = await client.send(to, args.template, params, idempotency_key=args.idempotency_key,
                               mode=args.mode, ttl=args.ttl, callback_url=args.callback_url)
    if args.json:
        print(json.dumps(answer, indent=2))
    elif answer.get("status") == "sent":
        print(f"sent via {answer.get('provider')}: id {answer.get('id')}, "
              f"provider id {answer.get('provider_message_id')}")
        for refused in answer.get("refused") or ():
            print(f"  refused {refused.get('to')}: {refused.get('error')}")
    elif answer.get("status") == "queued":
        print(f"queued: id {answer.get('id')} (follow it with: sms-gateway status "
              f"{answer.get('id')})")
    else:
        print(f"{answer.get('status')}: id {answer.get('id')} (it may have been sent; "
              f"check with GET /sms/{answer.get('id')} before sending again)")
    return 0 if answer.get("status") in ("sent", "queued") else EXIT_UNKNOWN


def _refused(error: SmsError, as_json: bool) -> int:
    if as_json and error.problem:
        print(json.dumps(error.problem, indent=2))
    print(f"sms-gateway: {error}", file=sys.stderr)
    items = error.problem.get("errors") or ()
    for item in items:
        if isinstance(item, dict) and item.get("limit"):
            if len(items) == 1:
                continue  # the detail line above already says it
            print(f"  limit {item['limit']} for {item.get('to', '')}: {item.get('message', '')}",
                  file=sys.stderr)
            continue
        print(f"  {item.get('field', '')}: {item.get('message', item)}"
              if isinstance(item, dict) else f"  {item}", file=sys.stderr)
    if error.retry_after is not None:
        print(f"  retry after {error.retry_after:g} s", file=sys.stderr)
    return EXIT_REFUSED


async def _status(client: AsyncSmsClient, args: argparse.Namespace) -> int:
    if args.id:
        record = await client.get(args.id)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            render_record(record, sys.stdout)
        return 0
    document = await client.status()
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                        and not os.environ.get("NO_COLOR"))
    render_status(document, sys.stdout, colour)
    return 0


def render_status(document: dict[str, Any], out: TextIO, colour: bool) -> None:
    """The providers as a table; breaker states coloured when ``colour``."""
    ready = "ready" if document.get("ready") else "NOT READY"
    notice = f" ({document['notice']})" if document.get("notice") else ""
    out.write(f"sms-gateway {document.get('version', '?')}: {ready}{notice}\n")
    header = ("PROVIDER", "TYPE", "PRI", "STATE", "RETRY IN", "SENT", "FAILED", "P95 MS",
              "LAST ERROR")
    rows = [header] + [_row(p) for p in document.get("providers", [])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        state = row[3]
        if colour and index and state in _COLOURS:
            cells[3] = f"\x1b[{_COLOURS[state]}m{cells[3]}\x1b[0m"
        out.write("  ".join(cells).rstrip() + "\n")


def render_record(record: dict[str, Any], out: TextIO) -> None:
    """One message: its status, where it went, and each number's delivery (receipts)."""
    out.write(f"{record.get('id')}: {record.get('status')} ({record.get('template')}, "
              f"{record.get('mode', 'sync')})\n")
    if record.get("provider"):
        out.write(f"  provider {record['provider']}, provider id "
                  f"{record.get('provider_message_id') or '-'}\n")
    waiting = record.get("status") in ("queued", "sending")
    for key in ("error", "next_attempt_at", "expires_at"):
        value = record.get(key) if waiting or key == "error" else None
        if value is not None:
            when = datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") \
                if isinstance(value, int | float) else value
            out.write(f"  {key.replace('_', ' ')}: {when}\n")
    deliveries = record.get("deliveries") or []
    if not deliveries:
        out.write("  deliveries: none reported yet\n")
    for delivery in deliveries:
        code = f" ({delivery['code']})" if delivery.get("code") else ""
        out.write(f"  {delivery.get('to')}: {delivery.get('status')}{code}\n")


def _row(provider: dict[str, Any]) -> tuple[str, ...]:
    counts = provider.get("counts") or {}
    p95 = (provider.get("latency_ms") or {}).get("p95")
    retry = provider.get("retry_in")
    return (str(provider.get("name", "")), str(provider.get("type", "")),
            str(provider.get("priority", "")), str(provider.get("state", "")),
            f"{retry:g}s" if retry else "-", str(counts.get("sent", 0)),
            str(counts.get("failed", 0)), "-" if p95 is None else f"{p95:g}",
            str(provider.get("last_error") or "-")[:40])
