"""Delivery receipts, the service's side (SPEC §9): who may post them, applying them to the
store, counting them, telling the status-callback listeners, and the parked ones' second chance.

A receipt can beat its record's final status: an async message is recorded before its send,
and a sync send learns its per-recipient ids only when the provider answers. Such a receipt is
parked in the store; a pass tries the parked ones again (soon after one is parked, then every
few seconds while any wait) and drops those still unmatched after an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Sequence

from gateway.service import Gateway
from gateway.store import Applied, DeliveryReport, StoreError

log = logging.getLogger(__name__)

KINDS = ("aliyun", "huawei")
PASS_SOON = 0.25  # seconds after a receipt was parked: its send is usually just finishing
PASS_EVERY = 2.0  # while receipts wait
IDLE_EVERY = 10.0  # otherwise (another replica may have parked some)


class ReceiptDesk:
    """Receives receipts for one gateway; ``passing`` runs the parked receipts' pass."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._wake = asyncio.Event()
        self._waiting = False  # receipts were parked at the last look

    def admits(self, kind: str, given: str) -> bool:
        """Whether ``given`` is the receipt token (compared in constant time); False while
        receipts are off (no token) and for a kind we take no receipts for."""
        token = self.gateway.runtime.config.receipts.token
        if token is None or kind not in KINDS:
            return False
        offered = given.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(offered, token.reveal().encode())

    def invalid(self, kind: str) -> None:
        """A push that was not a receipt we could read (counted, never applied)."""
        self.gateway.observer.on_receipt(kind, "invalid")

    async def take(self, reports: Sequence[DeliveryReport]) -> Applied:
        """Apply one push's reports together (StoreError: none of them was)."""
        applied = await self.gateway.store.receipts.apply(reports)
        await self._report(applied)
        if any(o.outcome == "parked" for o in applied.outcomes):
            self._waiting = True
            self._wake.set()
        return applied

    async def _report(self, applied: Applied) -> None:
        observer = self.gateway.observer
        for o in applied.outcomes:
            status = o.outcome
            if status == "applied":
                status = "delivered" if o.report.delivered else "undelivered"
            observer.on_receipt(o.provider or o.report.source, status, o.seconds)
        for source in applied.dropped:
            observer.on_receipt(source, "dropped")
        if applied.dropped:
            log.warning("receipts: %d parked an hour without a matching send, dropped",
                        len(applied.dropped))
        for moved in applied.moved:
            log.debug("send %s %s", moved.id, moved.status)
            await self.gateway.announce(moved.id, moved.callback_url)

    async def pass_once(self) -> Applied:
        """Try the parked receipts again (applied ones are counted once more, as what they
        turned out to be: the parked count says how many had to wait)."""
        applied = await self.gateway.store.receipts.retry_parked()
        await self._report(applied)
        self._waiting = applied.parked_left > 0
        return applied

    async def passing(self) -> None:
        """The parked receipts' pass, until cancelled."""
        while True:
            timeout = PASS_EVERY if self._waiting else IDLE_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
                await asyncio.sleep(PASS_SOON)
            self._wake.clear()
            try:
                await self.pass_once()
            except StoreError as exc:
                log.warning("receipts: the parked pass failed (tried again later): %s", exc)


@contextlib.asynccontextmanager
async def running(desk: ReceiptDesk) -> AsyncIterator[None]:
    """The pass runs while the app does (after the store opens, stopped before it closes)."""
    task = asyncio.create_task(desk.passing(), name="receipts-pass")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
