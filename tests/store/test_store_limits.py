"""Limits in the store (issue 13, SPEC §10), each on SQLite and on PostgreSQL: concurrent sends
cannot overshoot (one gateway or two on one database), counts survive a restart, a limit that
cannot be checked is a 503, an admitted send that fails everywhere still counts and one that no
provider was asked for does not, old hits are pruned, and a check costs the same however many
sends came before it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import Connection, text

from conftest import NUMBER, FakeClock, Harness, MakeGateway, build_config
from gateway.store import Store
from gateway.store.limits import LimitCheck, LimitWindow, counting
from gateway.store.schema import limit_hits, to_us

from .conftest import START, Opener
from .conftest import FakeClock as StoreClock

OTHER = "+8613900139000"
BUCKET = "number|verify_code|" + NUMBER
OTP = (LimitWindow("1/1m", 1, 60.0), LimitWindow("5/1h", 5, 3600.0),
       LimitWindow("10/1d", 10, 86400.0))


def config(url: str, *rules: str) -> str:
    return build_config(storage={"url": url}) + "limits:\n" + "".join(
        f"  - {r}\n" for r in rules)


def sent(*gateways: Harness) -> int:
    emulators = {id(s): s for gw in gateways for s in gw.emulators.values()}
    return sum(s.state.counters["requests"] for s in emulators.values())


async def test_twenty_at_once_against_max_3_send_exactly_3(make_gateway: MakeGateway,
                                                           store_url: str) -> None:
    gw = await make_gateway(config(store_url, "{per: number, max: 3, window: 1h}"))
    answers = await asyncio.gather(*(gw.send() for _ in range(20)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 3 + [429] * 17
    assert sent(gw) == 3


async def test_two_gateways_on_one_database_share_the_counts(make_gateway: MakeGateway,
                                                             store_url: str) -> None:
    text_ = config(store_url, "{per: number, max: 4, window: 1h}")
    one, two = await make_gateway(text_), await make_gateway(text_)
    answers = await asyncio.gather(*(gw.send() for _ in range(10) for gw in (one, two)))
    assert sorted(a.status for a in answers) == [200] * 4 + [429] * 16
    assert sent(one, two) == 4


async def test_counts_survive_a_restart(make_gateway: MakeGateway, store_url: str) -> None:
    clock = FakeClock(START)
    text_ = config(store_url, "{per: number, template: verify_code, max: 1, window: 1h}")
    gw = await make_gateway(text_, wall_clock=clock)
    assert (await gw.send()).status == 200
    await gw.client.close()
    clock.advance(1800)
    again = await make_gateway(text_, wall_clock=clock)
    refused = await again.send()
    assert refused.status == 429 and refused.headers["Retry-After"] == "1800"
    clock.advance(1800)
    assert (await again.send()).status == 200


async def test_a_limit_that_cannot_be_checked_is_503_and_sends_nothing(
        make_gateway: MakeGateway, store_url: str) -> None:
    gw = await make_gateway(config(store_url, "{per: number, max: 3, window: 1h}"))
    assert (await gw.send()).status == 200
    await gw.gateway.store.database.write(
        lambda conn: conn.execute(text("DROP TABLE limit_hits")))
    refused = await gw.send(to=OTHER)
    assert refused.status == 503 and (await refused.json())["type"].endswith("store-unavailable")
    assert sent(gw) == 1


async def test_failing_everywhere_counts_and_never_calling_does_not(make_gateway: MakeGateway,
                                                                     store_url: str) -> None:
    gw = await make_gateway(config(store_url, "{per: number, max: 1, window: 1h}"))
    await gw.mode("aliyun", "down")
    await gw.mode("huawei", "down")
    assert (await gw.send()).status == 502  # a provider may have sent it: it counts
    await gw.mode("aliyun", "ok")
    await gw.mode("huawei", "ok")
    assert (await gw.send()).status == 429
    for name in ("aliyun", "huawei"):
        await gw.client.post(f"/admin/providers/{name}/open", json={})
    before = sent(gw)
    assert (await gw.send(to=OTHER)).status == 503  # no provider was asked: it does not count
    assert sent(gw) == before
    for name in ("aliyun", "huawei"):
        await gw.client.post(f"/admin/providers/{name}/close", json={})
    assert (await gw.send(to=OTHER)).status == 200


async def test_the_retention_task_prunes_hits_past_the_longest_window(
        make_gateway: MakeGateway, store_url: str) -> None:
    clock = FakeClock(START)
    text_ = config(store_url, "{per: number, max: 1, window: 1h}")
    gw = await make_gateway(text_, wall_clock=clock)
    assert (await gw.send()).status == 200
    assert (await gw.send(to=OTHER)).status == 200
    await gw.client.close()
    clock.advance(3600)  # the next start's first sweep: both are past the only window
    again = await make_gateway(text_, wall_clock=clock)
    async with asyncio.timeout(10):
        while await hits(again.gateway.store):
            await asyncio.sleep(0.01)
    assert (await again.send()).status == 200


async def test_windows_slide_and_retry_after_is_exact(store: Store, clock: StoreClock) -> None:
    check = [LimitCheck(BUCKET, 1, OTP)]
    admitted = []
    for step in range(4 * 60 + 1):  # a try every 30 s for two hours
        verdict = await store.limits.admit(check, f"m{step}")
        if verdict.admitted:
            admitted.append(clock.now - START)
        else:
            assert all(e.retry_after is not None and e.retry_after > 0
                       for e in verdict.exceeded)
        clock.advance(30)
    # 1 a minute, 5 an hour (the sixth as the first leaves the hour), 10 a day
    assert admitted == [0, 60, 120, 180, 240, 3600, 3660, 3720, 3780, 3840]
    clock.now = START + 86400 - 0.5  # the first is still in the day
    verdict = await store.limits.admit(check, "late")
    assert [(e.rule, e.retry_after) for e in verdict.exceeded] == [("10/1d", 0.5)]
    clock.advance(0.5)
    assert (await store.limits.admit(check, "next day")).admitted


async def test_a_sweep_prunes_hits_no_window_reads(store: Store, clock: StoreClock) -> None:
    for step in range(6):
        assert (await store.limits.admit([LimitCheck(BUCKET, 1, OTP[:1])], f"m{step}")).admitted
        clock.advance(61)
    assert await store.limits.prune(horizon=200) == 3  # older than 200 s: 366 - 200
    assert len(await hits(store)) == 3
    clock.advance(60)
    assert (await store.limits.admit([LimitCheck(BUCKET, 1, (LimitWindow("3/10m", 3, 600),))],
                                     "late")).admitted is False  # the 3 kept still count
    assert await store.limits.prune(horizon=0) == 3


async def test_a_refund_keeps_the_counts_exact(store: Store, clock: StoreClock) -> None:
    window = (LimitWindow("3/1h", 3, 3600.0),)
    verdicts = []
    for step in range(3):
        verdicts.append(await store.limits.admit([LimitCheck(BUCKET, 1, window)], f"m{step}"))
        clock.advance(1)
    await store.limits.refund(verdicts[1].hits)  # the middle one was never sent
    assert [seq for seq, _ in await hits(store)] == [1, 2]
    assert (await store.limits.admit([LimitCheck(BUCKET, 1, window)], "m3")).admitted
    assert not (await store.limits.admit([LimitCheck(BUCKET, 1, window)], "m4")).admitted


async def test_a_request_one_bucket_refuses_counts_in_none(store: Store,
                                                           clock: StoreClock) -> None:
    roomy, tight = (LimitWindow("10/1h", 10, 3600.0),), (LimitWindow("2/1h", 2, 3600.0),)
    both = [LimitCheck("a", 3, roomy), LimitCheck("b", 1, tight)]
    assert (await store.limits.admit(both, "m1")).admitted
    assert (await store.limits.admit([LimitCheck("b", 1, tight)], "m2")).admitted
    clock.advance(1)
    refused = await store.limits.admit(both, "m3")
    assert [(e.bucket, e.rule) for e in refused.exceeded] == [("b", "2/1h")]
    assert refused.exceeded[0].retry_after == 3599.0  # when m1's hit in "b" leaves the hour
    assert not refused.hits
    assert sorted(seq for seq, _ in await hits(store)) == [1, 1, 2, 2, 3]  # a: 1-3, b: 1-2
    assert (await store.limits.admit([LimitCheck("a", 7, roomy)], "m4")).admitted  # 3 + 7
    assert not (await store.limits.admit([LimitCheck("a", 1, roomy)], "m5")).admitted


async def hits(store: Store) -> list[tuple[int, int]]:
    def read(conn: Connection) -> list[tuple[int, int]]:
        rows = conn.execute(limit_hits.select().order_by(limit_hits.c.at)).mappings()
        return [(r["seq"], r["at"]) for r in rows]
    return await store.database.read(read)


# -- what one check costs ----------------------------------------------------------------------

PAST = 20_000  # sends before the check, outside its windows and in other buckets


async def _history(store: Store, past: int) -> None:
    """``past`` sends to the checked number a week ago and ``past`` to other numbers today."""
    week_ago, now = to_us(START - 7 * 86400), to_us(START)

    def write(conn: Connection) -> None:
        conn.execute(limit_hits.insert(), [
            {"bucket": BUCKET, "at": week_ago + i, "seq": i + 1} for i in range(past)])
        conn.execute(limit_hits.insert(), [
            {"bucket": f"number|verify_code|+86138{i:08d}", "at": now - 1000 + i % 999,
             "seq": 1} for i in range(past)])
        conn.execute(limit_hits.insert(), [  # and 9 inside the day window
            {"bucket": BUCKET, "at": now - 86_000_000_000 + i * 1_000_000_000, "seq": past + 1 + i}
            for i in range(9)])
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE limit_hits"))

    await store.database.write(write)


async def _sqlite_steps(store: Store) -> int:
    """Virtual-machine instructions SQLite runs for one check (its progress handler)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def hook(conn: Connection, on: bool) -> None:
        raw: Any = conn.connection.dbapi_connection
        raw.set_progress_handler(count if on else None, 1)

    await store.database.write(lambda conn: hook(conn, True))
    steps[0] = 0
    verdict = await store.limits.admit([LimitCheck(BUCKET, 1, OTP)], "checked")
    await store.database.write(lambda conn: hook(conn, False))
    assert verdict.admitted
    return steps[0]


async def _postgres_rows(store: Store) -> list[tuple[str, int]]:
    """Each scan of limit_hits in the check's plan (EXPLAIN ANALYZE): its kind and the rows it
    read (returned or filtered out)."""
    now = to_us(START)

    def explain(conn: Connection) -> list[tuple[str, int]]:
        sql, order, fixed = counting(len(OTP))._for(conn.dialect)
        params = {"b_bucket": BUCKET, **{f"b_after{i}": now - to_us(w.window)
                                         for i, w in enumerate(OTP)}}
        literal = sql
        values = [params.get(k, fixed.get(k)) for k in order]
        for index in reversed(range(len(values))):
            literal = literal.replace(f"${index + 1}", repr(values[index]))
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {literal}").scalar()
        return _scans(json.loads(plan) if isinstance(plan, str) else plan)

    return await store.database.read(explain)


def _scans(plan: Any) -> list[tuple[str, int]]:
    """(node type, rows read) of every scan node in a JSON plan."""
    if isinstance(plan, list):
        return [scan for p in plan for scan in _scans(p)]
    node = plan.get("Plan", plan)
    found = []
    if node.get("Relation Name") == "limit_hits":
        found.append((node["Node Type"], int(node.get("Actual Rows", 0))
                      + int(node.get("Rows Removed by Filter", 0))))
    return found + [scan for child in node.get("Plans", []) for scan in _scans(child)]


async def test_a_check_costs_the_same_whatever_came_before(store_url: str,
                                                           open_at: Opener) -> None:
    costs: list[Any] = []
    for past in (10, PAST):
        sqlite = store_url.startswith("sqlite")
        url = store_url.replace("store.db", f"store-{past}.db") if sqlite else store_url
        store = await open_at(url)
        await store.database.write(lambda conn: conn.execute(limit_hits.delete()))
        await _history(store, past)
        if sqlite:
            costs.append(await _sqlite_steps(store))
        else:
            costs.append(await _postgres_rows(store))
    if store_url.startswith("sqlite"):
        assert costs[0] == costs[1], costs  # not one step more for 2,000x the history
    else:  # one index seek per column, each reading one row (the planner may read a table of
        # 10 rows whole: that is its choice, and as cheap)
        assert len(costs[1]) == 2 + len(OTP), costs
        assert all(kind.startswith("Index") and rows <= 1 for kind, rows in costs[1]), costs

