"""The code's shape: names that mean one thing each."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import fields

import gateway
import providers
from conftest import Harness

MUTABLE = (dict, list, set, bytearray)


def test_no_two_classes_share_a_name() -> None:
    """Two unrelated classes under one name (a problem+json ``Problem`` and a config one) make
    every import a guess; each public class name in gateway and providers is defined once."""
    defined: dict[str, list[str]] = defaultdict(list)
    for package in (gateway, providers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue  # running it is what importing it does
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                public = not name.startswith("_")  # a private class stays in its module
                if public and inspect.isclass(value) and value.__module__ == info.name:
                    defined[name].append(info.name)
    assert {n: m for n, m in defined.items() if len(m) > 1} == {}


async def test_a_config_snapshot_is_immutable_all_the_way_down(gw: Harness) -> None:
    """In-flight sends share the snapshot they began with: frozen must mean nothing in it moves,
    sending included (no cache filled in on first use)."""
    snapshot = gw.gateway.runtime.snapshot
    assert (await gw.send()).status == 200
    assert (await gw.send(template="notice", params={"name": "A", "time": "B"})).status == 200
    for field in fields(snapshot):
        value = getattr(snapshot, field.name)
        assert not isinstance(value, MUTABLE), field.name
        if isinstance(value, Mapping):
            for usable, groups in value.values():
                assert not isinstance(usable, MUTABLE) and isinstance(groups, tuple)
    assert gw.gateway.runtime.snapshot is snapshot
