"""Failover for each error class, and the breaker seen through HTTP."""

from __future__ import annotations

import pytest

from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from gateway.service import _refused


@pytest.mark.parametrize(("mode", "aliyun_outcome", "breaker_after_one"), [
    ("down", "failed", "closed"),        # connection refused: certainly not sent
    ("throttle", "failed", "open"),      # Throttling.User: back off until x-acs-retry-after
    ("disabled", "failed", "disabled"),  # isv.AMOUNT_NOT_ENOUGH: account-level
    ("fail", "unknown", "closed"),       # isp.SYSTEM_ERROR: maybe sent (template allows failover)
    ("html", "unknown", "closed"),       # a proxy's 502 page: maybe sent
    ("hang", "unknown", "closed"),       # timeout after the request left: maybe sent
])
async def test_failover_by_error_class(gw: Harness, mode: str, aliyun_outcome: str,
                                       breaker_after_one: str) -> None:
    await gw.mode("aliyun", mode)
    response = await gw.send(template="verify_code")
    assert response.status == 200
    body = await response.json()
    assert body["provider"] == "huawei"
    assert [(a["provider"], a["outcome"]) for a in body["attempts"]] == [
        ("aliyun", aliyun_outcome), ("huawei", "accepted")]
    assert body["attempts"][0]["error"]
    assert gw.state("aliyun") == breaker_after_one
    assert gw.accepted("huawei", body["id"]) == 1
    assert gw.emulators["aliyun"].state.accepted[body["id"]] == 0


async def test_breaker_opens_after_threshold_then_skips_the_provider(gw: Harness) -> None:
    await gw.mode("aliyun", "down")
    for _ in range(3):  # consecutive_failures: 3 in the test config
        assert (await gw.send()).status == 200
    assert gw.state("aliyun") == "open"
    requests_before = gw.emulators["huawei"].state.counters["requests"]
    body = await (await gw.send()).json()
    assert [(a["provider"], a["outcome"]) for a in body["attempts"]] == [
        ("aliyun", "skipped"), ("huawei", "accepted")]
    assert gw.emulators["huawei"].state.counters["requests"] == requests_before + 1


async def test_admin_reset_closes_and_clears_counts(gw: Harness) -> None:
    await gw.mode("aliyun", "disabled")
    await gw.send()
    assert gw.state("aliyun") == "disabled"
    await gw.mode("aliyun", "ok")
    response = await gw.client.post("/admin/providers/aliyun/reset", json={})
    assert response.status == 200
    row = await response.json()
    assert row["state"] == "closed"
    assert row["counts"]["failed"] == 0
    assert (await (await gw.send()).json())["provider"] == "aliyun"
    assert (await gw.client.post("/admin/providers/nope/open", json={})).status == 404
    assert (await gw.client.post("/admin/providers/aliyun/explode", json={})).status == 404


async def test_disabled_provider_in_config_is_never_tried(make_gateway: MakeGateway) -> None:
    text = TEST_CONFIG.replace("    priority: 1\n", "    priority: 1\n    enabled: false\n")
    gw = await make_gateway(text)
    body = await (await gw.send()).json()
    assert [a["provider"] for a in body["attempts"]] == ["huawei"]
    assert gw.emulators["aliyun"].state.counters["requests"] == 0


async def test_routes_pick_providers_by_template(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG + """\
routes:
  - match: {template: [notice], country: [CN]}
    providers: [huawei]
""")
    body = await (await gw.send(template="notice", params={"name": "A", "time": "B"})).json()
    assert body["provider"] == "huawei"
    assert [a["provider"] for a in body["attempts"]] == ["huawei"]
    body = await (await gw.send(template="verify_code")).json()
    assert body["provider"] == "aliyun"
    # a US number does not match the CN-only route: default order
    body = await (await gw.send(template="notice", to=["+16502530000"],
                                params={"name": "A", "time": "B"})).json()
    assert body["provider"] == "aliyun"


async def test_huawei_gets_template_params_in_declared_order(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("priority: 2", "priority: 0"))
    body = await (await gw.send(template="notice",
                                params={"time": "9:00", "name": "Ann"})).json()
    assert body["provider"] == "huawei"
    assert gw.emulators["huawei"].state.messages[-1]["params"] == ["Ann", "9:00"]


async def test_equal_priorities_share_traffic_by_weight(make_gateway: MakeGateway) -> None:
    text = TEST_CONFIG.replace("priority: 2", "priority: 1\n    weight: 3")
    gw = await make_gateway(text)
    used = [(await (await gw.send()).json())["provider"] for _ in range(80)]
    assert 35 <= used.count("huawei") <= 78  # expected 60 of 80
    assert used.count("aliyun") >= 2


async def test_a_batch_sent_in_part_names_the_refused_recipients(make_gateway: MakeGateway
                                                                 ) -> None:
    gw = await make_gateway(TEST_CONFIG.replace("priority: 2", "priority: 0"))  # huawei first
    limited = "+8613900099915"  # the Huawei emulator's magic number: per-number E200015
    response = await gw.send(to=[NUMBER, limited])
    assert response.status == 200
    body = await response.json()
    assert body["provider"] == "huawei" and body["to"] == [NUMBER, limited]
    assert body["refused"] == [{"to": limited, "error": "E200015"}]
    [message] = gw.emulators["huawei"].state.messages
    assert message["to"] == [NUMBER]  # the rest of the batch went out, once
    assert gw.emulators["aliyun"].state.counters["requests"] == 0  # never failed over
    record = await (await gw.client.get(f"/sms/{body['id']}")).json()
    assert record["refused"] == [{"index": 1, "to": "+86139******15", "error": "E200015"}]
    page = await (await gw.client.get("/")).text()
    assert 'class="to refused"' in page and "refused E200015" in page
    assert page.count('class="to refused"') == 1  # the other number went out
    twin = "+8613912345615"  # masks like the limited number: +86139******15
    both = await (await gw.send(to=[twin, limited])).json()
    assert both["refused"] == [{"to": limited, "error": "E200015"}]
    page = await (await gw.client.get("/")).text()
    assert page.count('class="to refused"') == 2  # one per batch: never the twin
    plain = await (await gw.send()).json()
    assert "refused" not in plain  # only when there is something to say
    alone = await gw.send(to=[limited])
    assert alone.status == 429  # every recipient limited: the per-recipient limit answer
    assert gw.emulators["aliyun"].state.counters["requests"] == 0


def test_refused_recipients_are_matched_to_ours_by_digits() -> None:
    to = ("+8613800138000", "+8613900099915")
    assert _refused(to, (("8613900099915", "E200015"), ("+15550001111", "E200041"))) == [
        (1, "+8613900099915", "E200015"),  # Huawei may leave out the +
        (-1, "+15550001111", "E200041"),  # not ours (it should not happen): kept as written
    ]
