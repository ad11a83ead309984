"""The gateway on its message store, through HTTP: records and Idempotency-Keys survive a
restart, ``GET /sms`` filters and pages, and a store that goes away answers 503 and sends
nothing. Each test runs on SQLite and on PostgreSQL (see tests/store/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from gatewayproc import run_cli, sandbox_config
from sqlalchemy.engine import make_url

from conftest import NUMBER, FakeClock, Harness, MakeGateway, build_config
from gateway.store import body_hash, upgrade

from .conftest import PgServer, admin, require

OTHER = "+8613900139000"


def config(url: str, **storage: Any) -> str:
    return build_config(storage={"url": url, **storage})


def requests(gw: Harness) -> int:
    return sum(server.state.counters["requests"] for server in gw.emulators.values())


async def listing(gw: Harness, query: str) -> dict[str, Any]:
    response = await gw.client.get(f"/sms?{query}")
    assert response.status == 200, await response.text()
    page: dict[str, Any] = await response.json()
    return page


async def test_records_and_keys_survive_a_restart(make_gateway: MakeGateway,
                                                  store_url: str) -> None:
    gw = await make_gateway(config(store_url))
    first = await gw.send(headers={"Idempotency-Key": "order-1"})
    assert first.status == 200
    sent = await first.json()
    await gw.client.close()  # the app stops: its store is closed

    again = await make_gateway(config(store_url))  # a new app on the same database
    before = requests(again)
    record = await (await again.client.get(f"/sms/{sent['id']}")).json()
    assert record["status"] == "sent" and record["to"] == ["+86138******00"]
    assert record["provider"] == "aliyun" and "params" not in record  # the code is erased
    assert [a["outcome"] for a in record["attempts"]] == ["accepted"]
    replay = await again.send(headers={"Idempotency-Key": "order-1"})
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["id"] == sent["id"]
    assert requests(again) == before  # no provider was contacted
    page = await listing(again, "limit=5")
    assert [item["id"] for item in page["items"]] == [sent["id"]]


async def test_params_are_kept_when_asked(make_gateway: MakeGateway, store_url: str) -> None:
    gw = await make_gateway(config(store_url, keep_params=True))
    sent = await (await gw.send(params={"code": "424242"})).json()
    record = await (await gw.client.get(f"/sms/{sent['id']}")).json()
    assert record["params"] == {"code": "424242"}


async def test_list_filters_and_cursor(make_gateway: MakeGateway, store_url: str) -> None:
    gw = await make_gateway(config(store_url))
    ids = [(await (await gw.send()).json())["id"] for _ in range(3)]
    notice = {"name": "Ann", "time": "9:00"}
    ids += [(await (await gw.send("notice", OTHER, notice)).json())["id"] for _ in range(2)]
    await gw.mode("aliyun", "reject")
    rejected = await (await gw.send()).json()
    ids.append(rejected["id"])

    seen: list[str] = []
    cursor = ""
    while True:
        page = await listing(gw, f"limit=2{cursor}")
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == ids[::-1]  # newest first, nothing repeated or skipped

    notices = await listing(gw, "template=notice")
    assert [i["id"] for i in notices["items"]] == ids[3:5][::-1]
    national = await listing(gw, "to=13900139000")  # read in defaults.region, like a send
    assert [i["id"] for i in national["items"]] == ids[3:5][::-1]
    assert all(OTHER not in str(i) for i in national["items"])  # masked
    only = await listing(gw, "status=rejected")
    assert [(i["id"], i["http_status"]) for i in only["items"]] == [(rejected["id"], 422)]
    assert (await listing(gw, "since=4102444800"))["items"] == []  # 2100-01-01
    assert len((await listing(gw, "until=2100-01-01T00:00:00Z"))["items"]) == 6


async def test_a_wrong_filter_is_400_naming_it(make_gateway: MakeGateway,
                                               store_url: str) -> None:
    gw = await make_gateway(config(store_url))
    for query, field in (("limit=0", "limit"), ("limit=501", "limit"), ("status=lost", "status"),
                         ("cursor=not-a-cursor", "cursor"), ("since=yesterday", "since"),
                         ("until=2026-01-01T00:00:00", "until"), ("to=12", "to"),
                         ("colour=red", "colour")):
        response = await gw.client.get(f"/sms?{query}")
        assert response.status == 400, query
        assert response.content_type == "application/problem+json"
        assert (await response.json())["field"] == field, query


async def test_with_auth_a_caller_reads_its_own_sends(make_gateway: MakeGateway,
                                                      store_url: str) -> None:
    gw = await make_gateway(build_config(server={"api_keys": ["k-one", "k-two"]},
                                         storage={"url": store_url}))
    one, two = ({"Authorization": f"Bearer {k}"} for k in ("k-one", "k-two"))
    mine = (await (await gw.send(headers=one)).json())["id"]
    assert (await gw.client.get(f"/sms/{mine}", headers=one)).status == 200
    assert (await gw.client.get(f"/sms/{mine}", headers=two)).status == 404
    page = await (await gw.client.get("/sms", headers=two)).json()
    assert page["items"] == []
    assert (await gw.client.get("/sms")).status == 401


async def test_a_moved_sqlite_file_is_503_and_recovers(make_gateway: MakeGateway,
                                                       tmp_path: Path) -> None:
    gw = await make_gateway(config(f"sqlite:///{tmp_path}/gw.db"))
    assert (await gw.send()).status == 200
    (tmp_path / "gw.db").rename(tmp_path / "away.db")
    before = requests(gw)
    refused = await gw.send()
    assert refused.status == 503
    assert (await refused.json())["type"].endswith("store-unavailable")
    assert requests(gw) == before  # nothing was sent that could not be recorded
    ready = await gw.client.get("/readyz")
    assert ready.status == 503 and "store-unavailable" in (await ready.json())["type"]
    (tmp_path / "away.db").rename(tmp_path / "gw.db")
    assert (await gw.client.get("/readyz")).status == 200
    assert (await gw.send()).status == 200


async def test_a_postgresql_database_gone_is_503_and_recovers(make_gateway: MakeGateway,
                                                              pg_server: PgServer) -> None:
    server = require(pg_server)
    name = f"smsgw_http_{secrets.token_hex(4)}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    await admin(server, f'CREATE DATABASE "{name}"')
    try:
        gw = await make_gateway(config(url))
        assert (await gw.send()).status == 200
        await admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')
        before = requests(gw)
        refused = await gw.send(headers={"Idempotency-Key": "k"})
        assert refused.status == 503
        assert (await refused.json())["type"].endswith("store-unavailable")
        assert requests(gw) == before
        assert (await gw.client.get("/readyz")).status == 503
        await admin(server, f'CREATE DATABASE "{name}"')
        await upgrade(url)
        assert (await gw.client.get("/readyz")).status == 200
        assert (await gw.send(headers={"Idempotency-Key": "k"})).status == 200
        await gw.client.close()
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_unusable_store_is_a_one_line_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    for url, named in (("sqlite:///missing/gw.db", "missing"),
                       ("sqlite:///corrupt.db", "corrupt.db")):
        (tmp_path / "corrupt.db").write_bytes(b"not a database at all" * 100)
        config.write_text(sandbox_config() + f"storage: {{url: \"{url}\"}}\n")
        result = run_cli("--config", str(config), "--port", "0")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "not starting" in line and named in line, line
    assert (tmp_path / "corrupt.db").read_bytes().startswith(b"not a database")  # left alone


def test_db_upgrade_migrates_the_configured_store(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config() + "storage: {url: \"sqlite:///gw.db\"}\n")
    result = run_cli("db", "upgrade", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "schema at revision" in result.stdout and (tmp_path / "gw.db").exists()
    config.write_text(sandbox_config() + "storage: {url: \"sqlite:///nowhere/gw.db\"}\n")
    failed = run_cli("db", "upgrade", "--config", str(config))
    assert failed.returncode == 2 and "nowhere" in failed.stderr


def test_the_default_store_folder_is_made_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config())  # no storage section: sqlite:///data/sms-gateway.db
    assert run_cli("db", "upgrade", "--config", str(config)).returncode == 0
    assert (tmp_path / "data" / "sms-gateway.db").exists()


async def test_a_browser_gets_the_record_as_a_page(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(config("memory"))
    sent = await (await gw.send()).json()
    dashboard = await (await gw.client.get("/")).text()
    assert f'href="/sms/{sent["id"]}"' in dashboard  # the recent send links to its page
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = await gw.client.get(f"/sms/{sent['id']}", headers=browser)
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert sent["id"] in text and "+86138******00" in text and "accepted" in text
    assert sent["to"][0] not in text  # the number is masked
    api = await gw.client.get(f"/sms/{sent['id']}", headers={"Accept": "application/json"})
    assert api.content_type == "application/json"


async def test_a_forced_open_breaker_stays_open_after_a_restart(make_gateway: MakeGateway,
                                                                store_url: str) -> None:
    gw = await make_gateway(config(store_url))
    assert (await gw.client.post("/admin/providers/aliyun/open", json={})).status == 200
    await gw.client.close()
    again = await make_gateway(config(store_url))
    assert again.state("aliyun") == "open" and again.gateway.runtime.member("aliyun") is not None
    assert (await (await again.send()).json())["provider"] == "huawei"
    assert (await again.client.post("/admin/providers/aliyun/close", json={})).status == 200
    await again.client.close()
    third = await make_gateway(config(store_url))
    assert third.state("aliyun") == "closed"


async def test_keys_expire_and_retention_deletes_old_records(make_gateway: MakeGateway,
                                                             store_url: str) -> None:
    wall = FakeClock(1_800_000_000.0)  # the store's clock: Unix time that moves by hand
    text = config(store_url, retention="1d", idempotency_ttl="1h")
    gw = await make_gateway(text, wall_clock=wall)
    old = (await (await gw.send(headers={"Idempotency-Key": "k"})).json())["id"]
    wall.advance(2 * 3600)  # the key has expired: the same key sends again
    again = await gw.send(headers={"Idempotency-Key": "k"})
    assert "Idempotent-Replayed" not in again.headers
    assert (await again.json())["id"] != old
    wall.advance(2 * 86400)
    await gw.client.close()
    restarted = await make_gateway(text, wall_clock=wall)  # a retention pass runs at start
    kept = (await (await restarted.send()).json())["id"]
    async with asyncio.timeout(10):
        while (await restarted.client.get(f"/sms/{old}")).status != 404:
            await asyncio.sleep(0.01)
    page = await listing(restarted, "limit=10")
    assert [item["id"] for item in page["items"]] == [kept]


async def test_an_account_level_disable_survives_a_restart(make_gateway: MakeGateway,
                                                           store_url: str) -> None:
    wall = FakeClock(1_800_000_000.0)
    gw = await make_gateway(config(store_url), wall_clock=wall)
    await gw.mode("aliyun", "disabled")  # isv.AMOUNT_NOT_ENOUGH: account-level
    assert (await (await gw.send()).json())["provider"] == "huawei"
    assert gw.state("aliyun") == "disabled"
    await gw.mode("aliyun", "ok")
    await gw.client.close()

    again = await make_gateway(config(store_url), wall_clock=wall)  # max_open_for is 300s
    assert again.state("aliyun") == "disabled"
    before = again.emulators["aliyun"].state.counters["requests"]
    body = await (await again.send()).json()
    assert [(a["provider"], a["outcome"]) for a in body["attempts"]] == [
        ("aliyun", "skipped"), ("huawei", "accepted")]
    assert again.emulators["aliyun"].state.counters["requests"] == before
    status = await (await again.client.get("/status")).json()
    assert {p["name"]: p["state"] for p in status["providers"]}["aliyun"] == "disabled"
    await again.client.close()

    wall.advance(301)  # the period ran out while the gateway was down: not revived
    later = await make_gateway(config(store_url), wall_clock=wall)
    assert later.state("aliyun") == "closed"
    await later.client.close()


async def test_an_operator_close_ends_a_kept_disable(make_gateway: MakeGateway,
                                                     store_url: str) -> None:
    gw = await make_gateway(config(store_url))
    await gw.mode("aliyun", "disabled")
    await gw.send()
    assert gw.state("aliyun") == "disabled"
    await gw.mode("aliyun", "ok")
    assert (await gw.client.post("/admin/providers/aliyun/close", json={})).status == 200
    await gw.client.close()
    again = await make_gateway(config(store_url))
    assert again.state("aliyun") == "closed"
    assert (await (await again.send()).json())["provider"] == "aliyun"
    states = await again.gateway.store.providers.all()
    assert states["aliyun"].disabled_until is None


async def test_a_key_a_crash_left_claimed_before_any_send_is_taken_over(
        make_gateway: MakeGateway, store_url: str) -> None:
    wall = FakeClock(1_800_000_000.0)
    gw = await make_gateway(config(store_url), wall_clock=wall)
    body = {"to": NUMBER, "template": "verify_code", "params": {"code": "123456"}}
    # What a process killed between claiming the key and writing its record leaves behind.
    await gw.gateway.store.idempotency.claim(
        "", "order-9", body_hash(json.dumps(body, sort_keys=True).encode()))
    before = requests(gw)
    busy = await gw.send(headers={"Idempotency-Key": "order-9"})
    assert busy.status == 409  # a send with it could still be in flight
    wall.advance(60)  # longer than deadline + pool_wait + 5 s: its process is gone
    taken = await gw.send(headers={"Idempotency-Key": "order-9"})
    assert taken.status == 200 and "Idempotent-Replayed" not in taken.headers
    assert requests(gw) == before + 1  # nothing had been sent: now it is, once
    again = await gw.send(headers={"Idempotency-Key": "order-9"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await taken.json())["id"]
