"""Case 8 (issue 12): delivery receipt ingestion on SQLite, against the same run's sends.

One gateway on a SQLite file with receipts on. First a send run (the built-in generator, so
every answer's id is kept: the sends' throughput is the baseline); then every one of those
sends gets its Aliyun receipt, posted as SmsReport pushes of 100 reports each by a few
concurrent "Aliyun" connections. The figure is reports applied per second, as a ratio to the
sends per second of the same run; the target is 2,000 reports/s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bench.cases import CONNS, Bench
from bench.configs import gateway_config, provider, render
from bench.loadgen import run_builtin
from bench.procs import Child, cpu_seconds, free_port
from bench.report import Figure
from bench.stack import _gateway_argv

TOKEN = "bench-receipt-token-0123456789"
BATCH = 100
POSTERS = 4  # concurrent pushes, as Aliyun's push service may make
TARGET = 2000.0


def _config(urls: dict[str, str]) -> str:
    text = gateway_config(
        server={"api_keys": [], "max_recipients": 100, "shutdown_timeout": "2s"},
        logging={"level": "WARNING", "file": None},
        defaults={"region": "CN", "timeout": "5s", "deadline": "15s"},
        templates=("verify_code",),
        providers=[provider("aliyun", priority=1, endpoint=urls["aliyun"], inline=True,
                            templates=("verify_code",)),
                   provider("huawei", priority=2, endpoint=urls["huawei"], inline=True,
                            templates=("verify_code",))],
        storage={"url": "sqlite:///receipts.db"})
    return text + render({"receipts": {"token": TOKEN}})


def start(b: Bench) -> Child:
    """The case's gateway, in its own folder (its SQLite file beside its config)."""
    folder = b.stack.children.workdir / "gateway-receipts"
    folder.mkdir()
    (folder / "config.yaml").write_text(_config(b.stack.urls), encoding="utf-8")
    port = free_port()
    child = b.stack.children.start("gateway-receipts", [
        *_gateway_argv(), "--config", str(folder / "config.yaml"), "--port", str(port),
        "--log-level", "WARNING"])
    child.url = f"http://127.0.0.1:{port}"
    b.stack.gateways.append(child)
    return child


def _sent(status: int, body: bytes) -> tuple[str, str] | None:
    if status != 200:
        return None
    answer = json.loads(body)
    return answer["id"], answer["to"][0]


def _report(message_id: str, number: str, at: str) -> dict[str, Any]:
    return {"phone_number": number.removeprefix("+86"), "send_time": at,
            "report_time": at, "success": True, "err_code": "DELIVERED",
            "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "900619746936498^0",
            "out_id": message_id}


async def _push_all(url: str, batches: list[bytes]) -> tuple[float, int]:
    """Post every batch over POSTERS connections; (seconds, non-200 answers)."""
    queue = list(reversed(batches))
    failures = 0
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async def poster() -> None:
            nonlocal failures
            while queue:
                async with session.post(url, data=queue.pop(), headers=headers) as response:
                    await response.read()
                    failures += response.status != 200
        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(POSTERS)))
        return time.perf_counter() - started, failures


async def case8(b: Bench) -> None:
    """Receipt ingestion: 100-report Aliyun pushes, reports/s and its ratio to sends/s."""
    gateway = start(b)
    await b.stack.ready(gateway)
    await b.stack.fresh()
    await run_builtin(gateway.url + "/sms", 10, 1.0)  # warm: pools, imports, the file
    sends = await run_builtin(gateway.url + "/sms", CONNS, b.duration, _sent)
    gateway.check_alive()
    pairs = [s.tag for s in sends.samples if s.tag is not None]
    beijing = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600))
    reports = [_report(message_id, number, beijing) for message_id, number in pairs]
    batches = [json.dumps(reports[i:i + BATCH]).encode()
               for i in range(0, len(reports) - BATCH + 1, BATCH)]
    cpu = cpu_seconds(gateway.pid)
    seconds, failures = await _push_all(f"{gateway.url}/receipts/aliyun/{TOKEN}", batches)
    used = cpu_seconds(gateway.pid) - cpu
    gateway.check_alive()
    count = len(batches) * BATCH
    rate = count / seconds if seconds else 0.0
    delivered = await _delivered(gateway)
    b.runs["8 receipts, 100-report Aliyun pushes"] = {
        "target": gateway.name, "reports": count, "batches": len(batches), "seconds": seconds,
        "failures": failures, "delivered": delivered, "posters": POSTERS,
        "cpu_us_per_report": round(used / count * 1e6, 1) if count else None,
        "send_rps": round(sends.rps, 1), "send_errors": sends.errors}
    print(f"  8 sends {sends.rps:7.0f} rps ({len(pairs)} ids); receipts {rate:7.0f} reports/s "
          f"({count} in {len(batches)} pushes, {failures} refused, {delivered} delivered, "
          f"{used / count * 1e6 if count else 0:.0f} us CPU/report)", flush=True)
    ratio = rate / sends.rps if sends.rps else 0.0
    b.add(Figure("8", "receipt ingestion, 100-report Aliyun pushes, SQLite",
                 f"{rate:.0f} reports/s", f"sends {sends.rps:.0f} rps (same gateway, same run)",
                 f"{ratio:.2f}x", f">= {TARGET:.0f} reports/s",
                 rate >= TARGET and failures == 0 and delivered == count,
                 f"{count} reports in {len(batches)} pushes, {failures} refused, "
                 f"{delivered} delivered"))


async def _delivered(gateway: Child) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/metrics") as r:
        text = await r.text()
    prefix = 'sms_receipts_total{provider="aliyun",status="delivered"} '
    return next((round(float(line[len(prefix):])) for line in text.splitlines()
                 if line.startswith(prefix)), 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it with: python -m bench --cases 8")
