"""Delivery receipts from the emulators: posted after ``receipt_delay`` with the providers' field
names (providers.md §1.8 Aliyun SmsReport, §2.7 Huawei statusCallback).

Receipt modes (``receipt_mode``, set through ``POST /_emulator/{kind}``):

- ``deliver``: every accepted number is delivered, except one ending in ``99916`` (a magic
  number, like Huawei's ``99915``: its receipt says undelivered)
- ``undeliver``: every number's receipt says undelivered
- ``none``: no receipts
- ``duplicate``: each receipt twice
- ``late``: each receipt, then ``receipt_delay`` later a stale contradicting one with an earlier
  time (out of order: it must change nothing)

``receipt_delay`` 0 posts the receipt, and waits for its answer, *before* the send is answered:
the receipt then always beats the send's final record (the gateway must park it).
Aliyun pushes JSON arrays (reports due in one delay window go together, at most 100 a push) to
the console-configured URL (``receipt_url``); Huawei posts one form per report to the send's
``statusCallback``, or to ``receipt_url`` when the send named none.

A push that is not answered 200 (or not at all) is tried again as Aliyun does, after 1, 5 and
10 minutes, then given up (providers.md §1.8), scaled down here to 1, 5 and 10 times the
receipt delay (at least 0.1 s each). Huawei documents no retry: its failed posts are counted only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp

from gateway.emulators.state import EmulatorState

log = logging.getLogger(__name__)

UNDELIVERED_SUFFIX = "99916"
BATCH = 100
RETRIES = (1, 5, 10)  # Aliyun's minutes, here times the receipt delay
RETRY_FLOOR = 0.1  # seconds: a receipt delay of 0 still waits between tries
_TIMEOUT = aiohttp.ClientTimeout(total=5)

BEIJING = timezone(timedelta(hours=8))

Outcomes = list[tuple[str, bool]]  # (number, delivered)


def aliyun_report(number: str, delivered: bool, biz_id: str, out_id: str, sent: float,
                  at: float) -> dict[str, Any]:
    """One SmsReport item (providers.md §1.8): mainland numbers without their 86, Beijing
    times, ``success`` a boolean, ``sms_size`` a string."""
    digits = number.lstrip("+")
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return {"phone_number": digits, "send_time": _beijing(sent), "report_time": _beijing(at),
            "success": delivered, "err_code": "DELIVERED" if delivered else "MN:0001",
            "err_msg": "用户接收成功" if delivered else "空号", "sms_size": "1",
            "biz_id": biz_id, "out_id": out_id}


def huawei_report(sms_msg_id: str, delivered: bool, extend: str, at: float) -> dict[str, str]:
    """One statusCallback form (providers.md §2.7), as in the doc's demo bodies."""
    form = {"sequence": "1", "total": "1",
            "updateTime": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": "2", "smsMsgId": sms_msg_id, "status": "DELIVRD" if delivered else "RTE_ERR"}
    if not delivered:
        form = {"orgCode": "E200027", **form}
    if extend:
        form["extend"] = extend
    return form


def _beijing(at: float) -> str:
    return datetime.fromtimestamp(at, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def now() -> float:
    """Wall-clock seconds (report times are wall-clock times)."""
    return time.time()


def outcomes(mode: str, numbers: Sequence[str]) -> tuple[Outcomes, Outcomes]:
    """(the receipts to post, the stale ones to post a delay later) for ``numbers``."""
    if mode == "none":
        return [], []
    if mode == "undeliver":
        return [(n, False) for n in numbers], []
    first = [(n, not n.endswith(UNDELIVERED_SUFFIX)) for n in numbers]
    if mode == "duplicate":
        return first + first, []
    if mode == "late":
        return first, [(n, not delivered) for n, delivered in first]
    return first, []


class ReceiptSender:
    """Posts one emulator's receipts; JSON batches (Aliyun) or one form each (Huawei)."""

    def __init__(self, state: EmulatorState, *, batched: bool) -> None:
        self._state = state
        self._batched = batched
        self._session: aiohttp.ClientSession | None = None
        self._now: list[tuple[str, list[Any]]] = []
        # (url, delay) -> Aliyun reports waiting for their push
        self._due: dict[tuple[str, float], list[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, url: str | None, reports: list[Any], delay: float | None = None) -> None:
        """Post ``reports`` to ``url`` after ``delay`` (the state's receipt_delay)."""
        if not url or not reports:
            return
        delay = self._state.receipt_delay if delay is None else delay
        if delay <= 0:
            self._now.append((url, reports))
            return
        key = (url, delay)
        if self._batched and key in self._due:  # its push is already scheduled: join it
            self._due[key].extend(reports)
            return
        if self._batched:
            self._due[key] = list(reports)
        self._spawn(self._later(url, reports, delay))

    async def flush_now(self) -> None:
        """Post what is due before the send is answered (receipt_delay 0)."""
        now, self._now = self._now, []
        for url, reports in now:
            await self._post_all(url, reports)

    async def _later(self, url: str, reports: list[Any], delay: float) -> None:
        await asyncio.sleep(delay)
        if self._batched:
            reports = self._due.pop((url, delay), reports)
        await self._post_all(url, reports)

    async def _post_all(self, url: str, reports: list[Any]) -> None:
        if self._batched:
            for start in range(0, len(reports), BATCH):
                push = reports[start:start + BATCH]
                if not await self._post(url, json=push):
                    self._spawn(self._retry(url, push))
        else:
            for form in reports:
                await self._post(url, data=form)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry(self, url: str, push: list[Any]) -> None:
        """Aliyun's tries after a failed push; then the push is given up (logged)."""
        for factor in RETRIES:
            await asyncio.sleep(factor * max(self._state.receipt_delay, RETRY_FLOOR))
            if await self._post(url, json=push):
                return
        log.warning("%s emulator: a receipt push of %d reports failed %d times: given up",
                    self._state.kind, len(push), 1 + len(RETRIES))

    async def _post(self, url: str, **body: Any) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        counters = self._state.counters
        try:
            async with self._session.post(url, **body) as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s emulator: a receipt push failed: %s", self._state.kind,
                        type(exc).__name__)
            ok = False
        counters["receipts" if ok else "receipt_failures"] += 1
        return ok

    async def close(self) -> None:
        """Cancel what is scheduled; close the session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._due.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
