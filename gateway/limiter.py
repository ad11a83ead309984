"""Applying the limits (SPEC §10) to a send before any provider is called.

:meth:`Limiter.admit` turns a valid request into the buckets it falls in (one per rule family
and number, prefix, country or caller), has the store count it in all of them or in none, and
refuses it otherwise: 422 for a destination outside ``countries.allow``, 429 naming every broken
rule and masked number with ``Retry-After``, the record kept as ``rate_limited``. A limit that
cannot be checked is a 503, never skipped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.limits import LimitRule, LimitsConfig, window_text
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
STATUS_FOR = 5.0  # seconds the top consumers are reused (the dashboard asks every 3 s)


@dataclass(frozen=True, slots=True)
class _Family:
    """Rules that count in the same buckets (same per, digits and template), as the store
    checks them."""

    name: str  # the buckets' common start
    per: str
    digits: int
    windows: tuple[LimitWindow, ...]


Buckets = dict[str, list[str]]  # bucket -> the request's numbers counted in it


class Limiter:
    """The gateway's limits; the counts live in the store, so every process shares them."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer
        # template -> its rule families, for the rules of ``_rules`` (worked out once per
        # template and config load: a send only looks them up)
        self._rules: LimitsConfig | None = None
        self._families: dict[str, tuple[_Family, ...]] = {}
        # the last /status answer: (when, for which rules and trusted numbers, what)
        self._status: tuple[float, Config, dict[str, Any]] | None = None

    async def admit(self, store: Store, config: Config, send: SendRequest, message_id: str,
                    caller: str, key: str | None = None) -> LimitVerdict | None:
        """Count ``send`` against every rule, or raise the Problem that refuses it (422, 429,
        503); the verdict (its hits, for :meth:`refund`), or None when no rule applies."""
        self._allowed(config, send)
        checks, buckets = _checks(self._for(config.limits, send.template.name), send, caller,
                                  config.server.trusted_numbers)
        if not checks:
            return None
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

    def _for(self, limits: LimitsConfig, template: str) -> tuple[_Family, ...]:
        if limits is not self._rules:
            self._rules, self._families = limits, {}
        found = self._families.get(template)
        if found is None:
            found = self._families[template] = _families(limits.rules, template)
        return found

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

    def _refusal(self, config: Config, exceeded: Sequence[LimitExceeded], buckets: Buckets,
                 message_id: str) -> Problem:
        rules = {r.name: r for r in config.limits.rules}
        errors: list[dict[str, Any]] = []
        for broken in exceeded:
            rule = rules[broken.rule]
            wait = None if broken.retry_after is None else max(1, math.ceil(broken.retry_after))
            for number in buckets[broken.bucket]:
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
        self._status = None
        return {"number": mask(number), "cleared": cleared}

    async def status(self, store: Store, config: Config) -> dict[str, Any]:
        """The rules with their top consumers (masked) and refusals in the last hour; reused
        for STATUS_FOR seconds (counting the top consumers reads every hit a family keeps)."""
        now = time.monotonic()
        if self._status is not None and self._status[1] is config \
                and now - self._status[0] < STATUS_FOR:
            return self._status[2]
        doc = await self._read_status(store, config)
        if doc["error"] is None:
            self._status = (now, config, doc)
        return doc

    async def _read_status(self, store: Store, config: Config) -> dict[str, Any]:
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


def _families(rules: Sequence[LimitRule], template: str) -> tuple[_Family, ...]:
    """The rules that apply to ``template``, grouped by the buckets they count in."""
    grouped: dict[str, list[LimitRule]] = {}
    for rule in rules:
        if rule.applies(template):
            grouped.setdefault(rule.family, []).append(rule)
    return tuple(_Family(name, group[0].per, group[0].digits or 0,
                         tuple(LimitWindow(r.name, r.max, r.window) for r in group))
                 for name, group in grouped.items())


def _checks(families: Sequence[_Family], send: SendRequest, caller: str,
            trusted: tuple[str, ...]) -> tuple[list[LimitCheck], Buckets]:
    """What the store checks for ``send``, and which numbers are in each bucket."""
    buckets: Buckets = {}
    checks = []
    for family in families:
        mine: Buckets = {}
        for number in send.numbers:
            e164 = number.e164
            if family.per == "number" or family.per == "prefix":
                if trusted and e164.startswith(trusted):
                    continue
                key = e164 if family.per == "number" else e164[1:1 + family.digits]
            else:
                key = number.region if family.per == "country" else caller
            mine.setdefault(family.name + key, []).append(e164)
        for bucket, numbers in mine.items():
            checks.append(LimitCheck(bucket, len(numbers), family.windows))
        buckets.update(mine)
    return checks, buckets


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
