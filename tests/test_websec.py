"""Cross-site request forgery: what a web page in an operator's browser can make the gateway do.

A page can send "simple" requests (text/plain, form bodies, no body) to any origin without a
CORS preflight; the gateway answers no preflight, so requiring JSON and refusing foreign Origins
keeps every state-changing route out of reach.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import TEST_CONFIG, Harness, MakeGateway
from gateway.websec import same_origin

JSON = {"Content-Type": "application/json"}


def own_origin(gw: Harness) -> str:
    return str(gw.client.make_url("/").origin())


@pytest.mark.parametrize("kwargs", [
    {"data": "{}", "headers": {"Content-Type": "text/plain"}},  # fetch(..., {mode: "no-cors"})
    {"data": {"x": "1"}},  # an HTML form
    {},  # no body, no content type: also a simple request
])
async def test_simple_cross_site_post_cannot_force_a_provider_open(
        gw: Harness, kwargs: dict[str, Any]) -> None:
    response = await gw.client.post("/admin/providers/aliyun/open", **kwargs)
    assert response.status == 415
    assert response.content_type == "application/problem+json"
    assert gw.state("aliyun") == "closed"


async def test_json_from_a_foreign_origin_is_forbidden(gw: Harness) -> None:
    for origin in ("http://evil.example", "null", own_origin(gw).replace("127.0.0.1", "localhost"),
                   own_origin(gw) + "1"):
        response = await gw.client.post("/admin/providers/aliyun/open", json={},
                                        headers={"Origin": origin})
        assert response.status == 403, origin
        assert (await response.json())["status"] == 403
    assert gw.state("aliyun") == "closed"


async def test_json_from_own_origin_or_a_script_works(gw: Harness) -> None:
    assert (await gw.client.post("/admin/providers/aliyun/open", json={},
                                 headers={"Origin": own_origin(gw)})).status == 200
    assert gw.state("aliyun") == "open"
    # curl and scripts send no Origin; an empty JSON body is fine
    assert (await gw.client.post("/admin/providers/aliyun/close", headers=JSON)).status == 200
    assert gw.state("aliyun") == "closed"


async def test_emulator_routes_on_the_gateway_are_guarded(gw: Harness) -> None:
    flip = await gw.client.post("/_emulator/aliyun/reset", data="x",
                                headers={"Content-Type": "text/plain"})
    assert flip.status == 415
    foreign = await gw.client.post("/_emulator/aliyun", json={"mode": "down"},
                                   headers={"Origin": "http://evil.example"})
    assert foreign.status == 403
    assert gw.emulators["aliyun"].state.mode == "ok"
    assert (await gw.client.post("/_emulator/aliyun", json={"mode": "fail"})).status == 200
    assert gw.emulators["aliyun"].state.mode == "fail"


async def test_emulator_routes_need_an_admin_key_when_auth_is_on(
        make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace(
        "api_keys: []", "api_keys: [k-one, {name: ops, key: k-ops, rights: [admin]}]"))
    for method, path in (("GET", "/_emulator"), ("GET", "/_emulator/aliyun"),
                         ("POST", "/_emulator/aliyun"), ("POST", "/_emulator/aliyun/reset")):
        response = await gw.client.request(method, path, json={"mode": "down"})
        assert response.status == 401, path
        assert response.content_type == "application/problem+json"
    assert gw.emulators["aliyun"].state.mode == "ok"
    plain = {"Authorization": "Bearer k-one"}  # may send and read, not switch emulators
    refused = await gw.client.post("/_emulator/aliyun", json={"mode": "fail"}, headers=plain)
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    assert (await gw.client.get("/_emulator", headers=plain)).status == 403
    key = {"Authorization": "Bearer k-ops"}
    assert (await gw.client.get("/_emulator", headers=key)).status == 200
    changed = await gw.client.post("/_emulator/aliyun", json={"mode": "fail"}, headers=key)
    assert changed.status == 200
    assert gw.emulators["aliyun"].state.mode == "fail"


async def test_send_keeps_its_own_json_check_and_counts_it(gw: Harness) -> None:
    plain = await gw.client.post("/sms", data="{}", headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_requests_total{status="415"} 1.0' in metrics


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://gw.example", "gw.example", True),
    ("http://gw.example:80", "gw.example", True),
    ("https://gw.example", "gw.example", True),  # TLS ends at a proxy that keeps Host
    ("https://GW.example", "gw.example:443", True),
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
    ("http://gw.example", "gw.example:8080", False),
    ("https://gw.example.evil", "gw.example", False),
    ("null", "gw.example", False),
    ("file://", "gw.example", False),
    ("http://gw.example/path", "gw.example", False),
    ("http://gw.example", "", False),
    ("http://[::1", "gw.example", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


async def test_dashboard_offers_no_emulator_menu_that_would_need_a_key(
        make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("api_keys: []", "api_keys: [k-one]"))
    page = await (await gw.client.get("/")).text()
    assert 'class="emu-mode' not in page
    assert ("auth is on: switch modes with POST /_emulator/aliyun and a key with the admin right"
            in page)


async def test_standalone_emulator_control_port_is_guarded(
        unused_tcp_port_factory: Callable[[], int]) -> None:
    port = unused_tcp_port_factory()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.emulators.cli", "--port", "0", "--control-port",
        str(port), "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1])
    assert process.stdout is not None
    url = f"http://127.0.0.1:{port}/_emulator/aliyun"
    try:
        for _ in range(3):  # aliyun, huawei, control: listening
            await asyncio.wait_for(process.stdout.readline(), 10)
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/reset", data="x",
                                 headers={"Content-Type": "text/plain"}) as response:
                assert response.status == 415
            async with http.post(url, json={"mode": "down"},
                                 headers={"Origin": "http://evil.example"}) as response:
                assert response.status == 403
            async with http.get(url) as response:
                assert (await response.json())["mode"] == "ok"
            async with http.post(url, json={"mode": "fail"}) as response:
                assert response.status == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
