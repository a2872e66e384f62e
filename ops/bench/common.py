"""Pieces every benchmark script shares: waiting for a spawned server, printing and saving the figures."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp


async def wait_ready(http: aiohttp.ClientSession, url: str, tries: int = 300) -> None:
    """Poll /readyz every 0.1 s until the spawned server answers 200 (bounded)."""
    for _ in range(tries):
        try:
            async with http.get(url + "/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


def emit(out: dict[str, Any], json_path: Path | None) -> int:
    """Figures as indented JSON on stdout, and into a file when asked."""
    text = json.dumps(out, indent=2)
    sys.stdout.write(text + "\n")
    if json_path:
        json_path.write_text(text)
    return 0
