"""A provider that delivers nothing: for tests, demos and dry runs."""

from __future__ import annotations

import itertools

from providers.base import Message, Provider, SendResult


class SandboxProvider(Provider):
    """Accepts every message at once; nothing leaves the process."""

    type_name = "sandbox"
    needs_template_ids = False
    _ids = itertools.count(1)

    async def send(self, message: Message, timeout: float) -> SendResult:
        return SendResult.accepted(f"sandbox-{next(self._ids)}")

    def describe(self) -> dict[str, str | None]:
        return {"endpoint": None}
