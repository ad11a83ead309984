"""Store outages through HTTP on one process: what waits for the store's return (SPEC §11)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import MakeGateway
from gateway.store import StoreUnavailableError


async def test_a_key_claimed_just_before_an_outage_is_freed_when_the_store_returns(
        make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await make_gateway()
    store = gw.gateway.store
    real_create, real_release = store.records.create, store.idempotency.release
    calls = {"release": 0}

    async def create_fails(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("the store cannot be written: connection is closed")

    async def release_fails(*args: Any, **kwargs: Any) -> None:
        calls["release"] += 1
        if calls["release"] == 1:  # still away when the send gives up
            raise StoreUnavailableError("the store cannot be written: connection is closed")
        await real_release(*args, **kwargs)

    monkeypatch.setattr(store.records, "create", create_fails)
    monkeypatch.setattr(store.idempotency, "release", release_fails)
    response = await gw.send(headers={"Idempotency-Key": "k-outage"})
    assert response.status == 503  # the claim was taken, the record could not be: not sent
    assert (await response.json())["type"].endswith(":store-unavailable")
    monkeypatch.setattr(store.records, "create", real_create)
    assert len(gw.gateway.late) == 1
    assert await gw.gateway.late.flush() == 1  # what "store back" does
    response = await gw.send(headers={"Idempotency-Key": "k-outage"})
    assert response.status == 200  # the key was free again, not "in flight" for 24 h
