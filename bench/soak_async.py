"""The soak's async traffic (SPEC §8): queued sends, drained by the outbox through the chaos.

A few percent of the senders' notices go as ``"mode": "async"`` with a short ttl. Each must be
answered 202 ``queued``; once the load stops and the emulators are healthy again, the outbox
must drain, and every async message must end final: ``sent`` and accepted by exactly one
emulator under our id, or not sent at all (``expired``, ``failed``, ``rejected``,
``rate_limited``: accepted by none), or ``unknown`` (accepted at most once).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

TTL = "30s"  # short: what the chaos holds back longer expires, and the drain stays quick
DRAIN_SECONDS = 60.0
FINAL = frozenset({"sent", "failed", "rejected", "unknown", "expired", "rate_limited"})
NOT_SENT = frozenset({"failed", "rejected", "expired", "rate_limited"})


def async_body(body: dict[str, Any]) -> dict[str, Any]:
    """A send body made async."""
    return {**body, "mode": "async", "ttl": TTL}


async def drained(url: str, headers: Mapping[str, str], ids: list[str],
                  accepted: Callable[[str], dict[str, int]]) -> tuple[list[str], Counter[str]]:
    """Wait for the outbox to empty, then check every async message; (failures, counts)."""
    failures: list[str] = []
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + DRAIN_SECONDS
    async with aiohttp.ClientSession(headers=dict(headers)) as session:
        while True:
            async with session.get(f"{url}/status") as response:
                depth = (await response.json())["outbox"]["depth"]
            if depth == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for message_id in ids:
            async with session.get(f"{url}/sms/{message_id}") as response:
                record = await response.json()
            status = record.get("status", f"HTTP {response.status}")
            seen[f"async {status}"] += 1
            got = sum(accepted(message_id).values())
            if status not in FINAL:
                failures.append(f"async {message_id} is still {status} after the drain")
            elif status == "sent" and got != 1:
                failures.append(f"async {message_id} sent, but accepted {got} times")
            elif status in NOT_SENT and got:
                failures.append(f"async {message_id} is {status}, but accepted {got} times")
            elif status == "unknown" and got > 1:
                failures.append(f"async {message_id} unknown, but accepted {got} times")
    return failures, seen
