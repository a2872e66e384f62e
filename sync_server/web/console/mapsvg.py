"""The board's offline map: ticket points projected (Web Mercator) into an SVG drawn on the server, one path per status.

Cities' locked-down networks reach no tile server, so points need nothing but their coordinates; a deployment that
has one sets `map_tile_url` and gets tiles under the same projection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

WIDTH = 480
MIN_H, MAX_H = 260, 560
PAD = 10


@dataclass
class MapView:
    """What the template draws: size, one path per status, tiles, and counts for the legend (the text alternative)."""

    width: int
    height: int
    paths: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tiles: list[tuple[str, float, float, float]] = field(default_factory=list)  # (url, x, y, size)


def _merc(lat: float, lon: float) -> tuple[float, float]:
    """Longitude/latitude to Web Mercator in 0..1 (y grows southwards, as on screen)."""
    lat = max(min(lat, 85.0), -85.0)
    s = math.sin(math.radians(lat))
    return (lon + 180.0) / 360.0, 0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)


def build(points: Iterable[tuple[float, float, str]], tile_url: str | None = None) -> MapView:
    """Project (lat, lon, status) points to fit the map box; segments `M x y h0` with round caps draw as dots (compact)."""
    pts = [(_merc(lat, lon), status) for lat, lon, status in points]
    if not pts:
        return MapView(WIDTH, MIN_H)
    xs = [p[0][0] for p in pts]
    ys = [p[0][1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span = max(x1 - x0, y1 - y0, 1e-6)
    scale = (WIDTH - 2 * PAD) / max(x1 - x0, span * 0.5)
    height = int(min(max((y1 - y0) * scale + 2 * PAD, MIN_H), MAX_H))
    scale = min(scale, (height - 2 * PAD) / max(y1 - y0, 1e-9))
    ox = (WIDTH - (x1 - x0) * scale) / 2 - x0 * scale
    oy = (height - (y1 - y0) * scale) / 2 - y0 * scale
    view = MapView(WIDTH, height)
    parts: dict[str, list[str]] = {}
    for (x, y), status in pts:
        parts.setdefault(status, []).append(f"M{x * scale + ox:.1f} {y * scale + oy:.1f}h0")
        view.counts[status] = view.counts.get(status, 0) + 1
    view.paths = {s: "".join(p) for s, p in sorted(parts.items())}
    if tile_url:
        view.tiles = _tiles(tile_url, scale, ox, oy, height)
    return view


def _tiles(url: str, scale: float, ox: float, oy: float, height: int) -> list[tuple[str, float, float, float]]:
    """The 256-px tiles covering the view at the zoom closest to the drawing scale."""
    z = max(0, min(19, round(math.log2(scale / 256))))
    n = 2 ** z
    size = scale / n
    out = []
    tx0, tx1 = math.floor((-ox / scale) * n), math.floor(((WIDTH - ox) / scale) * n)
    ty0, ty1 = math.floor((-oy / scale) * n), math.floor(((height - oy) / scale) * n)
    for tx in range(max(tx0, 0), min(tx1, n - 1) + 1):
        for ty in range(max(ty0, 0), min(ty1, n - 1) + 1):
            href = url.replace("{z}", str(z)).replace("{x}", str(tx)).replace("{y}", str(ty))
            out.append((href, tx * size + ox, ty * size + oy, size))
    return out[:64]
