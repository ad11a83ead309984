"""The skeleton every provider emulator shares: one handler, three protocol hooks.

A request goes: below-protocol modes (``misbehave``) -> ``check`` (signature, fields; a
:class:`Refused` is counted and answered) -> the mode's own error body (``mode_answer``) or an
acceptance (``accept``). A new emulator subclasses :class:`ProviderEmulator`, fills the hooks and
lists its routes; it never repeats the counting, the mode switch or the refusal plumbing.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar, Generic, TypeVar

from aiohttp import web

from gateway.emulators.receipts import ReceiptSender
from gateway.emulators.state import (
    ANSWER_MODES,
    STATE_KEY,
    EmulatorState,
    Refused,
    emulator_app,
    misbehave,
)

SmsT = TypeVar("SmsT")


class ProviderEmulator(abc.ABC, Generic[SmsT]):
    """One emulated provider API; ``SmsT`` is what ``check`` extracts from a valid request."""

    # The two credential keys (key id, secret) in EMULATOR_CREDENTIALS[kind].
    key_names: ClassVar[tuple[str, str]]
    # A success-looking body of this provider, for the drip/garbage/huge/reset modes.
    sample: ClassVar[bytes]
    # (method, path) pairs the handler answers.
    routes: ClassVar[tuple[tuple[str, str], ...]]
    # Receipts go out as JSON batches (Aliyun) or one form each (Huawei).
    batched_receipts: ClassVar[bool] = False

    def __init__(self, state: EmulatorState, credentials: Mapping[str, str]) -> None:
        self.state = state
        self.secrets = state.secrets  # shared, so EmulatorServer.trust() can add keys
        key_id, secret = self.key_names
        self.secrets[credentials[key_id]] = credentials[secret]
        self.receipts = ReceiptSender(state, batched=self.batched_receipts)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The request handler every route of this emulator points at."""
        early = await misbehave(request, self.sample)
        if early is not None:
            return early
        state = request.app[STATE_KEY]
        try:
            sms = await self.check(request)
        except Refused as refused:
            state.counters[refused.counter] += 1
            return refused.response
        if state.mode in ANSWER_MODES:
            state.counters["rejected"] += 1
            return self.mode_answer(state.mode, sms)
        response = self.accept(state, sms)
        await self.receipts.flush_now()  # receipt_delay 0: the receipt beats the answer
        return response

    @abc.abstractmethod
    async def check(self, request: web.Request) -> SmsT:
        """Authenticate and validate; raise :class:`Refused` with the provider's error body."""

    @abc.abstractmethod
    def mode_answer(self, mode: str, sms: SmsT) -> web.Response:
        """The provider's error body for one of ``ANSWER_MODES``."""

    @abc.abstractmethod
    def accept(self, state: EmulatorState, sms: SmsT) -> web.Response:
        """Record the message (``state.record_accept``) and answer as the provider does."""

    @classmethod
    def app(cls, state: EmulatorState, credentials: Mapping[str, str]) -> web.Application:
        """The emulator app: ``state`` held, every route on one handler."""
        app = emulator_app(state)
        handler = cls(state, credentials)
        for method, path in cls.routes:
            app.router.add_route(method, path, handler.handle)

        async def close_receipts(_app: web.Application) -> None:
            await handler.receipts.close()

        app.on_cleanup.append(close_receipts)
        return app
