"""What one kept Idempotency-Key answer costs in resident memory: ``python -m bench.entrycost``.

The soak (bench/soak.py) allows the gateway's RSS to grow by what its bounded stores explain;
for the idempotency store that is the answers it keeps times this measured cost, not a guess.
A fresh process fills the gateway's own :class:`IdempotencyStore` the way the send handler does
(scoped key, body and request fingerprints, the JSON of a 200 answer with a failover: two
attempts, the largest answer the soak keeps) and reports RSS growth per entry in KiB.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

from bench.procs import memory_kb
from gateway.records import IdempotencyStore

ROOT = Path(__file__).resolve().parent.parent
WARM = 2_000  # first entries: the dict and the allocator's first arenas, not per-entry cost
ENTRIES = 40_000


def fill(store: IdempotencyStore, count: int, caller: str) -> None:
    """``count`` finished sends, stored as the send handler stores them."""
    for _ in range(count):
        to = [f"+86138{random.randrange(10**8):08d}"]
        body = {"to": to, "template": "verify_code",
                "params": {"code": f"{random.randrange(10**6):06d}"}}
        raw = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        fingerprint = hashlib.sha256(json.dumps([to, "verify_code", body["params"]],
                                                sort_keys=True).encode()).hexdigest()
        key = f"{caller}\0{uuid.uuid4().hex}"
        store.begin(key, fingerprint, raw)
        store.finish(key, 200, {
            "id": uuid.uuid4().hex, "status": "sent", "provider": "huawei",
            "provider_message_id": uuid.uuid4().hex, "to": to, "message": "send",
            "attempts": [
                {"provider": "aliyun", "outcome": "unknown", "error": "timed out after 1.0 s",
                 "duration_ms": 1000.3},
                {"provider": "huawei", "outcome": "accepted", "error": None, "duration_ms": 3.1},
            ]})


def measure() -> float:
    """KiB of RSS per kept answer, in this process."""
    store = IdempotencyStore()
    caller = hashlib.sha256(b"an api key").hexdigest()[:16]
    fill(store, WARM, caller)
    gc.collect()
    before = memory_kb(os.getpid())["VmRSS"]
    fill(store, ENTRIES, caller)
    gc.collect()
    return (memory_kb(os.getpid())["VmRSS"] - before) / ENTRIES


def kept_answer_kib() -> float:
    """The measurement, taken in a fresh child process (this one's heap is not a clean slate)."""
    done = subprocess.run([sys.executable, "-m", "bench.entrycost"], capture_output=True,
                          text=True, check=True, timeout=120, cwd=ROOT)
    return float(done.stdout.split()[0])


if __name__ == "__main__":
    print(f"{measure():.3f} KiB of RSS per kept Idempotency-Key answer")
