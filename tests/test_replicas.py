"""Replicas on one PostgreSQL database behave as one gateway (SPEC §11): real processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gatewayproc import Gateway, free_port, run_cli, sandbox_config
from replicas import (  # noqa: F401 - the fixtures
    Replicas,
    eventually,
    replica_db_fixture,
    replica_server_fixture,
    replicas_fixture,
    two_replicas,
    via_port,
)
from tcpproxy import CuttableProxy


async def provider_row(replicas: Replicas, gateway: Gateway, name: str) -> dict[str, Any]:
    _, status = await replicas.call(gateway, "GET", "/status")
    row: dict[str, Any] = next(p for p in status["providers"] if p["name"] == name)
    return row


async def test_an_idempotent_replay_on_the_other_replica_contacts_no_provider(
        replicas: Replicas) -> None:
    status, first = await replicas.send(replicas.a, key="order-42")
    assert status == 200, first
    called = replicas.provider_requests()
    assert called == 1
    async with replicas.session.post(replicas.b.url + "/sms", json=dict(
            to=["+8613800138000"], template="verify_code", params={"code": "1234"}),
            headers={"Idempotency-Key": "order-42"}) as response:
        again = await response.json()
        assert response.status == 200
        assert response.headers["Idempotent-Replayed"] == "true"
    assert again["id"] == first["id"]
    assert replicas.provider_requests() == called  # B sent nothing
    status, record = await replicas.call(replicas.b, "GET", f"/sms/{first['id']}")
    assert status == 200 and record["status"] == "sent"


async def test_an_operator_force_open_on_a_is_seen_by_b_within_5s(replicas: Replicas) -> None:
    status, _ = await replicas.call(replicas.a, "POST", "/admin/providers/aliyun/open", {})
    assert status == 200

    async def b_forced() -> bool:
        row = await provider_row(replicas, replicas.b, "aliyun")
        return bool(row["state"] == "open" and row["forced"])

    assert await eventually(b_forced, within=5.0) < 5.0
    before = replicas.emulators["aliyun"].state.counters["requests"]
    status, body = await replicas.send(replicas.b)
    assert status == 200 and body["provider"] == "huawei"  # B skips the forced-open one
    assert replicas.emulators["aliyun"].state.counters["requests"] == before

    await replicas.call(replicas.a, "POST", "/admin/providers/aliyun/close", {})

    async def b_closed() -> bool:
        row = await provider_row(replicas, replicas.b, "aliyun")
        return bool(row["state"] == "closed" and not row["forced"])

    assert await eventually(b_closed, within=5.0) < 5.0


async def test_an_account_level_disable_met_by_a_is_seen_by_b(replicas: Replicas) -> None:
    replicas.emulators["aliyun"].state.set_mode("disabled")
    status, body = await replicas.send(replicas.a)
    assert status == 200 and body["provider"] == "huawei"  # failed over
    assert (await provider_row(replicas, replicas.a, "aliyun"))["state"] == "disabled"

    async def b_disabled() -> bool:
        return bool((await provider_row(replicas, replicas.b, "aliyun"))["state"] == "disabled")

    assert await eventually(b_disabled, within=5.0) < 5.0
    before = replicas.emulators["aliyun"].state.counters["requests"]
    status, body = await replicas.send(replicas.b)
    assert status == 200 and body["provider"] == "huawei"
    assert replicas.emulators["aliyun"].state.counters["requests"] == before


async def test_status_lists_every_replica_alive_with_its_breakers(replicas: Replicas) -> None:
    async def both_listed() -> bool:
        _, status = await replicas.call(replicas.a, "GET", "/status")
        return len(status["cluster"]["replicas"]) == 2 and all(
            r["seen_s_ago"] is not None for r in status["cluster"]["replicas"])

    await eventually(both_listed, within=10.0)
    _, status = await replicas.call(replicas.b, "GET", "/status")
    cluster = status["cluster"]
    assert cluster["store_up"] is True
    ids = [r["id"] for r in cluster["replicas"]]
    assert len(set(ids)) == 2 and cluster["id"] in ids
    assert str(replicas.b.process.pid) in cluster["id"]
    for replica in cluster["replicas"]:
        assert replica["breakers"]["aliyun"]["state"] == "closed"
    async with replicas.session.get(replicas.b.url + "/") as page:
        html = await page.text()
    assert 'data-testid="replicas"' in html and ids[0] in html and ids[1] in html


async def test_a_store_cut_off_answers_503_then_recovers_by_itself(tmp_path: Path,
                                                                   replica_db: str) -> None:
    proxy = CuttableProxy("127.0.0.1", 5432)
    await proxy.start()
    try:
        async with two_replicas(tmp_path, [via_port(replica_db, proxy.port)]) as one:
            gateway = one.a
            status, _ = await one.send(gateway)
            assert status == 200
            await proxy.cut()
            called = one.provider_requests()
            # the first send meets the dead connection; every later one is refused at once
            for _ in range(5):
                status, body = await one.send(gateway)
                assert status == 503, body
                assert body["type"].endswith(":store-unavailable")
            assert one.provider_requests() == called  # nothing sent that was not recorded
            status, body = await one.call(gateway, "GET", "/readyz")
            assert status == 503 and body["type"].endswith(":store-unavailable")
            await proxy.restore()

            async def ready() -> bool:
                return (await one.call(gateway, "GET", "/readyz"))[0] == 200

            await eventually(ready, within=15.0)
            status, body = await one.send(gateway)
            assert status == 200, body
            log = one.console(0)
            assert log.count("store down:") == 1 and log.count("store back:") == 1
            assert "Traceback" not in log
    finally:
        await proxy.stop()


async def test_a_store_unreachable_at_start_does_not_stop_the_gateway(
        tmp_path: Path, replica_db: str) -> None:
    proxy = CuttableProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()  # the port is known, nothing listens: "connection refused"
    try:
        async with two_replicas(tmp_path, [via_port(replica_db, proxy.port)]) as one:
            status, body = await one.send(one.a)
            assert status == 503 and body["type"].endswith(":store-unavailable")
            assert (await one.call(one.a, "GET", "/readyz"))[0] == 503
            await proxy.restore()

            async def sends() -> bool:
                return (await one.send(one.a))[0] == 200

            await eventually(sends, within=15.0)  # migrated, then serving
            log = one.console(0)
            assert log.count("store down:") == 1 and "Traceback" not in log
    finally:
        await proxy.stop()


async def test_a_send_in_flight_when_the_store_goes_is_recorded_when_it_returns(
        tmp_path: Path, replica_db: str) -> None:
    proxy = CuttableProxy("127.0.0.1", 5432)
    await proxy.start()
    try:
        async with two_replicas(tmp_path, [via_port(replica_db, proxy.port)]) as one:
            one.emulators["aliyun"].state.set_mode("latency", 1500)
            sending = asyncio.ensure_future(one.send(one.a))
            await eventually(  # the record is written, the provider call is under way
                _true_when(lambda: one.emulators["aliyun"].state.counters["requests"] == 1),
                within=10.0)
            await proxy.cut()
            status, body = await sending
            assert status == 200 and body["status"] == "sent"  # the caller gets its answer
            await proxy.restore()

            async def recorded() -> bool:
                status, record = await one.call(one.a, "GET", f"/sms/{body['id']}")
                return status == 200 and record["status"] == "sent"

            await eventually(recorded, within=15.0)
            log = one.console(0)
            assert "recorded when the store is back" in log and "1 late write recorded" in log
    finally:
        await proxy.stop()


def _true_when(condition: Callable[[], bool]) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return condition()
    return check


async def test_a_wrong_user_or_database_is_a_clear_startup_error_without_the_password(
        tmp_path: Path, replica_db: str) -> None:
    for wrong, expected in ((replica_db.replace("postgres@", "nobody_here:s3cretpw@", 1),
                             'role "nobody_here" does not exist'),
                            (via_port(replica_db, 5432).rsplit("/", 1)[0].replace(
                                "postgres@", "postgres:s3cretpw@", 1) + "/no_such_db_here",
                             'database "no_such_db_here" does not exist')):
        config = tmp_path / "wrong.yaml"
        config.write_text(sandbox_config() + f"storage:\n  url: {wrong}\n")
        done = await asyncio.to_thread(run_cli, "--config", str(config), "--port",
                                       str(free_port()))
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert expected in output and "not starting" in output
        assert "s3cretpw" not in output and ":***@" in output


async def test_a_replica_cut_off_from_the_store_leaves_the_other_serving(
        tmp_path: Path, replica_db: str) -> None:
    proxy = CuttableProxy("127.0.0.1", 5432)
    await proxy.start()
    try:
        async with two_replicas(tmp_path, [via_port(replica_db, proxy.port),
                                           replica_db]) as pair:
            await proxy.cut()
            await pair.send(pair.a)  # meets the dead connection
            assert (await pair.call(pair.a, "GET", "/readyz"))[0] == 503  # the LB drops A
            assert (await pair.call(pair.b, "GET", "/readyz"))[0] == 200
            status, body = await pair.send(pair.b)
            assert status == 200
            _, status_doc = await pair.call(pair.a, "GET", "/status")
            assert status_doc["cluster"]["store_up"] is False
            assert status_doc["cluster"]["store_error"]
            await proxy.restore()

            async def a_reads_b_s_record() -> bool:
                status, record = await pair.call(pair.a, "GET", f"/sms/{body['id']}")
                return status == 200 and record["status"] == "sent"

            await eventually(a_reads_b_s_record, within=15.0)
    finally:
        await proxy.stop()
