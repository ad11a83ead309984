"""RecordStore: written before any provider call, read back, listed by page, expired."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError

from gateway.store import (
    AttemptEnd,
    BadQueryError,
    ListQuery,
    NewMessage,
    Page,
    Store,
    UnknownMessageError,
)

from .conftest import START, FakeClock

A = "+8613800138000"
B = "+8613900139000"


def message(mid: str, *numbers: str, template: str = "verify_code", caller: str = "app",
            **extra: object) -> NewMessage:
    return NewMessage(mid, caller, template, list(numbers) or [A], {"code": "123456"},
                      **extra)  # type: ignore[arg-type]


async def test_a_record_is_written_before_the_call_and_completed_after(store: Store) -> None:
    await store.records.create(message("m1", A, B))
    fresh = await store.records.get("m1")
    assert fresh is not None
    assert (fresh.status, fresh.numbers, fresh.params) == ("sending", (A, B), {"code": "123456"})
    assert [r.number for r in fresh.recipients] == [A, B]

    seq = await store.records.attempt_started("m1", "aliyun")
    started = await store.records.get("m1")
    assert started is not None and started.attempts[0].finished_at is None  # a crash: maybe sent
    await store.records.attempt_finished("m1", seq, "failed", error="timeout")
    seq2 = await store.records.attempt_started("m1", "huawei")
    await store.records.attempt_finished("m1", seq2, "accepted", provider_message_id="hw-1",
                                         recipient_ids={A: "hw-1a", B: "hw-1b"})
    assert await store.records.finish("m1", "sent", provider="huawei",
                                      provider_message_id="hw-1")

    done = await store.records.get("m1")
    assert done is not None
    assert (done.status, done.provider, done.params, done.attempt_count) == (
        "sent", "huawei", None, 2)
    assert done.final_at is not None
    assert [(a.seq, a.provider, a.outcome, a.error) for a in done.attempts] == [
        (1, "aliyun", "failed", "timeout"), (2, "huawei", "accepted", None)]
    assert {r.number: r.provider_message_id for r in done.recipients} == {A: "hw-1a", B: "hw-1b"}


async def test_params_are_kept_only_when_asked(store: Store) -> None:
    await store.records.create(message("kept"))
    await store.records.finish("kept", "failed", keep_params=True)
    kept = await store.records.get("kept")
    assert kept is not None and kept.params == {"code": "123456"}


async def test_a_final_status_is_set_once(store: Store) -> None:
    await store.records.create(message("m1"))
    assert await store.records.finish("m1", "unknown")
    assert not await store.records.finish("m1", "sent")
    again = await store.records.get("m1")
    assert again is not None and again.status == "unknown"
    with pytest.raises(ValueError, match="not a final status"):
        await store.records.finish("m1", "sending")
    with pytest.raises(UnknownMessageError):
        await store.records.finish("nope", "sent")
    with pytest.raises(UnknownMessageError):
        await store.records.attempt_started("nope", "aliyun")
    assert await store.records.get("nope") is None


async def test_an_end_naming_an_attempt_never_started_is_refused_and_changes_nothing(
        store: Store) -> None:
    assert await store.records.create(message("m1", A, B), "aliyun") == 1
    with pytest.raises(UnknownMessageError, match="attempt 7"):
        await store.records.finish("m1", "sent", last=AttemptEnd(7, "sent"),
                                   recipient_ids={A: "x"}, refused={B: "E1"})
    with pytest.raises(UnknownMessageError, match="attempt 7"):
        await store.records.attempt_started("m1", "huawei", AttemptEnd(7, "failed"))
    with pytest.raises(UnknownMessageError, match="attempt 7"):
        await store.records.attempt_finished("m1", 7, "failed", recipient_ids={A: "x"})
    record = await store.records.get("m1")
    assert record is not None
    assert (record.status, record.final_at, record.params) == ("sending", None, {"code": "123456"})
    assert [(a.seq, a.finished_at) for a in record.attempts] == [(1, None)]
    assert [(r.provider_message_id, r.status) for r in record.recipients] == [(None, None)] * 2
    assert await store.records.attempt_started("m1", "huawei", AttemptEnd(1, "failed")) == 2


async def test_writes_committed_together_each_get_their_own_answer(store: Store) -> None:
    # Concurrent writes share a batch (on PostgreSQL alike statements run as one pipelined
    # statement); one that cannot go as the common case expects still gets its own answer.
    await asyncio.gather(*(store.records.create(message(f"m{i}", A), "aliyun")
                           for i in range(6)))
    assert await store.records.finish("m5", "failed")  # final before the batch below
    created = asyncio.gather(
        store.records.create(message("m0", A), "aliyun"),  # a second m0
        *(store.records.create(message(f"n{i}", A, B), "huawei") for i in range(3)),
        return_exceptions=True)
    finished = asyncio.gather(
        *(store.records.finish(f"m{i}", "sent", provider="aliyun", provider_message_id=f"p{i}",
                               last=AttemptEnd(1, "sent", None, f"p{i}"),
                               recipient_ids={A: f"p{i}"}) for i in range(4)),
        store.records.finish("m4", "sent", last=AttemptEnd(9, "sent")),  # no attempt 9
        store.records.finish("m5", "sent", last=AttemptEnd(1, "sent")),  # already final
        store.records.finish("nope", "sent"),
        return_exceptions=True)
    creates, finishes = await asyncio.gather(created, finished)
    assert isinstance(creates[0], IntegrityError)
    assert creates[1:] == [1, 1, 1]
    assert finishes[:4] == [True] * 4
    assert isinstance(finishes[4], UnknownMessageError) and "attempt 9" in str(finishes[4])
    assert finishes[5] is False
    assert isinstance(finishes[6], UnknownMessageError)
    for i in range(4):
        record = await store.records.get(f"m{i}")
        assert record is not None
        assert (record.status, record.provider_message_id, record.params) == (
            "sent", f"p{i}", None)
        assert [(a.outcome, a.provider_message_id) for a in record.attempts] == [
            ("sent", f"p{i}")]
        assert [r.provider_message_id for r in record.recipients] == [f"p{i}"]
    untouched = await store.records.get("m4")
    assert untouched is not None and (untouched.status, untouched.final_at) == ("sending", None)
    final = await store.records.get("m5")
    assert final is not None and final.status == "failed"
    fresh = await store.records.get("n2")
    assert fresh is not None and [r.number for r in fresh.recipients] == [A, B]


async def test_a_provider_s_overlong_ids_and_codes_never_stop_the_final_status(
        store: Store) -> None:
    # Provider answers are input: an id longer than the column (255) cannot match a receipt
    # anyway and is left out, a refusal code is cut to its column (64); on PostgreSQL either
    # used to fail the whole write, leaving a sent message "sending".
    await store.records.create(message("m1", A, B), "aliyun")
    long_id, long_code = "x" * 300, "E" * 100
    assert await store.records.finish("m1", "sent", provider="aliyun",
                                      last=AttemptEnd(1, "sent"),
                                      recipient_ids={A: long_id}, refused={B: long_code})
    record = await store.records.get("m1")
    assert record is not None and record.status == "sent"
    assert [(r.number, r.provider_message_id, r.status, r.code) for r in record.recipients] == [
        (A, None, None, None), (B, None, "refused", "E" * 64)]
    await store.records.create(message("m2", A), "aliyun")
    await store.records.attempt_finished("m2", 1, "accepted", recipient_ids={A: long_id})
    again = await store.records.get("m2")
    assert again is not None and again.recipients[0].provider_message_id is None


async def test_an_async_message_is_queued_with_its_expiry(store: Store, clock: FakeClock) -> None:
    await store.records.create(message("q1", mode="async", expires_at=START + 600,
                                       callback_url="https://hooks.example.com/sms"))
    queued = await store.records.get("q1")
    assert queued is not None
    assert (queued.status, queued.mode, queued.expires_at, queued.next_attempt_at) == (
        "queued", "async", START + 600, clock())
    assert queued.callback_url == "https://hooks.example.com/sms"


async def test_list_filters(store: Store, clock: FakeClock) -> None:
    await store.records.create(message("old", A, template="notice", caller="other"))
    clock.advance(60)
    await store.records.create(message("mid", B))
    clock.advance(60)
    await store.records.create(message("new", A, B))
    await store.records.finish("new", "sent")

    async def ids(**filters: object) -> list[str]:
        page = await store.records.list(ListQuery(**filters))  # type: ignore[arg-type]
        return [item.id for item in page.items]

    assert await ids() == ["new", "mid", "old"]
    assert await ids(to=A) == ["new", "old"]
    assert await ids(to=B, status="sent") == ["new"]
    assert await ids(status="sending") == ["mid", "old"]
    assert await ids(template="notice") == ["old"]
    assert await ids(caller="app") == ["new", "mid"]
    assert await ids(since=START + 60) == ["new", "mid"]
    assert await ids(until=START + 60) == ["old"]
    assert await ids(to=A, since=START + 1, until=START + 121) == ["new"]
    assert await ids(to="+8613700000000") == []


@pytest.mark.parametrize(("filters", "field"), [
    ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"status": "lost"}, "status"),
    ({"since": START + 1, "until": START}, "since"), ({"cursor": "garbage!"}, "cursor"),
    ({"cursor": "WyJjMSIsIjEiLCJ4Il0"}, "cursor"),  # a well-formed cursor with a string time
])
async def test_bad_filters_name_the_field(store: Store, filters: dict[str, object],
                                          field: str) -> None:
    with pytest.raises(BadQueryError) as caught:
        await store.records.list(ListQuery(**filters))  # type: ignore[arg-type]
    assert caught.value.field == field


async def _pages(store: Store, query: ListQuery, between: int, next_id: list[int],
                 clock: FakeClock) -> list[str]:
    """Every id, page by page, while ``between`` new records arrive before each page."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        clock.advance(1)
        arrivals = [store.records.create(message(f"late{next_id[0] + i}", A))
                    for i in range(between)]
        next_id[0] += between
        listing = store.records.list(ListQuery(to=query.to, limit=query.limit, cursor=cursor))
        page, *_ = await asyncio.gather(listing, *arrivals)
        assert isinstance(page, Page)
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return seen


@pytest.mark.parametrize("to", [None, A])
async def test_pages_never_repeat_or_skip_while_records_arrive(store: Store, clock: FakeClock,
                                                             to: str | None) -> None:
    # Several records share one created_at: the id breaks ties, so the cursor needs both.
    first = []
    for index in range(23):
        if index % 4 == 0:
            clock.advance(1)
        first.append(f"m{index:02d}")
        await store.records.create(message(first[-1], A))
    next_id = [0]
    seen = await _pages(store, ListQuery(to=to, limit=5), 3, next_id, clock)
    initial = [mid for mid in seen if not mid.startswith("late")]
    assert len(seen) == len(set(seen)), "a record was shown twice"
    assert initial == list(reversed(first)), "a record was skipped or out of order"


async def test_retention_deletes_in_small_batches(store: Store, clock: FakeClock) -> None:
    for index in range(7):
        await store.records.create(message(f"old{index}", A))
        await store.records.attempt_started(f"old{index}", "aliyun")
    clock.advance(3600)
    cutoff = clock()
    for index in range(3):
        await store.records.create(message(f"new{index}", A))
    assert await store.records.purge(cutoff, batch=2) == 7
    left = await store.records.list(ListQuery(to=A))
    assert sorted(item.id for item in left.items) == ["new0", "new1", "new2"]
    assert await store.records.get("old0") is None
    assert await store.records.purge(cutoff, batch=2) == 0
