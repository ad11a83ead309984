"""OutboxStore on SQLite and PostgreSQL: claims with a lease, lost leases taken again, an
unfinished attempt reported, put-backs only by the holder, expiry, release, the numbers."""

from __future__ import annotations

import asyncio

from gateway.store import AttemptEnd, NewMessage, Store

from .conftest import START, FakeClock, Opener

A = "+8613800138000"


def queued(mid: str, ttl: float = 3600.0, now: float = START) -> NewMessage:
    return NewMessage(mid, "app", "notice", [A], {"name": "Li"}, mode="async",
                      expires_at=now + ttl)


async def test_a_claim_leases_what_is_due_until_the_lease_runs_out(
        store: Store, clock: FakeClock) -> None:
    for mid in ("m1", "m2", "m3"):
        await store.records.create(queued(mid))
        clock.advance(0.001)  # claimed oldest first
    first = await store.outbox.claim("w1", lease=30, limit=2)
    assert sorted(c.id for c in first) == ["m1", "m2"]
    assert first[0].params == {"name": "Li"} and first[0].numbers == (A,)
    assert [c.id for c in await store.outbox.claim("w2", lease=30, limit=5)] == ["m3"]
    assert await store.outbox.claim("w2", lease=30, limit=5) == []
    record = await store.records.get("m1")
    assert record is not None and record.status == "sending"
    clock.advance(31)  # w1 died: its leases run out
    again = await store.outbox.claim("w3", lease=30, limit=5)
    assert sorted(c.id for c in again) == ["m1", "m2", "m3"]
    assert all(c.unfinished is None for c in again)


async def test_a_renewed_lease_is_not_taken(store: Store, clock: FakeClock) -> None:
    await store.records.create(queued("m1"))
    await store.outbox.claim("w1", lease=10, limit=1)
    clock.advance(8)
    assert await store.outbox.renew("w1", ["m1"], lease=10) == 1
    assert await store.outbox.renew("w2", ["m1"], lease=10) == 0  # not its lease
    clock.advance(8)
    assert await store.outbox.claim("w2", lease=10, limit=1) == []


async def test_an_attempt_started_but_never_finished_comes_back_with_the_claim(
        store: Store, clock: FakeClock) -> None:
    await store.records.create(queued("m1"))
    await store.outbox.claim("w1", lease=5, limit=1)
    seq = await store.records.attempt_started("m1", "aliyun")
    clock.advance(6)  # killed mid-call
    [claimed] = await store.outbox.claim("w2", lease=5, limit=1)
    assert claimed.unfinished == seq


async def test_only_the_holder_puts_a_message_back(store: Store, clock: FakeClock) -> None:
    await store.records.create(queued("m1"))
    await store.outbox.claim("w1", lease=5, limit=1)
    seq = await store.records.attempt_started("m1", "aliyun")
    assert not await store.outbox.put_back("m1", "w2", START + 60, waiting="backoff", error="x")
    assert await store.outbox.put_back("m1", "w1", START + 60, waiting="backoff",
                                       error="connect failed",
                                       last=AttemptEnd(seq, "failed", "connect failed"))
    record = await store.records.get("m1")
    assert record is not None
    assert (record.status, record.next_attempt_at, record.error) == (
        "queued", START + 60, "connect failed")
    assert record.attempts[0].outcome == "failed"
    assert await store.outbox.claim("w1", lease=5, limit=1) == []  # not due yet
    clock.advance(60)
    [claimed] = await store.outbox.claim("w1", lease=5, limit=1)
    assert claimed.retries == 1 and claimed.unfinished is None


async def test_past_its_ttl_a_queued_message_expires_unless_it_may_have_been_sent(
        store: Store, clock: FakeClock) -> None:
    await store.records.create(queued("m1", ttl=10))
    await store.records.create(queued("m2", ttl=10))
    await store.outbox.claim("w1", lease=5, limit=2)
    await store.records.attempt_started("m2", "aliyun")  # killed mid-call
    clock.advance(11)
    assert await store.outbox.expire(100, keep_params=False) == [("m1", None)]
    record = await store.records.get("m1")
    assert record is not None and (record.status, record.params) == ("expired", None)
    [claimed] = await store.outbox.claim("w2", lease=5, limit=5)
    assert claimed.id == "m2" and claimed.unfinished == 1  # the outbox makes it unknown


async def test_release_gives_back_every_lease_of_a_worker(store: Store) -> None:
    for mid in ("m1", "m2"):
        await store.records.create(queued(mid))
    await store.outbox.claim("w1", lease=30, limit=2)
    assert await store.outbox.release("w1") == 2
    assert len(await store.outbox.claim("w2", lease=30, limit=5)) == 2


async def test_the_numbers_count_what_waits(store: Store, clock: FakeClock) -> None:
    await store.records.create(queued("m1"))
    clock.advance(5)
    await store.records.create(queued("m2"))
    await store.records.create(NewMessage("sync", "app", "notice", [A]))  # not the outbox's
    await store.outbox.claim("w1", lease=30, limit=1)
    await store.outbox.put_back("m1", "w1", START + 100, waiting="providers_open", error=None)
    numbers = await store.outbox.numbers()
    assert (numbers.depth, numbers.oldest, numbers.waiting_open) == (2, START, 1)
    assert numbers.next_due == START + 5 == await store.outbox.next_due()


async def test_concurrent_claims_never_share_a_message(store_url: str, open_at: Opener) -> None:
    """Two processes (two stores on one database) claiming at once: every message once."""
    one, two = await open_at(store_url), await open_at(store_url)
    for index in range(60):
        await one.records.create(queued(f"m{index:02d}"))

    async def drain(store: Store, owner: str) -> list[str]:
        got: list[str] = []
        while batch := await store.outbox.claim(owner, lease=60, limit=7):
            got += [c.id for c in batch]
        return got

    first, second = await asyncio.gather(drain(one, "a"), drain(two, "b"))
    assert sorted(first + second) == [f"m{index:02d}" for index in range(60)]
