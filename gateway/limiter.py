"""Applying the limits (SPEC §10) to a send before any provider is called.

:meth:`Limiter.admit` turns a valid request into the buckets it falls in (one per rule family
and number, prefix, country or caller), has the store count it in all of them or in none, and
refuses it otherwise: 422 for a destination outside ``countries.allow``, 429 naming every broken
rule and masked number with ``Retry-After``, the record kept as ``rate_limited``. A limit that
cannot be checked is a 503, never skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.limits import LimitRule, window_text
from gateway.observe import Observer
from gateway.phones import mask, normalize
from gateway.problems import Problem
from gateway.storage import unavailable
from gateway.store import NewMessage, Store, StoreError
from gateway.store.limits import LimitCheck, LimitExceeded, LimitVerdict, LimitWindow
from gateway.validate import SendRequest

log = logging.getLogger("gateway.service")
ALLOW_RULE = "countries.allow"  # what sms_limited_total calls a refused destination
SHOWN_DIGITS = 8  # a prefix is a range, not a person: this many digits are shown
TOP = 3  # consumers shown per rule


@dataclass(slots=True)
class _Bucket:
    numbers: list[str] = field(default_factory=list)
    rules: list[LimitRule] = field(default_factory=list)


class Limiter:
    """The gateway's limits; the counts live in the store, so every process shares them."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    async def admit(self, store: Store, config: Config, send: SendRequest, message_id: str,
                    caller: str, key: str | None = None) -> LimitVerdict | None:
        """Count ``send`` against every rule, or raise the Problem that refuses it (422, 429,
        503); the verdict (its hits, for :meth:`refund`), or None when no rule applies."""
        self._allowed(config, send)
        buckets = _buckets(config, send, caller)
        if not buckets:
            return None
        checks = [LimitCheck(name, len(b.numbers),
                             tuple(LimitWindow(r.name, r.max, r.window) for r in b.rules))
                  for name, b in buckets.items()]
        try:
            verdict = await store.limits.admit(checks, message_id)
        except StoreError as exc:
            log.error("send %s: its limits cannot be checked, so it is refused: %s",
                      message_id, exc)
            raise unavailable() from None
        if verdict.admitted:
            return verdict
        problem = self._refusal(config, verdict.exceeded, buckets, message_id)
        await _keep(store, config, send, message_id, caller, key, problem.detail)
        raise problem

    async def refund(self, store: Store, verdict: LimitVerdict | None) -> None:
        """No provider was called for an admitted send after all: it does not count."""
        if verdict is None or not verdict.hits:
            return
        try:
            await store.limits.refund(verdict.hits)
        except StoreError as exc:
            log.warning("a send that was never made still counts against its limits: %s", exc)

    def _allowed(self, config: Config, send: SendRequest) -> None:
        allow = config.limits.allow
        if not allow:
            return
        refused = [n for n in send.numbers if n.region not in allow]
        if refused:
            self._observer.on_limited(ALLOW_RULE)
            raise Problem(
                422, f"messages may not go to {', '.join(sorted({n.region for n in refused}))}"
                f" (countries.allow: {', '.join(allow)})", slug="country-not-allowed",
                errors=[{"field": "to", "to": mask(n.e164),
                         "message": f"{n.region} is not in countries.allow"} for n in refused])

    def _refusal(self, config: Config, exceeded: Sequence[LimitExceeded],
                 buckets: dict[str, _Bucket], message_id: str) -> Problem:
        rules = {r.name: r for r in config.limits.rules}
        errors: list[dict[str, Any]] = []
        for broken in exceeded:
            rule = rules[broken.rule]
            wait = None if broken.retry_after is None else max(1, -int(-broken.retry_after // 1))
            for number in buckets[broken.bucket].numbers:
                errors.append({"field": "to", "to": mask(number), "limit": rule.name,
                               "message": f"{rule.describe()} per {rule.per}",
                               "retry_after": wait})
            self._observer.on_limited(rule.name)
        log.info("send %s refused by limits: %s", message_id,
                 "; ".join(f"{e['limit']} {e['to']}" for e in errors))
        first = errors[0]
        detail = f"limit {first['limit']} reached for {first['to']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more; see 'errors')"
        waits = [e["retry_after"] for e in errors]
        retry = None if None in waits else float(max(waits))
        return Problem(429, detail, slug="limit-exceeded", retry_after=retry, id=message_id,
                       errors=errors)

    async def clear(self, store: Store, config: Config, raw: str) -> dict[str, Any]:
        """Forget one number's counts (every template's); Problem 422 for a bad number."""
        try:
            number = normalize(raw, config.region).e164
        except ValueError as exc:
            raise Problem(422, f"'number': {exc}", slug="unprocessable",
                          errors=[{"field": "number", "message": str(exc)}]) from None
        families = {f"number|{t}|" for t in (*config.templates, "")}
        families |= {r.family for r in config.limits.rules if r.per == "number"}
        try:
            cleared = await store.limits.clear(sorted(f + number for f in families))
        except StoreError:
            raise unavailable() from None
        log.info("limits: the counts of %s were cleared (%d hits)", mask(number), cleared)
        return {"number": mask(number), "cleared": cleared}

    async def status(self, store: Store, config: Config) -> dict[str, Any]:
        """The rules with their top consumers (masked) and refusals in the last hour."""
        limits = config.limits
        rules: list[dict[str, Any]] = [
            {"name": r.name, "per": r.per, "template": r.template, "digits": r.digits,
             "max": r.max, "window": window_text(r.window), "window_s": r.window,
             "top": [], "refused_last_hour": 0} for r in limits.rules]
        doc: dict[str, Any] = {
            "rules": rules, "countries_allowed": list(limits.allow) or None,
            "trusted_numbers": [_shown(t[1:], "prefix") for t in config.server.trusted_numbers],
            "refused_last_hour": 0, "error": None}
        try:
            refused = await store.limits.refusals(3600.0)
            for row, rule in zip(rules, limits.rules, strict=True):
                row["refused_last_hour"] = refused.get(rule.name, 0)
                row["top"] = [{"key": _shown(c.key, rule.per), "count": c.count}
                              for c in await store.limits.top(rule.family, rule.window, TOP)]
        except StoreError as exc:
            doc["error"] = f"the store is unavailable: {exc}"
            return doc
        doc["refused_last_hour"] = sum(refused.values())
        return doc


def _buckets(config: Config, send: SendRequest, caller: str) -> dict[str, _Bucket]:
    """Bucket -> the numbers of ``send`` in it and the rules counting it."""
    trusted = config.server.trusted_numbers
    out: dict[str, _Bucket] = {}
    for rule in config.limits.rules:
        if not rule.applies(send.template.name):
            continue
        for number in send.numbers:
            if rule.per in ("number", "prefix") and number.e164.startswith(trusted):
                continue
            bucket = out.setdefault(rule.family + _key(rule, number.e164, number.region, caller),
                                    _Bucket())
            if not bucket.rules or bucket.rules[-1] is not rule:
                bucket.rules.append(rule)
            if number.e164 not in bucket.numbers:
                bucket.numbers.append(number.e164)
    return out


def _key(rule: LimitRule, e164: str, region: str, caller: str) -> str:
    if rule.per == "number":
        return e164
    if rule.per == "prefix":
        return e164[1:1 + (rule.digits or 0)]
    return region if rule.per == "country" else caller


def _shown(key: str, per: str) -> str:
    """A consumer as /status shows it: a number masked, a prefix cut to SHOWN_DIGITS digits."""
    if per == "number":
        return mask(key)
    if per == "prefix":
        return "+" + key[:SHOWN_DIGITS] + "*" * max(0, len(key) - SHOWN_DIGITS)
    return key


async def _keep(store: Store, config: Config, send: SendRequest, message_id: str, caller: str,
                key: str | None, error: str) -> None:
    """The refused request's record, ``rate_limited`` (its caller is told its id)."""
    try:
        await store.records.create(NewMessage(
            message_id, caller, send.template.name, tuple(n.e164 for n in send.numbers),
            dict(send.params), idempotency_key=key))
        await store.records.finish(message_id, "rate_limited", error=error,
                                   keep_params=config.storage.keep_params)
    except StoreError as exc:  # refused all the same: nothing was sent
        log.error("send %s: its rate_limited record could not be kept: %s", message_id, exc)
