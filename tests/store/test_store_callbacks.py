"""The status callbacks' queue on SQLite and PostgreSQL: leases, retries, release, and a
gateway restart that resumes what was queued (through HTTP, with a receiver on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from receiver import SECRET, Receiver, sample, start_receiver, until
from sqlalchemy import update

from conftest import NUMBER, Harness, MakeGateway, build_config
from conftest import FakeClock as WallClock
from gateway.callbacks import CallbackSender
from gateway.keys import callbacks_key
from gateway.store import NewMessage, Store, UnknownMessageError
from gateway.store.callbacks import CallbackQueue
from gateway.store.schema import messages

from .conftest import START, FakeClock


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Receiver]:
    found = await start_receiver(aiohttp_server)
    yield found
    found.released.set()


async def message(store: Store, message_id: str = "m1") -> str:
    await store.records.create(NewMessage(message_id, "", "verify_code", [NUMBER]))
    return message_id


async def test_claims_lease_retry_and_release(store: Store, clock: FakeClock) -> None:
    queue = CallbackQueue(store.database)
    assert (await queue.state()).depth == 0
    with pytest.raises(UnknownMessageError):
        await queue.enqueue("nope", "http://127.0.0.1/")
    assert await queue.enqueue(await message(store), "http://127.0.0.1/a") == "final"
    state = await queue.state()
    assert state.depth == 1 and state.next_due == START

    [job] = await queue.claim("one", 10, lease=40)
    assert (job.message_id, job.url, job.event, job.attempts) == ("m1", "http://127.0.0.1/a",
                                                                  "final", 1)
    assert job.created_at == START
    assert await queue.claim("two", 10, lease=40) == []  # leased
    assert (await queue.state()).next_due == START + 40
    clock.advance(40)  # the lease ran out (its holder died): claimed again
    [again] = await queue.claim("two", 10, lease=40)
    assert again.id == job.id and again.attempts == 2

    await queue.retry(job.id, clock.now + 5, "HTTP 500")
    assert await queue.claim("two", 10, lease=40) == []
    assert (await queue.state()).next_due == clock.now + 5
    clock.advance(5)
    [third] = await queue.claim("two", 10, lease=40)
    await queue.release([third.id])  # a stop: due at once, the attempt not counted
    [fourth] = await queue.claim("two", 10, lease=40)
    assert fourth.attempts == third.attempts
    await queue.remove(fourth.id)
    assert (await queue.state()).depth == 0


async def test_a_callback_after_a_receipt_is_a_delivery_event(store: Store) -> None:
    queue = CallbackQueue(store.database)
    await message(store)
    await store.database.write(lambda conn: conn.execute(
        update(messages).where(messages.c.id == "m1").values(status="delivered")))
    assert await queue.enqueue("m1", "http://127.0.0.1/") == "delivery"


async def test_claims_take_the_earliest_first_and_at_most_the_limit(store: Store,
                                                                    clock: FakeClock) -> None:
    queue = CallbackQueue(store.database)
    for index in range(5):
        await queue.enqueue(await message(store, f"m{index}"), "http://127.0.0.1/")
        clock.advance(1)
    first = await queue.claim("one", 2, lease=30)
    assert [j.message_id for j in first] == ["m0", "m1"]
    rest = await queue.claim("two", 10, lease=30)
    assert [j.message_id for j in rest] == ["m2", "m3", "m4"]


def config(url: str, **server: Any) -> str:
    return build_config(server={"callback_hosts": ["127.0.0.1"], "callback_secret": SECRET,
                                **server}, storage={"url": url})


def sender(gw: Harness) -> CallbackSender:
    app: web.Application | None = gw.client.app
    assert app is not None
    return app[callbacks_key]


async def test_a_restart_resumes_the_queue(make_gateway: MakeGateway, store_url: str,
                                           receiver: Receiver) -> None:
    wall = WallClock(START)
    gw = await make_gateway(config(store_url), wall_clock=wall)
    receiver.status = 500
    body = {"to": NUMBER, "template": "verify_code", "params": {"code": "1"},
            "callback_url": receiver.url}
    sent = await (await gw.client.post("/sms", json=body)).json()
    await receiver.next()
    await until(lambda: sample(gw, "retry") == 1)
    await gw.client.close()  # stopped with the callback waiting for its retry

    receiver.status = 200
    again = await make_gateway(config(store_url), wall_clock=wall)
    await until(lambda: sender(again).depth == 1)
    state = await (await again.client.get("/status")).json()
    assert state["callbacks"]["queued"] == 1
    wall.advance(5.0)
    sender(again).wake()
    got = await receiver.next()
    assert got.json()["id"] == sent["id"] and got.json()["status"] == "sent"
    await until(lambda: sample(again, "delivered") == 1)
    await until(lambda: sender(again).depth == 0)  # counted when the delivery is written


async def test_a_stop_gives_in_flight_callbacks_back(make_gateway: MakeGateway,
                                                     store_url: str,
                                                     receiver: Receiver) -> None:
    wall = WallClock(START)
    gw = await make_gateway(config(store_url), wall_clock=wall)
    receiver.hang = True
    body = {"to": NUMBER, "template": "verify_code", "params": {"code": "1"},
            "callback_url": receiver.url}
    await gw.client.post("/sms", json=body)
    await receiver.next()  # in flight, hanging
    await gw.client.close()  # cut short, its lease given back

    receiver.hang = False
    receiver.released.set()
    again = await make_gateway(config(store_url), wall_clock=wall)
    got = await receiver.next()  # due at once: no lease to wait out, no backoff
    assert got.json()["status"] == "sent"
    await until(lambda: sample(again, "delivered") == 1)
