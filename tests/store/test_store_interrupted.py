"""Settling what a crash left half done, on both engines: sync sends ``sending`` past any live
send's age, and Idempotency-Key claims left in flight."""

from __future__ import annotations

from gateway.store import KeyConflict, New, NewMessage, Recovered, Store, body_hash

from .conftest import FakeClock

A = "+8613800138000"
BODY = body_hash(b"{}")


def message(mid: str, **extra: object) -> NewMessage:
    return NewMessage(mid, "app", "verify_code", [A], {"code": "1"}, **extra)  # type: ignore[arg-type]


async def test_a_crashed_sync_send_is_settled_once_older_than_any_live_one(
        store: Store, clock: FakeClock) -> None:
    await store.records.create(message("called"), "aliyun")  # its provider call was under way
    seq = await store.records.attempt_started("called", "huawei")  # a failover, then the crash
    assert seq == 2
    await store.records.create(message("uncalled"))  # no provider was called
    await store.records.create(message("kept", idempotency_key="k"), "aliyun")
    await store.records.create(message("queued", mode="async"))  # the outbox's, not ours
    await store.records.create(message("done"), "aliyun")
    await store.records.finish("done", "sent", provider="aliyun")
    clock.advance(5)
    await store.records.create(message("young"), "aliyun")  # maybe alive in a replica
    assert await store.settle_interrupted(10) == []  # nothing old enough yet
    clock.advance(6)

    settled = await store.settle_interrupted(10)
    assert sorted((s.id, s.status) for s in settled) == [
        ("called", "unknown"), ("kept", "unknown"), ("uncalled", "failed")]
    called = await store.records.get("called")
    assert called is not None and called.status == "unknown" and called.params is None
    assert called.provider == "huawei" and called.final_at == clock.now
    assert called.error is not None and "may have sent" in called.error
    assert [(a.provider, a.outcome) for a in called.attempts] == [
        ("aliyun", "unknown"), ("huawei", "unknown")]
    uncalled = await store.records.get("uncalled")
    assert uncalled is not None and uncalled.status == "failed"
    assert uncalled.error is not None and "nothing was sent" in uncalled.error
    for untouched, status in (("queued", "queued"), ("done", "sent"), ("young", "sending")):
        record = await store.records.get(untouched)
        assert record is not None and record.status == status
    assert await store.settle_interrupted(10) == []  # settled once


async def test_settling_keeps_params_when_asked(store: Store, clock: FakeClock) -> None:
    await store.records.create(message("m"), "aliyun")
    clock.advance(60)
    await store.settle_interrupted(10, keep_params=True)
    record = await store.records.get("m")
    assert record is not None and record.status == "unknown" and record.params == {"code": "1"}


async def test_a_claim_left_in_flight_by_a_crash(store: Store, clock: FakeClock) -> None:
    keys = store.idempotency
    assert await keys.claim("app", "sent-one", BODY) == New()
    await store.records.create(message("m1", idempotency_key="sent-one"), "aliyun")
    assert await keys.claim("app", "not-sent", BODY) == New()  # crashed before its record
    other = body_hash(b"[]")
    # While a send could still be in flight: 409 as before.
    assert await keys.claim("app", "sent-one", BODY, stale_after=10) == KeyConflict("in_flight")
    clock.advance(11)
    assert await keys.claim("app", "sent-one", other, stale_after=10) == KeyConflict(
        "different_body")
    assert await keys.claim("app", "sent-one", BODY) == KeyConflict("in_flight")  # no bound
    assert await keys.claim("app", "sent-one", BODY, stale_after=10) == Recovered("m1")
    # No record: nothing was sent, so the key is this request's now (and fresh again).
    assert await keys.claim("app", "not-sent", BODY, stale_after=10) == New()
    assert await keys.claim("app", "not-sent", BODY, stale_after=10) == KeyConflict("in_flight")


async def test_a_claim_whose_send_failed_before_the_crash_is_taken_over(
        store: Store, clock: FakeClock) -> None:
    keys = store.idempotency
    assert await keys.claim("app", "k", BODY) == New()
    await store.records.create(message("m1", idempotency_key="k"))
    await store.records.finish("m1", "failed", error="every provider tried failed")
    clock.advance(60)  # crashed before the key was released: a retry may send
    assert await keys.claim("app", "k", BODY, stale_after=10) == New()


async def test_a_claim_whose_async_message_was_queued_is_answered_from_it(
        store: Store, clock: FakeClock) -> None:
    keys = store.idempotency
    assert await keys.claim("app", "k", BODY) == New()
    await store.records.create(message("m1", idempotency_key="k", mode="async"))  # queued
    clock.advance(60)  # crashed before the key kept its answer: the outbox will send it
    assert await keys.claim("app", "k", BODY, stale_after=10) == Recovered("m1")
    assert await store.settle(["m1"]) == []  # the outbox's: never settled here
