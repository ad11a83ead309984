"""Async sends on each engine, through HTTP: a queued message outlives the process that took it
and is sent by the next one; a store that cannot be written answers 503 and queues nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conftest import NUMBER, Harness, MakeGateway, build_config
from gateway.store import FINAL

NOTICE = {"to": NUMBER, "template": "notice", "params": {"name": "Li", "time": "9:00"},
          "mode": "async"}


async def final(gw: Harness, message_id: str, within: float = 10.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        record: dict[str, Any] = await (await gw.client.get(f"/sms/{message_id}")).json()
        if record["status"] in FINAL or loop.time() > deadline:
            return record
        await asyncio.sleep(0.02)


async def test_a_queued_message_is_sent_by_the_next_process(make_gateway: MakeGateway,
                                                            store_url: str) -> None:
    intake = await make_gateway(build_config(storage={"url": store_url, "workers": 0}))
    response = await intake.client.post("/sms", json=NOTICE, headers={"Idempotency-Key": "a1"})
    assert response.status == 202
    queued = await response.json()
    await asyncio.sleep(0.1)
    assert (await final(intake, queued["id"], within=0))["status"] == "queued"  # nobody sends
    await intake.client.close()

    sender = await make_gateway(build_config(storage={"url": store_url}))
    done = await final(sender, queued["id"])
    assert done["status"] == "sent" and sender.accepted("aliyun", queued["id"]) == 1
    again = await sender.client.post("/sms", json=NOTICE, headers={"Idempotency-Key": "a1"})
    assert again.status == 202 and (await again.json())["id"] == queued["id"]
    assert sender.accepted("aliyun", queued["id"]) == 1


async def test_a_moved_store_file_queues_nothing(make_gateway: MakeGateway,
                                                 tmp_path: Path) -> None:
    gw = await make_gateway(build_config(storage={"url": f"sqlite:///{tmp_path}/gw.db"}))
    (tmp_path / "gw.db").rename(tmp_path / "away.db")
    refused = await gw.client.post("/sms", json=NOTICE)
    assert refused.status == 503
    assert (await refused.json())["type"].endswith("store-unavailable")
