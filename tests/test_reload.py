"""Hot reload: a good edit applies live, a bad edit keeps the running config and says why."""

from __future__ import annotations

import asyncio
import time

from conftest import TEST_CONFIG, Harness, MakeGateway
from gateway.config import Config
from gateway.reload import reload_now

SWAPPED = TEST_CONFIG.replace("priority: 1", "priority: 9")  # huawei (2) now goes first


async def test_good_edit_changes_routing_and_keeps_breaker_state(gw: Harness) -> None:
    await gw.mode("huawei", "down")
    await gw.client.post("/admin/providers/huawei/open", json={})
    gw.config_path.write_text(SWAPPED)
    assert await reload_now(gw.gateway)
    doc = await (await gw.client.get("/status")).json()
    assert doc["config"]["generation"] == 2
    assert [p["name"] for p in doc["providers"]] == ["huawei", "aliyun"]
    assert doc["providers"][0]["state"] == "open"  # survived the reload
    await gw.client.post("/admin/providers/huawei/close", json={})
    await gw.mode("huawei", "ok")
    assert (await (await gw.send()).json())["provider"] == "huawei"


async def test_bad_edit_keeps_running_config_and_reports(gw: Harness) -> None:
    gw.config_path.write_text(TEST_CONFIG + "bogus: true\n")
    assert not await reload_now(gw.gateway)
    doc = await (await gw.client.get("/status")).json()
    assert doc["config"]["generation"] == 1
    assert "bogus: unknown key" in doc["config"]["reload_error"]
    page = await (await gw.client.get("/")).text()
    assert "bogus: unknown key" in page
    assert (await gw.send()).status == 200  # still serving on the last good config
    gw.config_path.unlink()
    assert not await reload_now(gw.gateway)
    assert "file not found" in (gw.gateway.runtime.reload.error or "")
    gw.config_path.write_text(TEST_CONFIG)
    assert await reload_now(gw.gateway)
    assert gw.gateway.runtime.reload.error is None


async def test_in_flight_send_finishes_on_its_own_config(gw: Harness) -> None:
    await gw.mode("aliyun", "latency", 400)
    task = asyncio.create_task(gw.send())
    async with asyncio.timeout(5):  # until it is on the wire, on the config it began with
        while gw.emulators["aliyun"].state.counters["requests"] == 0:
            await asyncio.sleep(0.005)
    gw.config_path.write_text(SWAPPED)
    assert await reload_now(gw.gateway)
    body = await (await task).json()
    assert body["provider"] == "aliyun"


async def test_file_edits_are_picked_up_by_the_watcher(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(watch=True)
    for attempt in range(100):  # up to 10 s: inotify plus a 300 ms debounce
        if attempt % 10 == 0:  # written again each second: the watcher may start late
            gw.config_path.write_text(SWAPPED)
        if gw.gateway.runtime.reload.generation >= 2:
            break
        await asyncio.sleep(0.1)
    assert gw.gateway.runtime.reload.generation == 2
    assert (await (await gw.send()).json())["provider"] == "huawei"


async def test_reloads_run_one_at_a_time(gw: Harness) -> None:
    loader = gw.gateway.loader
    assert loader is not None
    running, most = 0, 0

    def slow_loader() -> Config:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.05)  # in the reload's worker thread
        running -= 1
        return loader()

    gw.gateway.loader = slow_loader
    results = await asyncio.gather(*(reload_now(gw.gateway) for _ in range(4)))
    assert results == [True] * 4
    assert most == 1  # a file change and a SIGHUP together never interleave
    assert gw.gateway.runtime.reload.generation == 5


async def test_a_repeat_is_replayed_even_if_a_reload_made_its_body_invalid(gw: Harness) -> None:
    first = await gw.send(headers={"Idempotency-Key": "k1"})
    assert first.status == 200
    gw.config_path.write_text(TEST_CONFIG.replace("params: [code]", "params: [code, minutes]"))
    assert await reload_now(gw.gateway)
    assert (await gw.send()).status == 422  # the body is no longer valid for a new send
    again = await gw.send(headers={"Idempotency-Key": "k1"})
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    assert gw.emulators["aliyun"].state.counters["accepted"] == 1
