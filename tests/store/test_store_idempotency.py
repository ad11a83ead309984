"""Durable Idempotency-Key claims: one key sends once, also across store instances."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gateway.store import KeyConflict, New, Replay, Store, body_hash

from .conftest import FakeClock, Opener

BODY = body_hash(b'{"to": ["+8613800138000"], "template": "verify_code"}')
OTHER = body_hash(b'{"to": ["+8613900139000"], "template": "verify_code"}')
ANSWER = {"id": "m1", "status": "sent", "provider": "aliyun"}


async def test_claim_conflict_complete_replay(store: Store) -> None:
    assert await store.idempotency.claim("app", "k1", BODY, "m1") == New()
    assert await store.idempotency.claim("app", "k1", BODY) == KeyConflict("in_flight")
    assert await store.idempotency.claim("app", "k1", OTHER) == KeyConflict("different_body")
    await store.idempotency.complete("app", "k1", 200, ANSWER)
    assert await store.idempotency.claim("app", "k1", BODY) == Replay(200, ANSWER, "m1")
    assert await store.idempotency.claim("app", "k1", OTHER) == KeyConflict("different_body")
    # Keys are per caller: another caller's k1 is another key.
    assert await store.idempotency.claim("ops", "k1", OTHER) == New()


async def test_release_frees_only_an_in_flight_key(store: Store) -> None:
    assert await store.idempotency.claim("app", "k1", BODY) == New()
    await store.idempotency.release("app", "k1")
    assert await store.idempotency.claim("app", "k1", OTHER) == New()
    await store.idempotency.complete("app", "k1", 502, {"status": 502})
    await store.idempotency.release("app", "k1")
    assert await store.idempotency.claim("app", "k1", OTHER) == Replay(502, {"status": 502}, None)


async def test_keys_expire_after_their_ttl(store_url: str, open_at: Opener,
                                           clock: FakeClock) -> None:
    store = await open_at(store_url, idempotency_ttl=60)
    assert await store.idempotency.claim("app", "k1", BODY) == New()
    await store.idempotency.complete("app", "k1", 200, ANSWER)
    assert await store.idempotency.claim("app", "k2", BODY) == New()
    clock.advance(59)
    assert isinstance(await store.idempotency.claim("app", "k1", BODY), Replay)
    clock.advance(1)
    # Past its ttl a key is free again, even before the sweep removed it.
    assert await store.idempotency.claim("app", "k1", OTHER) == New()
    assert await store.idempotency.expire(batch=1) == 1  # k2; k1 was claimed anew
    assert await store.idempotency.claim("app", "k2", OTHER) == New()


async def test_concurrent_claims_from_two_stores_yield_one_new(store_url: str,
                                                               open_at: Opener) -> None:
    first = await open_at(store_url)
    second = await open_at(store_url)  # its own connections, as another process would have
    claims = [store.idempotency.claim("app", "shared", BODY)
              for _ in range(6) for store in (first, second)]
    results = await asyncio.gather(*claims)
    assert results.count(New()) == 1
    assert all(result == KeyConflict("in_flight") for result in results if result != New())


CLAIMER = """
import asyncio, json, pathlib, sys
from gateway.store import New, open_store

async def main(url: str, go: str) -> None:
    store = await open_store(url)
    print("ready", flush=True)
    while not pathlib.Path(go).exists():  # start together: the race is the point
        await asyncio.sleep(0.005)
    results = await asyncio.gather(*(store.idempotency.claim("app", "k", "h") for _ in range(8)))
    await store.close()
    print(json.dumps([type(r).__name__ for r in results]), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_concurrent_claims_from_two_processes_yield_one_new(
        store_url: str, open_at: Opener, tmp_path: Path) -> None:
    await (await open_at(store_url)).close()  # migrated before the race
    go = tmp_path / "go"
    claimers = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLAIMER, store_url, str(go),
        stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    for claimer in claimers:
        assert claimer.stdout is not None
        assert (await asyncio.wait_for(claimer.stdout.readline(), 60)).strip() == b"ready"
    go.touch()
    outputs = [await asyncio.wait_for(claimer.communicate(), 60) for claimer in claimers]
    assert [claimer.returncode for claimer in claimers] == [0, 0]
    names = [name for out, _ in outputs for name in json.loads(out)]
    assert names.count("New") == 1, names
    assert names.count("KeyConflict") == len(names) - 1


async def test_complete_keeps_the_message_id_it_is_given_or_the_claim_s(store: Store) -> None:
    assert await store.idempotency.claim("app", "k9", BODY) == New()
    await store.idempotency.complete("app", "k9", 200, ANSWER, "m9")
    assert await store.idempotency.claim("app", "k9", BODY) == Replay(200, ANSWER, "m9")
    assert await store.idempotency.claim("app", "k10", BODY, "m10") == New()
    await store.idempotency.complete("app", "k10", 422, ANSWER)
    assert await store.idempotency.claim("app", "k10", BODY) == Replay(422, ANSWER, "m10")
