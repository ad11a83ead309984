"""/status, /healthz, /readyz, /metrics, and that no secret reaches any response."""

from __future__ import annotations

from bench.configs import provider
from conftest import NUMBER, Harness, MakeGateway, build_config
from gateway.emulators import EMULATOR_CREDENTIALS


async def test_status_lists_providers_in_route_order(gw: Harness) -> None:
    await gw.mode("aliyun", "down")
    for _ in range(3):
        await gw.send()
    response = await gw.client.get("/status")
    assert response.status == 200
    doc = await response.json()
    assert doc["emulated"] is True
    assert doc["notice"] == "emulated: nothing is delivered"
    assert doc["config"]["generation"] == 1
    assert doc["config"]["reload_error"] is None
    aliyun, huawei = doc["providers"]
    assert (aliyun["name"], huawei["name"]) == ("aliyun", "huawei")
    assert aliyun["state"] == "open"
    assert aliyun["open_until"] > 0
    assert aliyun["counts"]["failed"] == 3
    assert aliyun["last_error"] == "connect failed: connection refused"  # no address or port
    assert huawei["state"] == "closed"
    assert huawei["counts"]["sent"] == 3
    assert huawei["latency_ms"]["p50"] is not None
    assert huawei["last_success_at"] is not None
    for key in ("type", "priority", "weight", "enabled"):
        assert key in aliyun


async def test_health_and_readiness(gw: Harness) -> None:
    assert (await gw.client.get("/healthz")).status == 200
    assert (await gw.client.get("/readyz")).status == 200


async def test_metrics_in_prometheus_text(gw: Harness) -> None:
    await gw.send()
    await gw.mode("aliyun", "reject")
    await gw.send()
    await gw.client.post("/sms", data="{", headers={"Content-Type": "application/json"})
    await gw.client.post("/api/sms", data="x", headers={"Content-Type": "text/plain"})
    await gw.send(to="not a number")
    response = await gw.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'sms_requests_total{status="200"} 1.0' in text
    assert 'sms_requests_total{status="422"} 2.0' in text  # the provider's and ours
    assert 'sms_requests_total{status="400"} 1.0' in text  # every answer counts, not only
    assert 'sms_requests_total{status="415"} 1.0' in text  # the routed ones
    assert 'sms_attempts_total{outcome="accepted",provider="aliyun"} 1.0' in text
    assert 'sms_breaker_state{provider="aliyun",state="closed"} 1.0' in text
    assert "sms_send_duration_seconds_bucket" in text


async def test_no_secret_or_full_number_in_machine_responses(gw: Harness) -> None:
    await gw.send()
    await gw.mode("aliyun", "fail")
    body = await (await gw.send()).json()
    secrets = [v for creds in EMULATOR_CREDENTIALS.values() for k, v in creds.items()
               if "secret" in k]
    pages = [await (await gw.client.get(path)).text()
             for path in ("/status?recent=1", "/metrics", "/", f"/sms/{body['id']}")]
    for text in pages:
        for secret in secrets:
            assert secret not in text
        assert NUMBER not in text
        assert "13800138000" not in text


async def test_forced_open_has_no_countdown(gw: Harness) -> None:
    assert (await gw.client.post("/admin/providers/aliyun/open", json={})).status == 200
    aliyun = (await (await gw.client.get("/status")).json())["providers"][0]
    assert (aliyun["state"], aliyun["forced"]) == ("open", True)
    assert aliyun["open_until"] is None
    assert aliyun["retry_in"] is None  # open until an operator closes it


async def test_reload_counters_exist_before_any_reload(gw: Harness) -> None:
    """A counter that appears only at the first reload has no first sample to rate against."""
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_config_reloads_total{result="applied"} 0.0' in metrics
    assert 'sms_config_reloads_total{result="rejected"} 0.0' in metrics


async def test_readiness_counts_enabled_providers_only(make_gateway: MakeGateway) -> None:
    """A provider switched off in the config is no missing capacity: "1 of 1 enabled", not
    "1 of 2", which would read as a provider down."""
    gw = await make_gateway(build_config(providers=[
        provider("aliyun", priority=1), {**provider("huawei", priority=2), "enabled": False}]))
    page = await (await gw.client.get("/")).text()
    assert "1 of 1 enabled provider closed" in page
