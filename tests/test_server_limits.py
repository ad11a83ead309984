"""Slow and idle clients (issue 8, item 3): real sockets to the real process on 127.0.0.1.

Idle or byte-a-second connections must not hold descriptors forever: headers and bodies have
deadlines, connections have a cap, and a flood of identical log lines is held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path

import aiohttp
from aiohttp import web
from gatewayproc import SEND, Gateway, running, sandbox_config, until

from gateway.connections import CappedSite


async def _connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (bounded: a server that never closes fails
    the test instead of hanging it)."""
    return await asyncio.wait_for(reader.read(), 30)


async def _post(gw: Gateway) -> int:
    """A real send; a 503 from the cap is retried (bounded) while the server notices that
    connections the test closed are gone."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.post(f"{gw.url}/sms", json=SEND) as response:
                if response.status != 503:
                    return response.status
            await asyncio.sleep(0.1)
    return 503


def _write(tmp_path: Path, server: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(sandbox_config(server, "  file: gateway.log"))
    return config


async def test_idle_connections_over_the_cap_are_refused_and_the_rest_time_out(
        tmp_path: Path) -> None:
    config = _write(tmp_path, "  max_connections: 20\n  header_timeout: 1s")
    async with running(config, console=tmp_path / "console.log") as gw:
        idle = [await _connect(gw) for _ in range(30)]
        answers = await asyncio.gather(*(_answer(reader) for reader, _ in idle))
        for _, writer in idle:
            writer.close()
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        # every one closed by the server: over the cap at once, the others at header_timeout
        assert 0 < len(refused) <= 10
        assert all(a in (b"", *refused) for a in answers)
        assert await _post(gw) == 200


async def test_headers_sent_a_byte_at_a_time_are_cut_off(tmp_path: Path) -> None:
    config = _write(tmp_path, "  header_timeout: 1s")
    async with running(config, console=tmp_path / "console.log") as gw:
        reader, writer = await _connect(gw)
        writer.write(b"POST /sms HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(150):  # 30 s at most; the server closes after about 1 s
            try:
                writer.write(b"X")
                await writer.drain()
                await asyncio.wait_for(reader.read(1), 0.2)
                closed = reader.at_eof()
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
            if closed:
                break
        writer.close()
        assert closed
        assert await _post(gw) == 200


async def test_a_body_sent_a_byte_at_a_time_is_answered_408(tmp_path: Path) -> None:
    config = _write(tmp_path, "  body_timeout: 1s")
    async with running(config, console=tmp_path / "console.log") as gw:
        reader, writer = await _connect(gw)
        writer.write(b"POST /sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        answer = b""
        for _ in range(150):  # one byte per 0.2 s: the body would take 20 s
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.2)
            if answer or reader.at_eof():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"application/problem+json" in answer
        assert await _post(gw) == 200


async def test_a_flood_of_identical_log_lines_is_held_back(tmp_path: Path) -> None:
    config = _write(tmp_path, "  max_connections: 5\n  header_timeout: 30s")
    log = tmp_path / "gateway.log"
    async with running(config, console=tmp_path / "console.log") as gw:
        held = [await _connect(gw) for _ in range(5)]
        await until(lambda: "sms-gateway" in log.read_text())
        refused = [await _connect(gw) for _ in range(60)]
        answers = await asyncio.gather(*(_answer(reader) for reader, _ in refused))
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers)
        for _, writer in (*held, *refused):
            writer.close()
        assert await _post(gw) == 200
        gw.signal(signal.SIGTERM)
        assert await asyncio.wait_for(gw.process.wait(), 20) == 0
    text = log.read_text()
    assert text.count("server.max_connections reached") <= 6  # 5 lines and one summary
    summary = re.search(r"repeated (\d+) more times .*max_connections reached", text)
    assert summary and int(summary.group(1)) >= 55  # (a retried POST may add one)


async def test_the_cap_fits_the_open_file_limit(tmp_path: Path) -> None:
    """1,000 allowed but 200 descriptors: without fitting the cap, idle sockets would use up
    the descriptors and every accept would fail (and log) until they leave."""
    config = _write(tmp_path, "  max_connections: 1000\n  header_timeout: 30s")
    log = tmp_path / "gateway.log"
    async with running(config, console=tmp_path / "console.log", open_files=200) as gw:
        idle = [await _connect(gw) for _ in range(150)]
        last = await _answer(idle[-1][0])  # over the fitted cap: a 503, and closed
        for _, writer in idle:
            writer.close()
        assert last.startswith(b"HTTP/1.1 503")
        assert await _post(gw) == 200
    text = log.read_text()
    assert "does not fit the open-file limit (ulimit -n 200): serving at most 72" in text
    assert "accept" not in text.lower()  # no accept error, let alone a flood of them


async def test_the_site_times_out_first_headers_on_any_aiohttp() -> None:
    """The site's own first-request deadline, with aiohttp's idle timer out of the way (older
    aiohttp versions arm that timer only after a first response)."""
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, keepalive_timeout=3600)
    await runner.setup()
    site = CappedSite(runner, "127.0.0.1", 0, max_connections=10, header_timeout=0.5)
    await site.start()
    try:
        port = runner.addresses[0][1]
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        fast_reader, fast = await asyncio.open_connection("127.0.0.1", port)
        fast.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await _answer(fast_reader)).startswith(b"HTTP/1.1 200")
        assert await _answer(idle_reader) == b""  # closed by the site, nothing sent
        assert await _answer(slow_reader) == b""
        for writer in (idle, slow, fast):
            writer.close()
        await until(lambda: site.open == 0)
    finally:
        await runner.cleanup()


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")
