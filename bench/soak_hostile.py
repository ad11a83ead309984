"""The soak's hostile traffic (issue 8): what an attacker or a broken client sends, mixed into
the steady load of ``bench/soak.py``, all to 127.0.0.1 and bounded in count.

- JSON bodies with lone surrogates (``"\\ud800"``) in a param value, a param name and a field
  name, and ``NaN``/``Infinity`` params: the senders send them; each gets its problem+json;
- bodies cut off mid-way (Content-Length larger than what is sent, then close): counted as
  ``sms_requests_total{status="aborted"}``, never 500;
- a few sockets sending headers a byte at a time, one sending a body a byte at a time, and one
  idling: the gateway closes each (or answers 408) after server.header_timeout/body_timeout;
- an alias bomb written over the config file twice: the reload is rejected (``/status``
  ``config.reload_error``), sends go on, and the good config is put back and reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

NOTICE = {"to": ["+8613800138000"], "template": "notice"}


def _raw(body: dict[str, Any], replace: tuple[str, str] | None = None) -> bytes:
    """JSON text as a broken client writes it: json.dumps escapes a lone surrogate as
    ``\\ud800`` (which json.loads takes back); ``replace`` swaps a quoted value for NaN etc."""
    text = json.dumps(body)
    if replace is not None:
        text = text.replace(*replace)
    return text.encode()


# what -> (the status it must get, the raw JSON body); answered as application/problem+json
BODIES: dict[str, tuple[int, bytes]] = {
    "surrogate-param": (422, _raw({**NOTICE, "params": {"name": "A\ud800", "time": "9:00"}})),
    "surrogate-param-name": (422, _raw({**NOTICE, "params": {
        "name": "A", "time": "9:00", "\ud800": "x"}})),
    "surrogate-field": (400, _raw({**NOTICE, "params": {"name": "A", "time": "9:00"},
                                   "\udc80": 1})),
    "nan": (422, _raw({**NOTICE, "params": {"name": "A", "time": "@"}}, ('"@"', "NaN"))),
    "infinity": (422, _raw({**NOTICE, "params": {"name": "A", "time": "@"}},
                           ('"@"', "-Infinity"))),
}
JSON = {"Content-Type": "application/json"}
PROBLEM = "application/problem+json"

SLOW_HEADER_SOCKETS = 3  # at once, each reconnecting when the gateway closes it
ABORT_EVERY = 0.25  # seconds between cut-off bodies (one connection each, closed at once)
BYTE_EVERY = 0.2  # seconds between the bytes of a slow connection


def alias_bomb(levels: int = 6) -> str:
    """Billion laughs: ``levels`` lines of ten aliases each, 10**levels values expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    lines.append("defaults: {timeout: [" + ", ".join([f"*l{levels - 1}"] * 10) + "]}")
    return "\n".join(lines) + "\n"


@dataclass
class Hostile:
    """Where the gateway is, its limits, and what the hostile traffic saw."""

    host: str
    port: int
    auth: dict[str, str]
    header_timeout: float
    body_timeout: float
    sent: Counter[str] = field(default_factory=Counter)  # kind -> connections or writes
    outcomes: Counter[str] = field(default_factory=Counter)  # "kind outcome" -> count
    slowest: dict[str, float] = field(default_factory=dict)  # kind -> longest until closed
    failures: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)

    def head(self, length: int) -> bytes:
        lines = ["POST /sms HTTP/1.1", f"Host: {self.host}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in self.auth.items()), f"Content-Length: {length}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- cut-off bodies ------------------------------------------------------------------------------

async def aborted_bodies(hostile: Hostile, until: float) -> None:
    """Promise 400 bytes, send 40, hang up: the client's doing, never a 500."""
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection(hostile.host, hostile.port)
            writer.write(hostile.head(400) + b'{"to": ["+8613800138000"], "template": ')
            await writer.drain()
            hostile.sent["aborted"] += 1
            # A moment for the gateway to start on the request: one it never started on was
            # never a request (aiohttp drops it unseen), and is not counted at all.
            await asyncio.sleep(0.1)
            writer.transport.abort()
        await asyncio.sleep(ABORT_EVERY)


# -- slow and idle connections -------------------------------------------------------------------

async def _until_closed(hostile: Hostile, kind: str, first: bytes, drip: bytes) -> None:
    """Send ``first``, then ``drip`` a byte every BYTE_EVERY s until the gateway answers or
    closes; a connection still open well past its timeout is a failure."""
    limit = max(hostile.header_timeout, hostile.body_timeout) * 3 + 10
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(hostile.host, hostile.port)
    hostile.sent[kind] += 1
    answer, closed = b"", False
    try:
        writer.write(first)
        for index in range(int(limit / BYTE_EVERY)):
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(4096), BYTE_EVERY)
                closed = True  # data (an answer) or b"" (closed)
            if closed:
                break
            if drip:
                writer.write(drip[index % len(drip):][:1])
                await writer.drain()
    except ConnectionError:
        closed = True
    finally:
        writer.transport.abort()
    took = time.monotonic() - started
    hostile.slowest[kind] = max(hostile.slowest.get(kind, 0.0), took)
    if not closed:
        hostile.fail(f"{kind}: still open after {took:.0f} s")
        hostile.outcomes[f"{kind} still open"] += 1
    elif not answer:
        hostile.outcomes[f"{kind} closed"] += 1
    else:
        status = answer.split(b" ", 2)[1].decode(errors="replace") if b" " in answer else "?"
        hostile.outcomes[f"{kind} {status}"] += 1
        if status != "408":
            hostile.fail(f"{kind}: answered {answer[:60]!r}, not 408 or closed")


async def slow_connection(hostile: Hostile, kind: str, until: float) -> None:
    """One socket of ``kind`` at a time, again and again until ``until``."""
    if kind == "slow-headers":
        first = b"POST /sms HTTP/1.1\r\nHost: " + hostile.host.encode() + b"\r\nX-Slow: "
        drip = b"a"
    elif kind == "slow-body":
        first, drip = hostile.head(100) + b"{", b" "
    else:  # idle: connects and says nothing
        first, drip = b"", b""
    while time.monotonic() < until:
        try:
            await _until_closed(hostile, kind, first, drip)
        except OSError as exc:
            hostile.fail(f"{kind}: could not connect: {exc!r}")
            await asyncio.sleep(1.0)


# -- alias bombs on reload -------------------------------------------------------------------------

def _replace(path: Path, text: str) -> None:
    """Write the way editors save (a new file renamed over the old): the watcher sees one change."""
    spare = path.with_name(f".{path.name}.soak")  # a name the gateway's watcher ignores
    spare.write_text(text)
    os.replace(spare, path)


async def _config_status(session: aiohttp.ClientSession, hostile: Hostile) -> dict[str, Any]:
    async with session.get(f"{hostile.url}/status", headers=hostile.auth) as response:
        document: dict[str, Any] = await response.json()
        config: dict[str, Any] = document["config"]
        return config


async def _wait_config(session: aiohttp.ClientSession, hostile: Hostile, done: Any,
                       limit: float = 30.0) -> dict[str, Any] | None:
    """/status's config section once ``done(config)`` holds, or None after ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, ValueError):
            config = await _config_status(session, hostile)
            if done(config):
                return config
        await asyncio.sleep(0.2)
    return None


async def bomb_once(session: aiohttp.ClientSession, hostile: Hostile, path: Path) -> None:
    """The bomb over the config file: rejected, the running config kept; then the good one."""
    good = await asyncio.to_thread(path.read_text)
    before = await _config_status(session, hostile)
    generation = before["generation"]
    await asyncio.to_thread(_replace, path, alias_bomb())
    hostile.sent["bomb"] += 1
    seen = await _wait_config(session, hostile, lambda c: "alias" in (c["reload_error"] or ""))
    if seen is None or seen["generation"] != generation:
        hostile.fail(f"bomb: reload not rejected (config now {seen})")
    else:
        hostile.outcomes["bomb rejected"] += 1
        error = seen["reload_error"]
        if len(error) > 500:
            hostile.fail(f"bomb: reload_error is {len(error)} characters long")
    await asyncio.to_thread(_replace, path, good)
    restored = await _wait_config(session, hostile, lambda c: c["reload_error"] is None
                                  and c["generation"] > generation)
    if restored is None:
        hostile.fail("bomb: the good config was not reloaded after the bomb")
    else:
        hostile.outcomes["bomb restored"] += 1


async def bombs(hostile: Hostile, path: Path, started: float, seconds: float) -> None:
    """Two bombs, at 30% and 65% of the run."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for share in (0.3, 0.65):
            await asyncio.sleep(max(0.0, started + seconds * share - time.monotonic()))
            await bomb_once(session, hostile, path)


# -- the run and its report ------------------------------------------------------------------------

async def hostile_traffic(hostile: Hostile, config: Path, started: float, seconds: float) -> None:
    """Everything above at once, for the whole run; bounded: SLOW_HEADER_SOCKETS + 2 slow
    sockets and at most one cut-off body open at a time."""
    until = started + seconds
    await asyncio.gather(
        aborted_bodies(hostile, until), bombs(hostile, config, started, seconds),
        slow_connection(hostile, "idle", until), slow_connection(hostile, "slow-body", until),
        *(slow_connection(hostile, "slow-headers", until) for _ in range(SLOW_HEADER_SOCKETS)))


def metric_values(text: str, name: str) -> dict[str, float]:
    """``name``'s samples in Prometheus text, by their label set (``status="500"``)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1:].partition("} ")
            values[labels] = float(value)
    return values


async def final_metrics(hostile: Hostile) -> None:
    """After the run: no 500 ever counted, and the cut-off bodies counted as ``aborted``."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{hostile.url}/metrics", headers=hostile.auth) as response:
        text = await response.text()
    requests = metric_values(text, "sms_requests_total")
    reloads = metric_values(text, "sms_config_reloads_total")
    served_500 = requests.get('status="500"', 0.0)
    aborted = requests.get('status="aborted"', 0.0)
    rejected = reloads.get('result="rejected"', 0.0)
    hostile.outcomes["aborted counted"] = int(aborted)
    print(f'/metrics: sms_requests_total{{status="500"}} {served_500:g}, '
          f'{{status="aborted"}} {aborted:g}; sms_config_reloads_total{{result="rejected"}} '
          f"{rejected:g}")
    if served_500:
        hostile.fail(f'/metrics counts {served_500:g} answers as status="500"')
    if hostile.sent["aborted"] and not aborted:
        hostile.fail(f'{hostile.sent["aborted"]} bodies cut off, none counted as "aborted"')
    if rejected < hostile.outcomes["bomb rejected"]:
        hostile.fail(f"{hostile.outcomes['bomb rejected']} bombs rejected, "
                     f"the metric says {rejected:g}")


def hostile_report(hostile: Hostile) -> list[str]:
    """One line per kind of raw-socket traffic; the failures found."""
    for kind in ("aborted", "slow-headers", "slow-body", "idle", "bomb"):
        outcomes = ", ".join(f"{o.split(' ', 1)[1]}: {n}" for o, n in
                             sorted(hostile.outcomes.items()) if o.split(" ", 1)[0] == kind)
        slowest = f"; closed within {hostile.slowest[kind]:.1f} s" if kind in hostile.slowest \
            else ""
        print(f"hostile {kind}: {hostile.sent[kind]} ({outcomes}{slowest})")
    return list(hostile.failures)
