"""Crew app start-up on a throttled phone profile: time to interactive online (first visit) and offline (service
worker), plus the bytes the first visit transfers. Spawns `fieldsync serve` (demo city) in a temp dir, drives Debian's
Chromium headless through Playwright, and stops everything afterwards.

    python ops/bench/bench_app.py [--runs 3] [--cpu 4] [--latency-ms 150] [--down-kbps 1600] [--up-kbps 750]

"Interactive" = the crew's ticket list is rendered with its links live (the app renders it only after the library
opened IndexedDB and read the replica; on a first visit after the first snapshot pull). Defaults approximate
Lighthouse's "Slow 4G, 4x CPU slowdown" mobile profile.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from playwright.async_api import async_playwright  # noqa: E402

from clients.sim.spawn import SpawnedServer  # noqa: E402
from ops.bench.common import emit  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


async def one_run(pw: Any, url: str, token: str, args: argparse.Namespace) -> dict[str, float]:
    """A fresh phone: first visit online, then a reload with the network off."""
    browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
    try:
        ctx = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = await ctx.new_page()
        cdp = await ctx.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": args.latency_ms,
            "downloadThroughput": args.down_kbps * 1000 / 8, "uploadThroughput": args.up_kbps * 1000 / 8})
        await cdp.send("Emulation.setCPUThrottlingRate", {"rate": args.cpu})
        await page.goto(f"{url}/app/#enrol={token}", wait_until="commit")
        await page.wait_for_selector("a.ticket", timeout=120_000)
        online_ms = await page.evaluate("() => performance.now()")
        transferred = await page.evaluate(
            "() => performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))"
            ".filter((e) => new URL(e.name).pathname.startsWith('/app/')).reduce((a, e) => a + (e.transferSize || 0), 0)")
        for _ in range(200):  # the service worker must control the page before an offline start can work
            if await page.evaluate("() => navigator.serviceWorker.controller !== null"):
                break
            await asyncio.sleep(0.1)
        await ctx.set_offline(True)
        await page.reload(wait_until="commit")
        await page.wait_for_selector("a.ticket", timeout=120_000)
        offline_ms = await page.evaluate("() => performance.now()")
        tickets = await page.locator("a.ticket").count()
        return {"online_tti_ms": online_ms, "offline_tti_ms": offline_ms, "app_bytes": transferred, "tickets": tickets}
    finally:
        await browser.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu", type=float, default=4.0, help="CPU slowdown factor")
    ap.add_argument("--latency-ms", type=float, default=150.0)
    ap.add_argument("--down-kbps", type=float, default=1600.0)
    ap.add_argument("--up-kbps", type=float, default=750.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with SpawnedServer() as srv:
        url = srv.credentials["server"].rstrip("/")
        token = srv.credentials["devices"][0]["token"]
        async with async_playwright() as pw:
            runs = [await one_run(pw, url, token, args) for _ in range(args.runs)]
    out = {
        "profile": {"cpu_slowdown": args.cpu, "latency_ms": args.latency_ms, "down_kbps": args.down_kbps, "up_kbps": args.up_kbps},
        "runs": runs,
        "online_tti_ms_median": statistics.median(r["online_tti_ms"] for r in runs),
        "offline_tti_ms_median": statistics.median(r["offline_tti_ms"] for r in runs),
        "app_bytes_first_visit": runs[0]["app_bytes"],
        "tickets_in_scope": runs[0]["tickets"],
    }
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
