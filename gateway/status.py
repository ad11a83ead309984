"""The facts behind ``/status`` and the dashboard, computed from the running state."""

from __future__ import annotations

import time
from typing import Any

from gateway import __version__
from gateway.records import view
from gateway.router import Member
from gateway.service import Gateway
from gateway.store import ListQuery, StoreError

EMULATED_NOTICE = "emulated: nothing is delivered"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def provider_status(gateway: Gateway, member: Member) -> dict[str, Any]:
    """One provider's row: config, breaker, counts, latency, last error (reason only)."""
    breaker, stats, config = member.breaker, member.stats, member.config
    state = breaker.state.value if config.enabled else "disabled"
    until = breaker.open_until() if config.enabled else None
    open_until = None if until is None else time.time() + (until - gateway.clock())
    return {
        "name": member.name,
        "type": config.type,
        "priority": config.priority,
        "weight": config.weight,
        "enabled": config.enabled,
        "state": state,
        "forced": breaker.forced,
        "reason": breaker.reason if state != "closed" else "",
        "open_until": open_until,
        # None while forced open: it stays open until an operator closes it, no countdown
        "retry_in": round(breaker.retry_in(), 1) if config.enabled and not breaker.forced
        else None,
        "counts": {
            "sent": stats.sent, "failed": stats.failed, "rejected": stats.rejected,
            "unknown": stats.unknown, "short_circuited": stats.short_circuited,
        },
        "latency_ms": {"p50": _ms(stats.percentile(0.5)), "p95": _ms(stats.percentile(0.95))},
        "last_error": stats.last_error or None,
        "last_error_at": stats.last_error_at,
        "last_success_at": stats.last_success_at,
        # delivery receipts of the last hour: ratio = delivered / receipts (SPEC §9)
        "receipts": gateway.observer.timeline.delivery(member.name),
        **member.provider.describe(),
    }


def ready(gateway: Gateway) -> bool:
    """At least one enabled provider whose breaker would admit a call now."""
    return any(m.config.enabled and m.breaker.retry_in() == 0
               for m in gateway.runtime.snapshot.members)


def status_document(gateway: Gateway) -> dict[str, Any]:
    """The whole ``GET /status`` body."""
    runtime = gateway.runtime
    reload = runtime.reload
    config = runtime.config
    return {
        "service": "sms-gateway",
        "version": __version__,
        "emulated": config.emulated,
        "notice": EMULATED_NOTICE if config.emulated else None,
        "ready": ready(gateway),
        "uptime_s": round(time.time() - gateway.started_at, 1),
        "config": {
            "source": reload.source,
            "generation": reload.generation,
            "loaded_at": reload.loaded_at,
            "reload_error": reload.error,
            "reload_failed_at": reload.failed_at,
            "auth": bool(config.server.api_keys),
            "templates": sorted(config.templates),
        },
        "providers": [provider_status(gateway, m) for m in runtime.snapshot.members],
        # this replica, the store's reachability, every replica alive and its breakers (§11)
        "cluster": gateway.cluster.view() if gateway.cluster is not None else None,
        "outbox": outbox_status(gateway),
    }


def outbox_status(gateway: Gateway) -> dict[str, Any]:
    """The outbox (SPEC §8): depth, oldest age, sending rate, and how many wait because
    every provider is open; the breaker states say which ones."""
    return gateway.outbox.status()


async def recent_sends(gateway: Gateway, count: int = 15,
                       status: str | None = None) -> list[dict[str, Any]]:
    """The last sends from the store (so they survive a restart), numbers masked; none while
    the store is unavailable (``/readyz`` says so)."""
    try:
        page = await gateway.store.records.list(ListQuery(status=status, limit=count))
    except StoreError:
        return []
    return [view(r) for r in page.items]
