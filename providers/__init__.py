"""SMS providers behind one interface, and the registry config types resolve through."""

from __future__ import annotations

import importlib

from providers.aliyun import AliyunProvider
from providers.base import Delivery, Health, Message, Provider, ProviderSettings, SendResult
from providers.generic_http import GenericHttpProvider
from providers.huawei import HuaweiProvider
from providers.sandbox import SandboxProvider
from providers.tencent import TencentProvider
from providers.twilio import TwilioProvider

__all__ = [
    "REGISTRY", "Delivery", "Health", "Message", "Provider", "ProviderSettings", "SendResult",
    "resolve_provider_class",
]

REGISTRY: dict[str, type[Provider]] = {
    "aliyun": AliyunProvider,
    "http": GenericHttpProvider,
    "huawei": HuaweiProvider,
    "sandbox": SandboxProvider,
    "tencent": TencentProvider,
    "twilio": TwilioProvider,
}


def resolve_provider_class(type_name: str) -> type[Provider]:
    """A registry name, or ``package.module:Class`` naming a Provider subclass."""
    if type_name in REGISTRY:
        return REGISTRY[type_name]
    if ":" not in type_name:
        known = ", ".join(sorted(REGISTRY))
        raise LookupError(
            f"unknown provider type {type_name!r}; known: {known}, or package.module:Class"
        )
    module_name, _, attr = type_name.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{type_name!r} is not a subclass of providers.base.Provider")
    return cls
