"""What an emulator remembers, and the wire behaviour its modes share across providers.

A provider module (aliyun.py, huawei.py, tencent.py, twilio.py) knows its protocol: signatures,
field checks and the provider's own error bodies; base.py holds the handler skeleton they share.
Everything that is the same for all lives here: the modes, the counters, latency, and the
misbehaviours that sit below the protocol (hang, garbage, html, huge, reset, drip).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = (
    "ok", "fail", "reject", "throttle", "limit", "disabled", "down", "hang", "latency",
    "garbage", "html", "unknown_code", "huge", "reset", "drip",
)
# Modes the provider module answers with its own error body once the request is authenticated.
ANSWER_MODES = frozenset({"fail", "reject", "throttle", "limit", "disabled", "unknown_code"})

# Read-only: one test or caller changing them would change every emulator in the process.
EMULATOR_CREDENTIALS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "aliyun": MappingProxyType({"access_key_id": "emulator-access-key-id",
                                "access_key_secret": "emulator-access-key-secret"}),
    "huawei": MappingProxyType({"app_key": "emulator-app-key",
                                "app_secret": "emulator-app-secret"}),
    "tencent": MappingProxyType({"secret_id": "AKIDemulatorSecretId",
                                 "secret_key": "emulator-secret-key"}),
    "twilio": MappingProxyType({"account_sid": "ACemulator0000000000000000000000",
                                "auth_token": "emulator-auth-token"}),
})
EMULATOR_OPTIONS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "aliyun": MappingProxyType({"sign_name": "SMS Gateway"}),
    "huawei": MappingProxyType({"sender": "csms12345678"}),
    "tencent": MappingProxyType({"sdk_app_id": "1400006666", "sign_name": "SMS Gateway"}),
    # Twilio echoes nothing of ours but the StatusCallback URL, which carries our id; the
    # emulator posts no callbacks yet, so the URL only has to be well formed.
    "twilio": MappingProxyType({"sender": "+15017122661",
                                "status_callback": "http://127.0.0.1:8080/receipts/twilio"}),
})

_COUNTERS = ("requests", "accepted", "rejected", "auth_failures", "faults", "receipts",
             "receipt_failures")
RECEIPT_MODES: tuple[str, ...] = ("deliver", "undeliver", "none", "duplicate", "late")
MAX_RECEIPT_DELAY = 3600.0
_UTC_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII)
HUGE_BYTES = 10 * 1024 * 1024
_CHUNK = 64 * 1024
DRIP_INTERVAL = 0.2
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class EmulatorState:
    """One emulator's mode, latency and what it received; mutated by requests and the admin."""

    kind: str
    mode: str = "ok"
    latency_ms: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    accepted: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=1000))
    # key id -> secret the emulator accepts; never part of snapshot()
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # Delivery receipts (gateway/emulators/receipts.py): what they say, after how long, and
    # where they go when the send names no callback (Aliyun's console-configured URL). The URL
    # carries the gateway's receipt token: never part of snapshot().
    receipt_mode: str = "deliver"
    receipt_delay: float = 1.0
    receipt_url: str | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe summary for the admin routes and the dashboard."""
        return {"kind": self.kind, "mode": self.mode, "latency_ms": self.latency_ms,
                "counters": dict(self.counters), "accepted_total": sum(self.accepted.values()),
                "receipt_mode": self.receipt_mode, "receipt_delay": self.receipt_delay,
                "receipts_configured": bool(self.receipt_url)}

    def reset(self) -> None:
        """Forget counters and received messages; the mode and latency stay."""
        for name in self.counters:
            self.counters[name] = 0
        self.accepted.clear()
        self.messages.clear()

    def set_mode(self, mode: str, latency_ms: int | None = None) -> None:
        """Switch mode (and latency when given); ValueError names the valid modes."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if latency_ms is not None:
            if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) \
                    or not 0 <= latency_ms <= 600_000:
                raise ValueError("latency_ms must be an integer from 0 to 600000")
            self.latency_ms = latency_ms
        self.mode = mode

    def set_receipts(self, mode: str | None = None, delay: Any = None) -> None:
        """Switch the receipt mode and/or delay (seconds); ValueError names what is valid."""
        if mode is not None and mode not in RECEIPT_MODES:
            raise ValueError(f"unknown receipt mode {mode!r}; valid: {', '.join(RECEIPT_MODES)}")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float)
                                  or not 0 <= delay <= MAX_RECEIPT_DELAY):
            raise ValueError(f"receipt_delay must be a number of seconds from 0 to "
                             f"{MAX_RECEIPT_DELAY:g}")
        if mode is not None:
            self.receipt_mode = mode
        if delay is not None:
            self.receipt_delay = float(delay)

    def record_accept(self, correlation_id: str, to: list[str], template: str,
                      params: Any, provider_message_id: str) -> None:
        """Count one accepted message under its correlation id (Aliyun OutId, Huawei extend,
        Tencent SessionContext, the ``id`` in Twilio's StatusCallback URL)."""
        self.counters["accepted"] += 1
        self.accepted[correlation_id] += 1
        self.messages.append({"id": correlation_id, "to": to, "template": template,
                              "params": params, "provider_message_id": provider_message_id})


STATE_KEY = web.AppKey("emulator_state", EmulatorState)


def emulator_app(state: EmulatorState) -> web.Application:
    """An empty emulator app holding ``state``, logging each answer without its query."""
    app = web.Application()
    app[STATE_KEY] = state
    app.on_response_prepare.append(_log_answer)
    return app


async def _log_answer(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[STATE_KEY]
    log.debug("%s emulator: %s %s -> %d (mode %s)", state.kind, request.method, request.path,
              response.status, state.mode)


def json_response(status: int, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> web.Response:
    """A provider-style JSON answer (UTF-8, readable Chinese messages)."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    return web.Response(status=status, body=body,
                        headers={"Content-Type": JSON_TYPE, **(headers or {})})


class Refused(Exception):
    """A request the emulated provider turns away with ``response``, counted under ``counter``."""

    def __init__(self, response: web.Response, counter: str = "rejected") -> None:
        super().__init__(response.status)
        self.response = response
        self.counter = counter


def parse_utc(value: str) -> float | None:
    """Epoch seconds of a ``YYYY-MM-DDThh:mm:ssZ`` timestamp, or None when malformed."""
    if not _UTC_SECONDS.fullmatch(value):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:  # well-shaped but impossible, e.g. month 13
        return None


def utc_now() -> str:
    """The current time as providers write it: ``YYYY-MM-DDThh:mm:ssZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def misbehave(request: web.Request, sample: bytes) -> web.StreamResponse | None:
    """Read and count the request, wait out the latency, and act out a below-protocol mode.

    ``sample`` is a success-looking body of this provider (for drip and garbage). Returns None
    when the provider module should answer the request itself.
    """
    state = request.app[STATE_KEY]
    mode, latency = state.mode, state.latency_ms  # as on arrival, even if changed meanwhile
    await request.read()
    state.counters["requests"] += 1
    if mode == "hang":
        state.counters["faults"] += 1
        # Ends by cancellation: the runner uses handler_cancellation, so a client that gives up
        # or a server that stops (it closes every connection) cancels this wait.
        await asyncio.Event().wait()
    if latency:
        await asyncio.sleep(latency / 1000)
    act = _ACTS.get(mode)
    if act is None:
        return None
    state.counters["faults"] += 1
    return await act(request, sample)


def _first_member(sample: bytes) -> bytes:
    # '{"Code": "OK", ': reads like success to a careless parser, and is not JSON.
    return sample[:sample.index(b", ") + 2]


async def _garbage(_request: web.Request, sample: bytes) -> web.StreamResponse:
    return web.Response(status=200, body=_first_member(sample),
                        headers={"Content-Type": JSON_TYPE})


async def _html(_request: web.Request, _sample: bytes) -> web.StreamResponse:
    page = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    return web.Response(status=502, text=page, content_type="text/html",
                        headers={"Server": "nginx"})


async def _huge(request: web.Request, sample: bytes) -> web.StreamResponse:
    head, tail = _first_member(sample) + b'"Padding": "', b'"}'
    response = _stream(HUGE_BYTES)
    await response.prepare(request)
    chunk = b"x" * _CHUNK  # one chunk reused: the 10 MB never exist in memory at once
    left = HUGE_BYTES - len(head) - len(tail)
    try:
        await response.write(head)
        while left > 0:
            await response.write(chunk[:left])
            left -= _CHUNK
        await response.write(tail)
    except ConnectionError:
        pass  # the client stopped reading, as it should
    return response


async def _reset(request: web.Request, sample: bytes) -> web.StreamResponse:
    response = _stream(len(sample))
    await response.prepare(request)
    await response.write(sample[:len(sample) // 2])
    transport = request.transport
    if transport is not None:
        # SO_LINGER 0 turns the close into a TCP RST: a reset mid-body, not a clean FIN.
        transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response


async def _drip(request: web.Request, sample: bytes) -> web.StreamResponse:
    response = _stream(len(sample))
    await response.prepare(request)
    try:
        for index in range(len(sample)):
            await response.write(sample[index:index + 1])
            await asyncio.sleep(DRIP_INTERVAL)
    except ConnectionError:
        pass
    return response


_ACTS: dict[str, Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]] = {
    "garbage": _garbage, "html": _html, "huge": _huge, "reset": _reset, "drip": _drip,
}


def _stream(length: int) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    response.content_length = length
    return response

