"""Status callbacks through HTTP (SPEC §8): a send with ``callback_url`` gets one signed POST of
its record; failing and hanging receivers are retried with backoff on their own time, never
the sends'; the rules on where callbacks may go (SSRF) are 422s naming the field."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from gatewayproc import sandbox_config
from hypothesis import given, settings
from hypothesis import strategies as st
from receiver import SECRET, Receiver, sample, start_receiver, until

from conftest import NUMBER, FakeClock, Harness, MakeGateway, build_config
from gateway.callback_rules import allowed_hosts, url_problem
from gateway.callbacks import CallbackSender, RetryPolicy, sign
from gateway.config import ConfigError, parse_config
from gateway.keys import callbacks_key

START = 1_800_000_000.0
HOSTS = ["127.0.0.1", "*.example.com"]


def config(**server: Any) -> str:
    return build_config(server={"callback_hosts": HOSTS, "callback_secret": SECRET, **server})


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Receiver]:
    found = await start_receiver(aiohttp_server)
    yield found
    found.released.set()  # a hanging handler must not hold the server's shutdown


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def sender(gw: Harness) -> CallbackSender:
    app: web.Application | None = gw.client.app
    assert app is not None
    return app[callbacks_key]


async def send(gw: Harness, url: Any, **body: Any) -> Any:
    response = await gw.client.post("/sms", json={
        "to": NUMBER, "template": "verify_code", "params": {"code": "123456"},
        "callback_url": url, **body})
    return response.status, await response.json()


def verified(delivery: Any, secret: str = SECRET) -> bool:
    timestamp = delivery.headers["X-SMS-Gateway-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + delivery.body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(delivery.headers["X-SMS-Gateway-Signature"], f"sha256={expected}")


async def test_a_sync_send_posts_its_record_once_signed(
        make_gateway: MakeGateway, receiver: Receiver, clock: FakeClock) -> None:
    gw = await make_gateway(config(), wall_clock=clock)
    status, sent = await send(gw, receiver.url)
    assert status == 200 and sent["status"] == "sent"
    got = await receiver.next()
    assert verified(got) and not verified(got, "another secret")
    assert got.headers["X-SMS-Gateway-Timestamp"] == str(int(START))
    assert got.headers["X-SMS-Gateway-Event"] == "final"
    assert got.headers["Content-Type"] == "application/json"
    assert got.path == "/hook?token=t0k3n"
    record = await (await gw.client.get(f"/sms/{sent['id']}")).json()
    assert got.json() == record  # the record as GET /sms/{id} shows it: numbers masked
    assert got.json()["to"] == ["+86138******00"] and got.json()["status"] == "sent"
    await until(lambda: sample(gw, "delivered") == 1)
    await receiver.nothing()  # once
    state = await (await gw.client.get("/status")).json()
    assert state["callbacks"] == {"queued": 0, "in_flight": 0}
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sms_callbacks_total{outcome="delivered"} 1.0' in metrics
    assert 'sms_callbacks_total{outcome="gave_up"} 0.0' in metrics
    stored = await gw.gateway.store.records.get(sent["id"])
    assert stored is not None and stored.callback_url == receiver.url
    assert SECRET not in json.dumps(state) and SECRET not in metrics


async def test_a_burst_of_sends_gets_one_callback_each(make_gateway: MakeGateway,
                                                       receiver: Receiver) -> None:
    """Claimed in batches, their records read together: each callback once, none lost."""
    gw = await make_gateway(config())
    answers = await asyncio.gather(*(send(gw, receiver.url) for _ in range(40)))
    assert {status for status, _ in answers} == {200}
    await until(lambda: sample(gw, "delivered") == 40)
    ids = sorted(got.json()["id"] for got in receiver.got)
    assert ids == sorted(body["id"] for _, body in answers)  # each once
    assert all(verified(got) for got in receiver.got)
    assert sender(gw).depth == 0


async def test_no_callback_without_a_url_nor_for_a_replay(
        make_gateway: MakeGateway, receiver: Receiver) -> None:
    gw = await make_gateway(config())
    assert (await gw.send()).status == 200
    key = {"Idempotency-Key": "k-1"}
    body = {"to": NUMBER, "template": "verify_code", "params": {"code": "1"},
            "callback_url": receiver.url}
    assert (await gw.client.post("/sms", json=body, headers=key)).status == 200
    await receiver.next()
    replay = await gw.client.post("/sms", json=body, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    await receiver.nothing()


async def test_a_failed_send_is_announced_too(make_gateway: MakeGateway,
                                              receiver: Receiver) -> None:
    gw = await make_gateway(config())
    await gw.mode("aliyun", "reject")
    status, _ = await send(gw, receiver.url)
    assert status == 422
    assert (await receiver.next()).json()["status"] == "rejected"


REFUSED = [
    ("http://10.0.0.5/hook", "private or loopback"),
    ("http://167772165/hook", "private or loopback"),  # 10.0.0.5 as one number
    ("http://127.0.0.2/hook", "private or loopback"),  # loopback, not the listed 127.0.0.1
    ("http://localhost/hook", "private or loopback"),
    ("http://[::1]/hook", "private or loopback"),
    ("http://[::ffff:10.0.0.1]/hook", "private or loopback"),
    ("http://0.0.0.0/hook", "private or loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://2852039166/", "metadata"),
    ("file:///etc/passwd", "http:// or https://"),
    ("ftp://hooks.example.com/x", "http:// or https://"),
    ("http://user:pass@hooks.example.com/x", "credentials"),
    ("http://:pass@127.0.0.1/x", "credentials"),
    ("http://evil.test/hook", "not in server.callback_hosts"),
    ("http://example.com/hook", "not in server.callback_hosts"),  # the wildcard's apex
    ("http://hooks.example.com.evil.test/", "not in server.callback_hosts"),
    ("http://hooks.example.com:99999/", "not a valid URL"),
    ("http://hooks.example.com/a b", "spaces or control"),
    ("http://hooks.example.com/\r\nX-Injected: 1", "spaces or control"),
    ("http://hooks.example.com/\ud800", "lone surrogate"),
    ("http://\udcff.example.com/", "lone surrogate"),
    ("http://hooks.example.com/" + "a" * 10_000, "longer than 2048"),
    ("", "http:// or https://"),
    ("not a url", "spaces or control"),
    ("hooks.example.com/x", "http:// or https://"),
    ("http://" + "a" * 70 + ".example.com/", "not a valid URL"),  # a label over 63
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_refused_callback_urls_are_422_naming_the_field(
        gw_callbacks: Harness, url: str, why: str) -> None:
    before = sum(s.state.counters["requests"] for s in gw_callbacks.emulators.values())
    status, problem = await send(gw_callbacks, url)
    assert status == 422, problem
    assert problem["errors"] == [{"field": "callback_url", "message": problem["errors"][0][
        "message"]}]
    assert why in problem["errors"][0]["message"]
    if len(url) > 16:  # the URL is never echoed (its path may hold a token)
        assert url[-12:] not in json.dumps(problem, ensure_ascii=False)
    assert sum(s.state.counters["requests"] for s in gw_callbacks.emulators.values()) == before


@pytest.fixture
async def gw_callbacks(make_gateway: MakeGateway) -> Harness:
    return await make_gateway(config())


@pytest.mark.parametrize("value", [123, ["http://127.0.0.1/"], {"url": "x"}, True])
async def test_a_callback_url_of_the_wrong_type_is_a_400(gw_callbacks: Harness,
                                                         value: Any) -> None:
    status, problem = await send(gw_callbacks, value)
    assert status == 400
    assert problem["errors"] == [{"field": "callback_url", "message": "must be a string"}]


async def test_without_callback_hosts_every_callback_url_is_refused(gw: Harness) -> None:
    status, problem = await send(gw, "https://hooks.example.com/x")
    assert status == 422 and problem["errors"][0]["field"] == "callback_url"
    # Said as what it is: callbacks are off, not "this host" is wrong.
    assert problem["errors"][0]["message"] == (
        "status callbacks are off: server.callback_hosts is empty (list this URL's host there)")


def test_the_host_rules() -> None:
    hosts = allowed_hosts(("127.0.0.1", "*.example.com", "intranet.corp", "[::1]"))
    for url in ("https://hooks.example.com/x?a=1", "http://a.b.example.com:8443/",
                "http://HOOKS.Example.COM./", "http://127.0.0.1:9/", "http://2130706433/",
                "http://intranet.corp/", "http://[::1]:8080/"):
        assert url_problem(url, hosts) is None, url
    assert url_problem("http://example.com/", hosts) is not None
    assert url_problem("http://10.1.2.3/", hosts) is not None
    assert hosts.reachable("intranet.corp", _ip("10.0.0.7"))  # listed exactly: its DNS is trusted
    assert not hosts.reachable("hooks.example.com", _ip("10.0.0.7"))  # a wildcard: public only
    assert not hosts.reachable("hooks.example.com", _ip("127.0.0.1"))
    assert not hosts.reachable("intranet.corp", _ip("169.254.169.254"))  # never metadata
    assert hosts.reachable("hooks.example.com", _ip("93.184.216.34"))


def _ip(text: str) -> Any:
    import ipaddress

    return ipaddress.ip_address(text)


@pytest.mark.parametrize(("entry", "why"), [
    ("http://hooks.example.com", "is not a host"), ("*", "is not a host"),
    ("*.com", "too broad"), ("169.254.169.254", "metadata"), ("a:b", "is not a host"),
    ("hooks.example.com/x", "is not a host"), ("bücher.example", "xn--"),
])
def test_bad_callback_hosts_are_config_errors(entry: str, why: str) -> None:
    server = f"  callback_hosts: [{json.dumps(entry)}]\n  callback_secret: x"
    with pytest.raises(ConfigError) as caught:
        parse_config(sandbox_config(server))
    assert "server.callback_hosts" in str(caught.value) and why in str(caught.value)


def test_callback_hosts_need_a_secret_which_is_never_shown() -> None:
    with pytest.raises(ConfigError, match=r"server\.callback_secret: is required"):
        parse_config(sandbox_config("  callback_hosts: [hooks.example.com]"))
    with pytest.raises(ConfigError, match="CB_SECRET"):
        parse_config(sandbox_config("  callback_hosts: [a.example.com]\n"
                                    "  callback_secret: ${CB_SECRET}"), env={})
    loaded = parse_config(sandbox_config("  callback_hosts: [a.example.com]\n"
                                         "  callback_secret: ${CB_SECRET}"),
                          env={"CB_SECRET": "very-secret-value"})
    assert loaded.server.callback_secret.reveal() == "very-secret-value"
    assert "very-secret-value" not in repr(loaded)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id": "x"}'
    expected = hmac.new(b"k", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1800000000", body) == f"sha256={expected}"


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    import random

    policy, rng = RetryPolicy(), random.Random(7)
    for attempts, step in ((1, 5.0), (2, 10.0), (3, 20.0), (10, 1800.0), (60, 1800.0)):
        delays = [policy.delay(attempts, rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4  # jittered, not one value


async def test_a_failing_receiver_is_retried_with_backoff_then_delivered(
        make_gateway: MakeGateway, receiver: Receiver, clock: FakeClock) -> None:
    gw = await make_gateway(config(), wall_clock=clock)
    receiver.status = 500
    _, sent = await send(gw, receiver.url)
    first = await receiver.next()
    await until(lambda: sample(gw, "retry") == 1)
    queued = sender(gw)
    state = await queued.queue.state()
    assert state.depth == 1 and state.next_due is not None
    assert 2.5 <= state.next_due - START <= 5.0  # the first step: 5 s, half of it jitter
    assert (await (await gw.client.get("/status")).json())["callbacks"]["queued"] == 1

    queued.wake()  # not due yet: nothing is sent
    await receiver.nothing()
    clock.advance(5.0)
    queued.wake()
    second = await receiver.next()
    assert second.json()["id"] == first.json()["id"] == sent["id"]
    await until(lambda: sample(gw, "retry") == 2)
    state = await queued.queue.state()
    assert state.next_due is not None and 5.0 <= state.next_due - clock.now <= 10.0

    receiver.status = 204
    clock.advance(10.0)
    queued.wake()
    third = await receiver.next()
    assert third.headers["X-SMS-Gateway-Timestamp"] == str(int(START + 15))
    assert verified(third)
    await until(lambda: sample(gw, "delivered") == 1)
    assert (await queued.queue.state()).depth == 0
    await receiver.nothing()


async def test_a_receiver_that_never_answers_2xx_is_given_up_after_24_hours(
        make_gateway: MakeGateway, receiver: Receiver, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway(config(), wall_clock=clock)
    receiver.status = 503
    await send(gw, receiver.url)
    queued, posts = sender(gw), 0
    caplog.set_level(logging.INFO, "gateway.callbacks")
    while sample(gw, "gave_up") == 0:
        await receiver.next()
        posts += 1
        await until(lambda n=posts: sample(gw, "retry") + sample(gw, "gave_up") == n)
        assert clock.now - START <= 24 * 3600  # never tried after the window
        clock.advance(3600.0)  # past the 30 min cap: due at every step
        queued.wake()
    assert posts == 25  # hourly from 0 h to 24 h; the next would be past the window
    assert (await queued.queue.state()).depth == 0
    given_up = [r for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 1 and given_up[0].levelno == logging.WARNING
    assert "127.0.0.1" in given_up[0].getMessage() and "t0k3n" not in caplog.text
    await receiver.nothing()


async def test_a_hanging_receiver_delays_neither_sends_nor_other_receivers(
        make_gateway: MakeGateway, receiver: Receiver, aiohttp_server: Any) -> None:
    gw = await make_gateway(config(callback_timeout="5s"))
    receiver.hang = True
    quick = await start_receiver(aiohttp_server)
    durations = []
    for _ in range(12):
        started = time.monotonic()
        status, _ = await send(gw, receiver.url)
        durations.append(time.monotonic() - started)
        assert status == 200
    await until(lambda: len(receiver.got) >= 4)  # four connections to one receiver
    started = time.monotonic()
    status, _ = await send(gw, quick.url)
    assert status == 200
    await quick.next(timeout=3.5)  # well before the hanging ones time out
    assert time.monotonic() - started < 3.5
    assert max(durations) < 1.0, durations  # a send takes milliseconds; a callback hangs 5 s
    await until(lambda: sample(gw, "delivered") == 1)
    state = (await (await gw.client.get("/status")).json())["callbacks"]
    assert state["in_flight"] == 12 and state["queued"] == 12
    assert len(receiver.got) == 4  # the rest wait for one of its four connections
    await until(lambda: sample(gw, "retry") == 12, timeout=15)  # timed out: retried later
    receiver.released.set()


async def test_a_wildcard_host_that_resolves_to_a_private_address_is_refused(
        make_gateway: MakeGateway, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS is checked when connecting: hooks.example.com -> 127.0.0.1 reaches nothing through
    the wildcard, and is allowed once the name is listed exactly."""
    assert receiver.server is not None
    port = receiver.server.port
    loop = asyncio.get_running_loop()

    async def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    url = f"http://hooks.example.com:{port}/hook"
    gw = await make_gateway(config())
    status, _ = await send(gw, url)
    assert status == 200
    await until(lambda: sample(gw, "retry") == 1)
    assert receiver.got == []
    await gw.client.close()

    listed = await make_gateway(config(callback_hosts=["hooks.example.com"]))
    await send(listed, url)
    assert verified(await receiver.next())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["http", "https", "HTTP", "file", ""]),
    st.text(max_size=40), st.text(max_size=60))))
def test_any_text_is_judged_never_raises(url: str) -> None:
    problem = url_problem(url, allowed_hosts(tuple(HOSTS)))
    assert problem is None or isinstance(problem, str)
