"""Limits (issue 13, SPEC §10) through HTTP against the emulators: refusals with Retry-After,
sliding windows on an injected clock, every kind of rule, trusted numbers, the country
allow-list, reloads, config errors with file and line, and what people see (/status, the
dashboard, /metrics, the admin route). Store-touching properties on both engines (concurrency,
restarts, cost per check) are in tests/store/test_store_limits.py."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bench.limits_case import check_cost, default_rules
from conftest import NUMBER, FakeClock, Harness, MakeGateway, build_config
from gateway.config import ConfigError, load_config
from gateway.reload import reload_now

OTHER = "+8613900139000"
HK = "+85251234567"
OTP = "{per: number, template: verify_code, max: 1, window: 1m}"
REPO = Path(__file__).resolve().parent.parent


def limited(*rules: str, server: dict[str, Any] | None = None, tail: str = "") -> str:
    """The test config with these ``limits:`` rules (YAML flow mappings) and more text."""
    text = build_config(server=server) + "limits:\n" + "".join(f"  - {r}\n" for r in rules)
    return text + tail


def sent(gw: Harness) -> int:
    """Sends that reached a provider (the emulators count every request)."""
    return sum(server.state.counters["requests"] for server in gw.emulators.values())


async def test_a_second_code_within_the_minute_is_refused_with_retry_after(
        make_gateway: MakeGateway) -> None:
    clock = FakeClock(1_800_000_000.0)
    gw = await make_gateway(limited(OTP), wall_clock=clock)
    assert (await gw.send()).status == 200
    clock.advance(20.2)
    refused = await gw.send()
    assert refused.status == 429 and refused.content_type == "application/problem+json"
    assert refused.headers["Retry-After"] == "40"  # 39.8 s until the first leaves the window
    body = await refused.json()
    assert body["errors"] == [{"field": "to", "to": "+86138******00",
                               "limit": "number:verify_code:1/1m",
                               "message": "at most 1 per 1m per number", "retry_after": 40}]
    assert "13800138000" not in await refused.text()
    assert sent(gw) == 1  # no provider was called
    record = await (await gw.client.get(f"/sms/{body['id']}")).json()
    assert record["status"] == "rate_limited" and record["http_status"] == 429
    assert "number:verify_code:1/1m" in record["error"] and record["attempts"] == []
    assert (await gw.send(to=OTHER)).status == 200  # another number has its own count
    assert (await gw.send("notice", params={"name": "A", "time": "B"})).status == 200
    clock.advance(39.8)  # exactly a minute after the first: it has left the window
    assert (await gw.send()).status == 200


async def test_the_window_slides_never_more_than_max_in_any_interval(
        make_gateway: MakeGateway) -> None:
    clock = FakeClock(1_800_000_000.0)
    gw = await make_gateway(limited("{per: number, max: 3, window: 10s}"), wall_clock=clock)
    admitted: list[float] = []
    for _ in range(40):  # a send every 1.5 s, against 3 per 10 s
        if (await gw.send()).status == 200:
            admitted.append(clock.now)
        clock.advance(1.5)
    # never a fourth inside any 10 s, and admitted again as soon as the oldest left
    assert all(b - a >= 10 for a, b in zip(admitted, admitted[3:], strict=False))
    assert [round(b - a, 1) for a, b in itertools.pairwise(admitted)][:6] == \
        [1.5, 1.5, 7.5, 1.5, 1.5, 7.5]
    assert sent(gw) == len(admitted) == 18  # 3 at 0, 10.5, 21, ... 52.5 s


async def test_retry_after_is_when_the_window_admits_the_whole_request(
        make_gateway: MakeGateway) -> None:
    clock = FakeClock(1_800_000_000.0)
    gw = await make_gateway(limited("{per: caller, max: 3, window: 1h}"), wall_clock=clock)
    assert (await gw.send(to=[NUMBER])).status == 200
    clock.advance(600)
    assert (await gw.send(to=[OTHER])).status == 200
    clock.advance(600)
    refused = await gw.send(to=[NUMBER, OTHER])  # 2 more than 1 left: the first must go
    assert refused.status == 429 and refused.headers["Retry-After"] == "2400"
    assert [e["to"] for e in (await refused.json())["errors"]] == ["+86138******00",
                                                                   "+86139******00"]
    assert (await gw.send(to=[NUMBER])).status == 200  # one still fits
    too_many = await gw.send(to=[NUMBER, OTHER, "+8613700137000", "+8613600136000"])
    assert too_many.status == 429 and "Retry-After" not in too_many.headers  # never fits


async def test_prefix_rule_catches_many_numbers_in_one_range(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited("{per: prefix, digits: 9, max: 2, window: 1h}"))
    assert (await gw.send(to="+8613800138001")).status == 200
    assert (await gw.send(to="+8613800138002")).status == 200
    refused = await gw.send(to="+8613800138003")  # same first 9 digits: 861380013
    assert refused.status == 429
    assert (await refused.json())["errors"][0]["limit"] == "prefix9:2/1h"
    assert (await gw.send(to="+8613800148003")).status == 200  # another range


async def test_country_rule_and_allow_list(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited("{per: country, max: 2, window: 1h, name: cn-hourly}",
                                    tail="countries: {allow: [CN, HK]}\n"))
    assert (await gw.send(to=[NUMBER, OTHER])).status == 200
    refused = await gw.send(to="+8613700137000")
    assert refused.status == 429 and (await refused.json())["errors"][0]["limit"] == "cn-hourly"
    assert (await gw.send(to=HK)).status == 200  # Hong Kong is counted on its own
    before = sent(gw)
    foreign = await gw.send(to=[NUMBER, "+14155552671"])
    assert foreign.status == 422
    body = await foreign.json()
    assert body["errors"] == [{"field": "to", "to": "+1415*****71",
                               "message": "US is not in countries.allow"}]
    assert sent(gw) == before
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_limited_total{rule="countries.allow"} 1.0' in metrics
    assert 'sms_limited_total{rule="cn-hourly"} 1.0' in metrics


async def test_caller_rule_counts_each_key_apart(make_gateway: MakeGateway) -> None:
    keys = [{"name": "shop", "key": "k-shop"}, {"name": "bank", "key": "k-bank"}]
    gw = await make_gateway(limited("{per: caller, max: 1, window: 1m}",
                                    server={"api_keys": keys}))
    shop, bank = ({"Authorization": f"Bearer k-{n}"} for n in ("shop", "bank"))
    assert (await gw.send(headers=shop)).status == 200
    assert (await gw.send(to=OTHER, headers=shop)).status == 429
    assert (await gw.send(to=OTHER, headers=bank)).status == 200


async def test_trusted_numbers_skip_number_and_prefix_rules_only(
        make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited(
        OTP, "{per: prefix, digits: 5, max: 1, window: 1m}", "{per: caller, max: 4, window: 1m}",
        server={"trusted_numbers": [NUMBER, "+86139"]}))
    for _ in range(3):
        assert (await gw.send()).status == 200  # a test phone
    assert (await gw.send(to=OTHER)).status == 200  # trusted by its prefix
    refused = await gw.send(to=OTHER)
    assert refused.status == 429  # but the caller rule still counts it
    assert (await refused.json())["errors"][0]["limit"] == "caller:4/1m"


async def test_a_template_rule_leaves_other_templates_alone_and_max_0_blocks(
        make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited("{per: number, template: notice, max: 0, window: 1d}"))
    notice = await gw.send("notice", params={"name": "A", "time": "B"})
    assert notice.status == 429 and "Retry-After" not in notice.headers
    assert (await gw.send()).status == 200


async def test_reload_changes_the_rules_and_keeps_the_counts(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited("{per: number, max: 2, window: 1h}"))
    assert (await gw.send()).status == 200
    assert (await gw.send()).status == 200
    assert (await gw.send()).status == 429
    gw.config_path.write_text(limited("{per: number, max: 3, window: 1h}"))
    assert await reload_now(gw.gateway)
    assert (await gw.send()).status == 200  # the two before still count: a third fits
    assert (await gw.send()).status == 429
    gw.config_path.write_text(limited("{per: number, max: 3, window: 10ms}"))
    assert not await reload_now(gw.gateway)  # a bad rule keeps the running ones
    assert "limits[0].window: must be from 1s to 31d" in (gw.gateway.runtime.reload.error or "")
    gw.config_path.write_text(build_config())
    assert await reload_now(gw.gateway)
    assert (await gw.send()).status == 200  # no rules: no limits


@pytest.mark.parametrize(("rule", "error"), [
    ("{per: person, max: 1, window: 1m}",
     "limits[1].per: must be one of number, prefix, country, caller, not 'person'"),
    ("{per: number, max: -1, window: 1m}", "limits[1].max: must be at least 0"),
    ("{per: number, max: 1, window: 500ms}", "limits[1].window: must be from 1s to 31d"),
    ("{per: number, max: 1, window: 32d}", "limits[1].window: must be from 1s to 31d"),
    ("{per: prefix, digits: 2, max: 1, window: 1m}", "limits[1].digits: must be from 3 to 15"),
    ("{per: prefix, digits: 16, max: 1, window: 1m}", "limits[1].digits: must be from 3 to 15"),
    ("{per: prefix, max: 1, window: 1m}", "limits[1].digits: is required with per: prefix"),
    ("{per: number, digits: 8, max: 1, window: 1m}", "limits[1].digits: only per: prefix"),
    ("{per: number, max: 1}", "limits[1].window: is required"),
    ("{per: number, max: 1, window: 1m, templat: x}", "limits[1].templat: unknown key"),
    ("{per: number, max: 1, window: 1m, template: nope}", "limits[1].template: no template"),
])
def test_a_bad_rule_names_file_line_and_key(tmp_path: Path, rule: str, error: str) -> None:
    path = tmp_path / "config.yaml"
    text = limited("{per: caller, max: 9, window: 1s}", rule)
    path.write_text(text)
    line = text.splitlines().index(f"  - {rule}") + 1
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    problems = [str(p) for p in caught.value.problems if "limits" in p.key]
    assert problems == [f"{path}:{line}: {problems[0].split(': ', 1)[1]}"]
    assert error in problems[0]


def test_other_bad_limit_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = limited("{per: number, max: 1, window: 1m, name: x}",
                   "{per: number, max: 2, window: 1h, name: x}",
                   server={"trusted_numbers": ["+86 138 0013 8000"]},
                   tail="countries: {allow: [CN, XX]}\n")
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    shown = str(caught.value)
    assert "server.trusted_numbers: items must be E.164 numbers or prefixes" in shown
    assert "countries.allow: unknown region 'XX'" in shown
    assert "limits[1].name: another rule is named 'x'" in shown
    lines = text.splitlines()
    assert f"{path}:{lines.index('countries: {allow: [CN, XX]}') + 1}: countries.allow" in shown


def test_the_shipped_defaults_are_aliyun_s_verification_code_limits() -> None:
    env = {name: "x" for name in ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET",
                                  "ALIYUN_SIGN_NAME", "HUAWEI_APP_KEY", "HUAWEI_APP_SECRET",
                                  "HUAWEI_SENDER")}
    rules = load_config(REPO / "config.yaml", env=env).limits.rules
    assert [(r.per, r.template, r.max, r.window) for r in rules] == [
        ("number", "verify_code", 1, 60.0), ("number", "verify_code", 5, 3600.0),
        ("number", "verify_code", 10, 86400.0)]
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert "help.aliyun.com/document_detail/2881383.html" in text


async def test_status_dashboard_and_metrics_show_the_rules(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited(OTP, "{per: prefix, digits: 8, max: 50, window: 1h}",
                                    server={"trusted_numbers": ["+8613700137000"]},
                                    tail="countries: {allow: [CN]}\n"))
    for to in (NUMBER, OTHER, NUMBER, NUMBER):
        await gw.send(to=to)
    doc = (await (await gw.client.get("/status")).json())["limits"]
    otp, prefix = doc["rules"]
    assert otp["name"] == "number:verify_code:1/1m" and otp["window"] == "1m"
    assert otp["top"] == [{"key": "+86138******00", "count": 1},
                          {"key": "+86139******00", "count": 1}]
    assert otp["refused_last_hour"] == 2 and doc["refused_last_hour"] == 2
    assert prefix["top"] == [{"key": "+86138001", "count": 1}, {"key": "+86139001", "count": 1}]
    assert doc["countries_allowed"] == ["CN"] and doc["trusted_numbers"] == ["+86137001*****"]
    page = await (await gw.client.get("/")).text()
    assert 'data-testid="limits"' in page and "number:verify_code:1/1m" in page
    assert "+86138******00" in page and "13800138000" not in page
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_limited_total{rule="number:verify_code:1/1m"} 2.0' in metrics
    assert 'sms_requests_total{status="429"} 2.0' in metrics


async def test_admin_clear_forgets_one_number_and_needs_the_admin_right(
        make_gateway: MakeGateway) -> None:
    keys = ["plain", {"name": "ops", "key": "k-ops", "rights": ["admin"]}]
    gw = await make_gateway(limited(OTP, server={"api_keys": keys}))
    plain, ops = {"Authorization": "Bearer plain"}, {"Authorization": "Bearer k-ops"}
    assert (await gw.send(headers=plain)).status == 200
    assert (await gw.send(to=OTHER, headers=plain)).status == 200
    assert (await gw.send(headers=plain)).status == 429
    url = "/admin/limits/clear"
    assert (await gw.client.post(url, json={"number": NUMBER})).status == 401
    forbidden = await gw.client.post(url, json={"number": NUMBER}, headers=plain)
    assert forbidden.status == 403 and (await forbidden.json())["right"] == "admin"
    assert (await gw.client.post(url, data="+8613800138000", headers=ops)).status == 415
    assert (await gw.client.post(url, json={"to": NUMBER}, headers=ops)).status == 400
    assert (await gw.client.post(url, json={"number": "12"}, headers=ops)).status == 422
    cleared = await gw.client.post(url, json={"number": "13800138000"}, headers=ops)
    assert cleared.status == 200
    assert await cleared.json() == {"number": "+86138******00", "cleared": 1}
    assert (await gw.send(headers=plain)).status == 200  # a fresh count
    assert (await gw.send(to=OTHER, headers=plain)).status == 429  # the other one kept its own


def test_bench_case_9_runs_the_shipped_rules_check() -> None:
    rules = default_rules()
    assert [r["window"] for r in rules] == ["1m", "1h", "1d"]
    cost = check_cost(past=2_000, checks=20)
    for path in ("new_number", "number_with_3_hits_today"):
        # one statement reads every window, one inserts the hit
        assert cost[path]["statements"] == 2 and cost[path]["us_per_check"] > 0
