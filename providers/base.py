"""The provider interface: a message in, one classified outcome out.

Every provider translates its wire errors (aiohttp exceptions, timeouts, provider codes) into a
:class:`SendResult` inside ``send``; nothing above this module sees aiohttp or provider JSON.
"""

from __future__ import annotations

import abc
import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp


class Delivery(enum.Enum):
    """What an attempt means for the message."""

    ACCEPTED = "accepted"  # the provider took it; done
    SAFE = "failed"  # the provider certainly did not send it; another may
    CALLER = "rejected"  # the caller's fault (bad number, blocked content): 422, no failover
    RCPT_LIMIT = "rate_limited"  # a per-recipient anti-abuse limit: 429, no failover
    UNKNOWN = "unknown"  # it may have been sent (timeout after the request left, 5xx)
    # The request never left the gateway (our error, or no pooled connection in time): the
    # provider knows nothing of it, so another may send it and the breaker learns nothing.
    NOT_SENT = "not_sent"


class Health(enum.Enum):
    """What an attempt means for the provider's circuit breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # caller faults say nothing about the provider
    THROTTLED = "throttled"  # the provider asked us to back off until retry_after
    DISABLED = "disabled"  # account-level: auth, balance, quota, frozen


@dataclass(frozen=True, slots=True)
class SendResult:
    """One attempt's outcome, classified for delivery and for the breaker."""

    delivery: Delivery
    health: Health
    reason: str = ""  # short and safe to show: a provider code or an error class, never a body
    provider_message_id: str | None = None
    retry_after: float | None = None  # seconds, for THROTTLED and RCPT_LIMIT
    # ACCEPTED batches only: (number, provider code) for each recipient the provider turned down
    # while sending to the rest (Huawei's per-number status). Reported, never failed over.
    refused: tuple[tuple[str, str], ...] = ()
    # ACCEPTED only: (number, the provider's id for that recipient) where it gives one per
    # number (Huawei's smsMsgId); delivery receipts are matched by it.
    recipient_ids: tuple[tuple[str, str], ...] = ()

    @classmethod
    def accepted(cls, message_id: str | None) -> SendResult:
        return cls(Delivery.ACCEPTED, Health.SUCCESS, "", message_id)

    @classmethod
    def not_sent(cls, why: str) -> SendResult:
        return cls(Delivery.NOT_SENT, Health.IGNORED, f"not sent: {why}")


@dataclass(frozen=True, slots=True)
class Message:
    """A message as providers see it: normalized numbers and the template's params in order."""

    id: str
    to: tuple[str, ...]  # E.164
    template: str  # the logical template name callers use
    params: Mapping[str, str] = field(default_factory=dict)  # in the template's declared order

    @property
    def ordered_params(self) -> list[str]:
        return list(self.params.values())


class Secret:
    """A credential: usable by code, masked in every repr, str and log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What a provider class is built from (validated by the config loader)."""

    name: str
    type: str
    endpoint: str | None = None
    credentials: Mapping[str, Secret] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # type-specific keys


class Provider(abc.ABC):
    """One SMS provider behind one coroutine: ``send``.

    Subclasses declare ``type_name`` and ``required_credentials``; they are built once per config
    load with the app's shared :class:`aiohttp.ClientSession` and must not block the event loop.
    """

    type_name: ClassVar[str] = "custom"
    credential_keys: ClassVar[tuple[str, ...]] = ()  # all required
    required_options: ClassVar[tuple[str, ...]] = ()
    optional_options: ClassVar[tuple[str, ...]] = ()
    default_endpoint: ClassVar[str | None] = None
    needs_template_ids: ClassVar[bool] = True  # False: logical names are passed through

    def __init__(self, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        self.name = settings.name
        self.settings = settings
        self.session = session
        self.templates = settings.templates
        self.endpoint: str | None = settings.endpoint or self.default_endpoint

    @classmethod
    def can_map(cls, settings: ProviderSettings, template: str) -> bool:
        """Whether a provider with these settings can send this logical template."""
        return template in settings.templates or not cls.needs_template_ids

    def template_id(self, template: str) -> str:
        """The provider's id for a logical template (the router only asks for mappable ones)."""
        return self.templates.get(template, template)

    @abc.abstractmethod
    async def send(self, message: Message, timeout: float) -> SendResult:
        """Send one message within ``timeout`` seconds; never raise for a wire error."""

    def describe(self) -> dict[str, Any]:
        """Safe facts for /status (no credentials)."""
        return {"endpoint": self.endpoint}
