"""The config file goes bad while the gateway runs: it keeps serving the last good config,
says why on /status, the dashboard and in the log, and a later good edit recovers.

Tests run as root, so ``chmod 000`` would not stop a read: "unreadable" is a directory in the
file's place and bytes that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from conftest import TEST_CONFIG, Harness, MakeGateway
from gateway.reload import reload_now
from providers.base import ProviderSettings
from providers.sandbox import SandboxProvider


class ExplodingProvider(SandboxProvider):
    """A user's provider class that loads fine but refuses to be built."""

    def __init__(self, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        raise RuntimeError("cannot build this provider")


def remove(path: Path) -> None:
    path.unlink()


def truncate_half(path: Path) -> None:
    """Half the file, at a line end: valid YAML that says less (a cut mid-line is below)."""
    path.write_text(TEST_CONFIG[: TEST_CONFIG.rindex("\n", 0, len(TEST_CONFIG) // 2) + 1])


def truncate_all(path: Path) -> None:
    path.write_text("")


def cut_mid_line(path: Path) -> None:
    path.write_text(TEST_CONFIG[: TEST_CONFIG.index("on_unknown: failover")])


def not_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe" + TEST_CONFIG.encode() + b"\xc3\x28")


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def unknown_type(path: Path) -> None:
    path.write_text(TEST_CONFIG.replace("type: huawei", "type: huawai"))


def empty_module(path: Path) -> None:
    path.write_text(TEST_CONFIG.replace("type: huawei", 'type: ":Nothing"'))


EXPLODING = TEST_CONFIG + """\
  - name: custom
    type: test_config_faults:ExplodingProvider
    priority: 3
"""


def exploding_class(path: Path) -> None:
    path.write_text(EXPLODING)


def bad_priority(path: Path) -> None:
    path.write_text(TEST_CONFIG.replace("priority: 2", "priority: second"))


def route_to_nowhere(path: Path) -> None:
    path.write_text(TEST_CONFIG + "routes:\n  - match: {template: [notice]}\n"
                    "    providers: [tencent]\n")


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "deleted": (remove, "file not found"),
    "truncated half": (truncate_half, "no provider can send it"),
    "truncated to nothing": (truncate_all, "at least one provider is required"),
    "cut mid-line": (cut_mid_line, "invalid YAML"),
    "not UTF-8": (not_utf8, "cannot read"),
    "a directory": (directory, "Is a directory"),
    "unknown provider type": (unknown_type, "unknown provider type 'huawai'"),
    "empty module name": (empty_module, "providers.huawei.type"),
    "provider cannot be built": (exploding_class, "RuntimeError: cannot build this provider"),
    "priority not a number": (bad_priority, "providers.huawei.priority: must be an integer"),
    "route to an unknown provider": (route_to_nowhere, "unknown provider 'tencent'"),
}


def restore(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.write_text(TEST_CONFIG.replace("priority: 1", "priority: 9"))  # huawei first now


async def assert_still_serving(gw: Harness, why: str) -> None:
    doc = await (await gw.client.get("/status")).json()
    assert doc["config"]["generation"] == 1
    assert why in doc["config"]["reload_error"]
    assert [p["name"] for p in doc["providers"]] == ["aliyun", "huawei"]
    page = await (await gw.client.get("/")).text()
    assert "reload" in page.lower()
    assert why.replace("'", "&#39;") in page or why in page
    response = await gw.send()
    assert response.status == 200
    assert (await response.json())["provider"] == "aliyun"


async def assert_recovered(gw: Harness) -> None:
    doc = await (await gw.client.get("/status")).json()
    assert doc["config"]["reload_error"] is None
    assert doc["config"]["generation"] == 2
    assert (await (await gw.send()).json())["provider"] == "huawei"


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_bad_file_keeps_the_last_good_config(gw: Harness, fault: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    damage, why = FAULTS[fault]
    await gw.client.post("/admin/providers/huawei/open", json={})  # state that must survive
    damage(gw.config_path)
    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert not await reload_now(gw.gateway)
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.reload"]
    assert len(logged) == 1
    assert "config reload rejected; still running generation 1" in logged[0]
    assert why in logged[0]
    assert gw.state("huawei") == "open"
    await gw.client.post("/admin/providers/huawei/close", json={})
    await assert_still_serving(gw, why)
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_config_reloads_total{result="rejected"} 1.0' in metrics

    restore(gw.config_path)
    assert await reload_now(gw.gateway)
    await assert_recovered(gw)


async def test_a_failed_build_leaves_breaker_settings_alone(gw: Harness) -> None:
    gw.config_path.write_text(
        EXPLODING.replace("consecutive_failures: 3", "consecutive_failures: 7"))
    assert not await reload_now(gw.gateway)
    member = gw.gateway.runtime.member("aliyun")
    assert member is not None
    assert member.breaker.settings.consecutive_failures == 3


async def wait_for(check: Callable[[], bool], seconds: float = 10.0,
                   poke: Callable[[], None] | None = None) -> None:
    """inotify plus the watcher's 300 ms debounce: poll, never a fixed sleep.

    ``poke`` makes the edit again every second, for a watcher that may not have started yet.
    """
    for step in range(int(seconds / 0.05)):
        if poke is not None and step % 20 == 0:
            poke()
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the watcher did not react in time")


async def test_the_watcher_survives_bad_edits_and_recovers(
        make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway(watch=True)
    runtime = gw.gateway.runtime
    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        # this edit used to kill the watcher task
        await wait_for(lambda: runtime.reload.error is not None,
                       poke=lambda: exploding_class(gw.config_path))
        assert "cannot build this provider" in (runtime.reload.error or "")
        truncate_half(gw.config_path)
        await wait_for(lambda: "no provider can send it" in (runtime.reload.error or ""))
    assert any("config reload rejected" in r.getMessage() for r in caplog.records)
    await assert_still_serving(gw, "no provider can send it")
    restore(gw.config_path)
    await wait_for(lambda: runtime.reload.generation == 2)
    await assert_recovered(gw)
