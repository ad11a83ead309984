"""A provider that delivers nothing: for tests, demos and dry runs."""

from __future__ import annotations

from providers.base import Message, Provider, SendResult


class SandboxProvider(Provider):
    """Accepts every message at once; nothing leaves the process."""

    type_name = "sandbox"
    needs_template_ids = False

    async def send(self, message: Message, timeout: float) -> SendResult:
        # Named after the message: no counter shared by every instance in the process (two
        # apps, or a reload, would otherwise hand out each other's numbers).
        return SendResult.accepted(f"sandbox-{message.id}")

    def describe(self) -> dict[str, str | None]:
        return {"endpoint": None}
