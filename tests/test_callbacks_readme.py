"""The README's signature check (section "Status callbacks") run against a real callback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from receiver import SECRET, Receiver, start_receiver
from test_readme import section

from conftest import NUMBER, MakeGateway, build_config
from gateway.callbacks import sign


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Receiver]:
    found = await start_receiver(aiohttp_server)
    yield found
    found.released.set()


def readme_verify() -> Any:
    blocks = re.findall(r"```python\n(.*?)```", section("Status callbacks"), re.S)
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 14  # the "10-line example" stays short
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["verify"]


async def test_the_readme_example_verifies_a_real_callback(make_gateway: MakeGateway,
                                                           receiver: Receiver) -> None:
    verify = readme_verify()
    gw = await make_gateway(build_config(server={"callback_hosts": ["127.0.0.1"],
                                                 "callback_secret": SECRET}))
    response = await gw.client.post("/sms", json={
        "to": NUMBER, "template": "verify_code", "params": {"code": "1"},
        "callback_url": receiver.url})
    assert response.status == 200
    got = await receiver.next()
    assert verify(SECRET.encode(), got.headers, got.body)
    assert not verify(b"another secret", got.headers, got.body)
    assert not verify(SECRET.encode(), got.headers, got.body.replace(b"sent", b"sant"))
    stale = {**got.headers, "X-SMS-Gateway-Timestamp": "1000000000",  # signed, but old
             "X-SMS-Gateway-Signature": sign(SECRET, "1000000000", got.body)}
    assert not verify(SECRET.encode(), stale, got.body)
