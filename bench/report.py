"""Figures as ratios to a baseline from the same run: the table, and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figure:
    """One line of the table: a measurement, its same-run baseline, the ratio, the target."""

    case: str
    what: str
    value: str
    baseline: str
    ratio: str
    target: str = ""
    met: bool | None = None  # None: reported, no target


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((ln.split(":", 1)[1].strip() for ln in info
                          if ln.startswith("model name")), model)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "kernel": platform.release()}


def table(figures: list[Figure]) -> str:
    """A plain-text table (also valid Markdown)."""
    head = ("case", "what", "measured", "baseline (same run)", "ratio", "target", "met")
    rows = [head] + [(f.case, f.what, f.value, f.baseline, f.ratio, f.target,
                      {True: "yes", False: "NO", None: "-"}[f.met]) for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write(figures: list[Figure], runs: dict[str, Any], settings: dict[str, Any],
          elapsed: float, path: Path | None = None) -> Path:
    """Write the JSON results; returns the path."""
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "settings": settings,
        "elapsed_s": round(elapsed, 1),
        "figures": [asdict(f) for f in figures],
        "runs": runs,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
