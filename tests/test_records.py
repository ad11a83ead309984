"""The in-memory stores behind GET /sms/{id} and Idempotency-Key: bounded, and never unsafe."""

from __future__ import annotations

import pytest

from conftest import FakeClock
from gateway.records import IdempotencyConflict, IdempotencyStore


def test_a_finished_answer_is_replayed_as_it_was() -> None:
    store = IdempotencyStore()
    body = {"id": "m1", "to": ["+8613800138000"], "attempts": [{"error": "系统错误"}]}
    assert store.begin("k", "fp") is None
    store.finish("k", 200, body)
    assert store.begin("k", "fp") == (200, body)


def test_capacity_evicts_the_oldest_finished_never_one_in_flight() -> None:
    store = IdempotencyStore(capacity=3)
    assert store.begin("in-flight", "fp") is None  # the oldest, still sending
    for key in ("a", "b"):
        assert store.begin(key, "fp") is None
        store.finish(key, 200, {"id": key})
    assert store.begin("c", "fp") is None  # full: "a" goes, not the one in flight
    assert "a" not in store and "b" in store and "in-flight" in store
    with pytest.raises(IdempotencyConflict, match="still in flight"):
        store.begin("in-flight", "fp")


def test_keys_expire_after_the_ttl() -> None:
    clock = FakeClock(0.0)
    store = IdempotencyStore(ttl=60, clock=clock)
    store.begin("k", "fp")
    store.finish("k", 200, {"id": "m1"})
    clock.now = 59
    assert "k" in store
    clock.now = 61
    assert "k" not in store
    assert store.begin("k", "other") is None  # a new send may use it again
