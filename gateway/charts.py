"""Small time-series charts for the dashboard, drawn on the server as inline SVG.

No charting library and no script: each chart is a ``<svg>`` of polylines, so it shows with
JavaScript off and is simply re-rendered with the live section when the page refreshes itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from gateway.service import Gateway

WIDTH, HEIGHT, PAD = 180, 40, 3
# (series key, caption, kind: how the latest value is written, fixed top of the scale)
CHARTS: tuple[tuple[str, str, str, float | None], ...] = (
    ("sends", "sends / min", "count", None),
    ("failures", "failures / min", "count", None),
    ("ratio", "delivery ratio", "ratio", 1.0),
    ("p95_ms", "p95 latency", "ms", None),
)


def _shown(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value * 100:.0f}%"
    if kind == "ms":
        return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"
    return f"{value:.0f}"


def chart(values: Sequence[float | None], caption: str, kind: str = "count",
          top: float | None = None) -> Markup:
    """One chart: a polyline per run of minutes with data (a minute without is a gap)."""
    known = [v for v in values if v is not None]
    ceiling = top or max(known, default=0.0) or 1.0
    step = (WIDTH - 2 * PAD) / max(1, len(values) - 1)
    runs: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            runs.append([])
            continue
        y = HEIGHT - PAD - min(value, ceiling) / ceiling * (HEIGHT - 2 * PAD)
        runs[-1].append(f"{PAD + i * step:.1f},{y:.1f}")
    shapes = Markup("").join(
        Markup('<polyline points="{}"/>').format(" ".join(run)) if len(run) > 1
        else Markup('<circle cx="{}" cy="{}" r="1.5"/>').format(*run[0].split(","))
        for run in runs if run)
    latest = next((v for v in reversed(values) if v is not None), None)
    label = (f"{caption}, last hour: latest {_shown(latest, kind)}, "
             f"peak {_shown(max(known), kind)}") if known else f"{caption}, last hour: no data"
    return Markup(
        '<svg class="chart chart-{kind}" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
        'role="img" aria-label="{label}"><title>{label}</title>'
        '<line class="base" x1="0" y1="{base}" x2="{w}" y2="{base}"/>{shapes}</svg>',
    ).format(kind=kind, w=WIDTH, h=HEIGHT, label=label, base=HEIGHT - PAD, shapes=shapes)


def panels(gateway: Gateway) -> list[dict[str, Any]]:
    """Per provider in route order: the last hour's delivery figures and its four charts."""
    timeline = gateway.observer.timeline
    out = []
    for member in gateway.runtime.snapshot.members:
        series = timeline.series(member.name)
        out.append({
            "name": member.name,
            "delivery": timeline.delivery(member.name),
            "charts": [{"caption": caption, "svg": chart(series[key], caption, kind, top),
                        "latest": _shown(next((v for v in reversed(series[key])
                                               if v is not None), None), kind)}
                       for key, caption, kind, top in CHARTS],
        })
    return out
