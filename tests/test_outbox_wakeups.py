"""The outbox's NOTIFYs to other replicas are coalesced (gateway/outbox.py, SPEC §11): a burst
of enqueues costs a few NOTIFYs, yet every enqueue is followed by one written after it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from gateway.observe import Observer
from gateway.outbox import CHANNEL, Outbox
from gateway.router import Router
from gateway.store import Store


class _Signals:
    relayed = True


class _NotifyingStore:
    """What enqueued() uses of a store: signals.relayed and notify(), which takes a while."""

    def __init__(self) -> None:
        self.signals = _Signals()
        self.sent: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def notify(self, channel: str, payload: str = "") -> None:
        await self.release.wait()
        self.sent.append((channel, payload))


async def test_a_burst_of_enqueues_costs_two_notifies_the_last_after_the_burst() -> None:
    outbox = Outbox(cast(Router, None), cast(Observer, None))
    store = _NotifyingStore()
    outbox._store = cast(Store, cast(Any, store))  # only the notify path runs here
    outbox.enqueued()
    await asyncio.sleep(0)  # its NOTIFY is being written...
    for _ in range(99):  # ...while 99 more are queued
        outbox.enqueued()
    store.release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if outbox._notifier is not None and outbox._notifier.done():
            break
    assert store.sent == [(CHANNEL, outbox.owner)] * 2  # the first, and one for the rest
    assert outbox.notified == 2
    outbox.enqueued()  # later on: a NOTIFY of its own
    await asyncio.sleep(0.05)
    assert outbox.notified == 3


async def test_its_own_notification_does_not_count_as_a_wake_from_others() -> None:
    outbox = Outbox(cast(Router, None), cast(Observer, None))
    outbox._on_notification(outbox.owner)
    assert outbox.woken_by_others == 0
    outbox._on_notification("another-process")
    outbox._on_notification("")  # after a reconnect: anything may have been queued
    assert outbox.woken_by_others == 2
