"""ReceiptStore (SPEC §9): matching, monotonic per-recipient deliveries, the record's status,
parking, and two replicas applying a message's last receipts at once. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from gateway.store import DeliveryReport, NewMessage, Store
from gateway.store.receipts import PARK_FOR, same_number

from .conftest import START, FakeClock, Opener

A = "+8613800138000"
B = "+8613900139000"


def aliyun(mid: str | None, number: str, delivered: bool = True, biz: str | None = "biz-1",
           at: float = START + 5) -> DeliveryReport:
    return DeliveryReport("aliyun", delivered, "DELIVERED" if delivered else "MN:0001", at,
                          mid, number, biz)


def huawei(mid: str | None, sms_id: str, delivered: bool = True,
           at: float = START + 5) -> DeliveryReport:
    return DeliveryReport("huawei", delivered, "DELIVRD" if delivered else "E200027", at, mid,
                          None, sms_id)


async def sent(store: Store, mid: str, *numbers: str, ids: dict[str, str] | None = None,
               provider: str = "aliyun") -> None:
    await store.records.create(NewMessage(mid, "app", "verify_code", list(numbers)))
    await store.records.finish(mid, "sent", provider=provider, provider_message_id="biz-1",
                               recipient_ids=ids or dict.fromkeys(numbers, "biz-1"))


async def status(store: Store, mid: str) -> tuple[str, dict[str, tuple[str | None, str | None]]]:
    record = await store.records.get(mid)
    assert record is not None
    return record.status, {r.number: (r.status, r.code) for r in record.recipients}


def test_a_provider_spelling_names_our_number() -> None:
    for spelled in ("8613800138000", "+8613800138000", "008613800138000", "13800138000"):
        assert same_number(A, spelled)
    assert not same_number(A, "13900139000") and not same_number(A, "000")


async def test_out_id_and_national_number_deliver_each_recipient(store: Store,
                                                                  clock: FakeClock) -> None:
    await sent(store, "m1", A, B)
    clock.advance(60)  # heard of a minute later; delivered 5 s after the send, it says
    first = await store.receipts.apply([aliyun("m1", "13800138000")])
    assert [o.outcome for o in first.outcomes] == ["applied"] and first.moved == []
    assert first.outcomes[0].provider == "aliyun" and first.outcomes[0].seconds == 5.0
    assert await status(store, "m1") == ("sent", {A: ("delivered", "DELIVERED"),
                                                  B: (None, None)})
    last = await store.receipts.apply([aliyun("m1", "8613900139000", delivered=False)])
    assert [(m.id, m.status) for m in last.moved] == [("m1", "undelivered")]
    assert await status(store, "m1") == ("undelivered", {A: ("delivered", "DELIVERED"),
                                                         B: ("undelivered", "MN:0001")})


async def test_duplicates_and_late_contradictions_change_nothing(store: Store) -> None:
    await sent(store, "m1", A)
    done = await store.receipts.apply([aliyun("m1", A), aliyun("m1", A)])  # one push, twice
    assert [o.outcome for o in done.outcomes] == ["applied", "duplicate"]
    assert [(m.id, m.status) for m in done.moved] == [("m1", "delivered")]
    late = await store.receipts.apply([aliyun("m1", A, delivered=False, at=START + 1)])
    assert [o.outcome for o in late.outcomes] == ["duplicate"] and late.moved == []
    assert await status(store, "m1") == ("delivered", {A: ("delivered", "DELIVERED")})


async def test_huawei_matches_by_extend_and_per_recipient_id(store: Store) -> None:
    await sent(store, "m1", A, B, ids={A: "hw-a", B: "hw-b"}, provider="huawei")
    done = await store.receipts.apply([huawei("m1", "hw-b"), huawei(None, "hw-a", False)])
    assert [o.outcome for o in done.outcomes] == ["applied", "applied"]
    assert await status(store, "m1") == ("undelivered", {A: ("undelivered", "E200027"),
                                                         B: ("delivered", "DELIVRD")})


async def test_a_shared_biz_id_is_narrowed_by_the_number(store: Store) -> None:
    await sent(store, "m1", A, B)  # one BizId for both numbers, as Aliyun gives
    done = await store.receipts.apply([aliyun(None, "13900139000")])
    assert [o.outcome for o in done.outcomes] == ["applied"]
    assert (await status(store, "m1"))[1][B] == ("delivered", "DELIVERED")


async def test_early_receipts_are_parked_then_applied_or_dropped(store: Store,
                                                                  clock: FakeClock) -> None:
    early = await store.receipts.apply([huawei("m1", "hw-a"), aliyun("gone", A)])
    assert [o.outcome for o in early.outcomes] == ["parked", "parked"]
    await store.records.create(NewMessage("m1", "app", "verify_code", [A]))
    waiting = await store.receipts.retry_parked()
    assert waiting.outcomes == [] and waiting.parked_left == 2  # still sending: not yet
    await store.records.finish("m1", "sent", provider="huawei", recipient_ids={A: "hw-a"})
    applied = await store.receipts.retry_parked()
    assert [(o.outcome, o.message_id) for o in applied.outcomes] == [("applied", "m1")]
    assert [(m.id, m.status) for m in applied.moved] == [("m1", "delivered")]
    assert applied.parked_left == 1 and await store.receipts.parked() == 1
    clock.advance(PARK_FOR + 1)
    dropped = await store.receipts.retry_parked()
    assert dropped.dropped == ["aliyun"] and await store.receipts.parked() == 0


async def test_two_replicas_apply_the_last_receipts_of_one_message(
        store_url: str, open_at: Opener) -> None:
    """Each replica writes one of the two recipients' receipts at the same moment: whichever
    commits second must see the first's and move the message on (never both miss it)."""
    one, two = await open_at(store_url), await open_at(store_url)
    for round_ in range(8):
        mid = f"m{round_}"
        await sent(one, mid, A, B)
        await asyncio.gather(one.receipts.apply([aliyun(mid, A)]),
                             two.receipts.apply([aliyun(mid, B)]))
        assert (await status(one, mid))[0] == "delivered", round_


async def test_a_receipt_proves_an_unknown_send_went_out(store: Store) -> None:
    """A timed-out send (no provider id stored) still matches by our id: it was sent."""
    await store.records.create(NewMessage("u1", "app", "verify_code", [A]))
    await store.records.finish("u1", "unknown", provider="huawei")
    done = await store.receipts.apply([huawei("u1", "hw-never-seen")])
    assert [o.outcome for o in done.outcomes] == ["applied"]
    assert await status(store, "u1") == ("delivered", {A: ("delivered", "DELIVRD")})
